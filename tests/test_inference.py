"""Batched inference: left padding, batch == one-by-one greedy, parsing, resumable prediction
files, the same decoding on every backend (none reads the model's generation config), the vLLM
engine's arguments and its child process (with a fake ``vllm`` module), the OpenAI-compatible
backend (against a fake loopback server) and the command line."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from morelib.data import load_split
from morelib.inference import (
    FailedRequests,
    Generation,
    GenerationSettings,
    OpenAIBackend,
    TransformersBackend,
    generate,
    main,
    predict_to_file,
    read_predictions,
)
from morelib.model import load_model


@pytest.fixture(scope="module")
def world(toy_world):
    """The session's toy data and tiny model (conftest.toy_world), and a backend holding the model."""
    model, processor = load_model(toy_world.model_dir, device="cpu")
    return toy_world.data_dir, toy_world.model_dir, TransformersBackend(model.eval(), processor)


@pytest.fixture(scope="module")
def samples(world):
    test = load_split(world[0], "test")
    # Different headline lengths, so the batch really is padded.
    return sorted(test, key=lambda s: len(s.text))[:: max(1, len(test) // 6)][:6]


class Canned:
    """A backend that returns fixed texts and records what it was asked."""

    def __init__(self, texts):
        self.texts, self.calls = texts, []

    def generate(self, batch, settings, template=None):
        self.calls.append([s.id for s in batch])
        return [Generation(self.texts[s.id], prompt_tokens=10, completion_tokens=3) for s in batch]


def test_batch_is_left_padded(world, samples):
    inputs = world[2].encode(samples)
    mask = inputs["attention_mask"]
    assert mask.sum(dim=1).min() < mask.shape[1], "the samples should differ in length"
    assert bool(mask[:, -1].all()), "every prompt must end in the last column"
    assert not bool(mask[:, 0].all())


def test_batched_greedy_equals_one_by_one(world, samples):
    backend = world[2]
    settings = GenerationSettings(max_new_tokens=12, batch_size=len(samples))
    batched = generate(backend, samples, settings)
    single = generate(backend, samples, GenerationSettings(max_new_tokens=12, batch_size=1))
    assert [p.text for p in batched] == [p.text for p in single]
    assert [p.prompt_tokens for p in batched] == [p.prompt_tokens for p in single]
    assert [p.completion_tokens for p in batched] == [p.completion_tokens for p in single]
    assert len({p.prompt_tokens for p in batched}) > 1


def test_sampling_follows_the_seed(world, samples):
    backend = world[2]
    hot = GenerationSettings(max_new_tokens=12, temperature=1.5, seed=3)
    first, again = generate(backend, samples[:2], hot), generate(backend, samples[:2], hot)
    assert [p.text for p in first] == [p.text for p in again]
    greedy = generate(backend, samples[:2], GenerationSettings(max_new_tokens=12))
    assert [p.text for p in first] != [p.text for p in greedy]


def test_labels_are_parsed_and_unparsable_is_none(samples):
    texts = {samples[0].id: "<think> Step 1: a </think> <answer>/per/org/member_of</answer>",
             samples[1].id: "no answer here",
             samples[2].id: "<answer>none</answer><answer>none</answer>"}
    predictions = generate(Canned(texts), samples[:3])
    assert [p.label for p in predictions] == ["/per/org/member_of", None, None]
    assert [p.gold for p in predictions] == [s.label for s in samples[:3]]


def test_predict_to_file_resumes_without_duplicates(world, samples, tmp_path):
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    full = predict_to_file(world[2], samples, tmp_path / "full.jsonl", settings, progress=False)
    assert [r["id"] for r in full] == [s.id for s in samples]
    assert set(full[0]) == {"id", "gold", "text", "label", "prompt_tokens", "completion_tokens"}

    # A run killed mid-way: two rows written, the third torn in the middle of its line.
    partial = tmp_path / "partial.jsonl"
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    partial.write_text(lines[0] + lines[1] + lines[2][:20])
    counting = Canned({s.id: r["text"] for s, r in zip(samples, full)})
    resumed = predict_to_file(counting, samples, partial, settings, progress=False)
    assert [i for call in counting.calls for i in call] == [s.id for s in samples[2:]]
    ids = [r["id"] for r in read_predictions(partial)]
    assert ids == [s.id for s in samples] and len(ids) == len(set(ids))
    assert [r["text"] for r in resumed] == [r["text"] for r in full]

    # Nothing left to do: the backend is not called again.
    counting.calls.clear()
    predict_to_file(counting, samples, partial, settings, progress=False)
    assert counting.calls == []


def test_progress_is_a_few_lines_not_one_per_batch(samples, tmp_path, capsys):
    from dataclasses import replace

    many = [replace(s, id=f"{s.id}-{copy}") for copy in range(4) for s in samples]  # 24 one-fact batches
    texts = {s.id: "<answer>none</answer>" for s in many}
    predict_to_file(Canned(texts), many, tmp_path / "p.jsonl", GenerationSettings(batch_size=1))
    lines = capsys.readouterr().out.splitlines()
    assert 2 <= len(lines) <= 6, lines  # the header and about four counters
    assert lines[-1].strip() == f"{len(many)}/{len(many)}"


def test_a_broken_line_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2"):
        read_predictions(path)
    path.write_text('{"id": "a"}\n{"gold": "none"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: field 'id': missing"):
        read_predictions(path)


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with a canned completion and keeps each request."""

    requests: list = []
    faults: list = []  # one per request, in order: "null" (content null), "empty" (no choices), "ok"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        fault = FakeOpenAI.faults.pop(0) if FakeOpenAI.faults else "ok"
        reply = {
            "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "<think> Step 1: x </think> <answer>none</answer>"}}],
            "usage": {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333},
        }
        if fault == "null":
            reply["choices"][0]["message"]["content"] = None
        elif fault == "empty":
            reply["choices"] = []
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    FakeOpenAI.requests, FakeOpenAI.faults = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_backend_sends_two_images_and_reads_usage(fake_server, samples, monkeypatch):
    monkeypatch.setenv("TEST_SERVER_KEY", "secret-from-env")
    backend = OpenAIBackend(fake_server, "stage1", api_key_env="TEST_SERVER_KEY")
    predictions = generate(backend, samples[:3], GenerationSettings(max_new_tokens=64, batch_size=2))
    assert [p.label for p in predictions] == ["none"] * 3
    assert all(p.prompt_tokens == 321 and p.completion_tokens == 12 for p in predictions)

    assert len(FakeOpenAI.requests) == 3
    request = FakeOpenAI.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret-from-env"
    body = request["body"]
    assert body["model"] == "stage1" and body["temperature"] == 0 and body["max_tokens"] == 64
    content = body["messages"][0]["content"]
    images = [part for part in content if part["type"] == "image_url"]
    assert len(images) == 2
    for part in images:
        header, payload = part["image_url"]["url"].split(",", 1)
        assert header == "data:image/png;base64" and base64.b64decode(payload).startswith(b"\x89PNG")
    texts = {part["text"] for part in content if part["type"] == "text"}
    assert any(sample_text in t for t in texts for sample_text in [s.text for s in samples[:3]])


def test_an_empty_reply_is_retried_and_never_becomes_a_prediction(fake_server, samples, tmp_path):
    out = tmp_path / "p.jsonl"
    settings = GenerationSettings(max_new_tokens=64, batch_size=1, max_retries=2)
    # The first sample: two empty replies, then text. The second: empty every time (3 attempts).
    FakeOpenAI.faults = ["null", "empty", "ok", "null", "empty", "null"]
    with pytest.raises(FailedRequests, match=r"p\.jsonl: 1 of 1 requests failed .*sample .*no text.*run again"):
        predict_to_file(OpenAIBackend(fake_server, "stage1"), samples[:3], out, settings, progress=False)
    rows = read_predictions(out)
    assert [r["id"] for r in rows] == [samples[0].id] and rows[0]["label"] == "none"  # kept; the failure is not
    assert len(FakeOpenAI.requests) == 6
    rows = predict_to_file(OpenAIBackend(fake_server, "stage1"), samples[:3], out, settings, progress=False)
    assert [r["id"] for r in rows] == [s.id for s in samples[:3]] and all(r["text"] for r in rows)
    assert len(read_predictions(out)) == 3 and len(FakeOpenAI.requests) == 8  # the failed sample is asked again


def test_cli_predicts_the_listed_ids(world, tmp_path, capsys):
    data_dir, model_dir, _ = world
    ids = [s.id for s in load_split(data_dir, "test")[:3]]
    (tmp_path / "ids.json").write_text(json.dumps({"stage2_pool": ids}))
    out = tmp_path / "pred.jsonl"
    args = ["predict", "--model", str(model_dir), "--data", str(data_dir), "--split", "test", "--out", str(out),
            "--ids-file", str(tmp_path / "ids.json"), "--ids-key", "stage2_pool",
            "--batch-size", "2", "--max-new-tokens", "4", "--device", "cpu"]
    assert main(args) == 0
    assert [r["id"] for r in read_predictions(out)] == ids
    assert "3 predictions" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the same decoding everywhere

SETTINGS = GenerationSettings(max_new_tokens=77, temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.05,
                              batch_size=3, seed=11)


def test_greedy_output_ignores_the_models_generation_config(world, samples):
    import copy

    backend = world[2]
    model, tokenizer = backend.model, backend.processor.tokenizer
    greedy = GenerationSettings(max_new_tokens=12, batch_size=len(samples))
    before = [p.text for p in generate(backend, samples, greedy)]
    own = copy.deepcopy(model.generation_config)
    try:
        # What a checkpoint's generation_config.json may hold (Qwen's release sets such defaults).
        model.generation_config.repetition_penalty = 1.5
        model.generation_config.no_repeat_ngram_size = 2
        first = backend.model.generate(**backend.encode(samples[:1]), max_new_tokens=1, do_sample=False)[0, -1]
        model.generation_config.suppress_tokens = [int(first)]
        after = [p.text for p in generate(backend, samples, greedy)]
        # The same settings through a plain generate() do inherit them: the output changes.
        inputs = backend.encode(samples)
        plain = model.generate(**inputs, max_new_tokens=12, do_sample=False)[:, inputs["input_ids"].shape[1]:]
        inherited = [tokenizer.decode(row, skip_special_tokens=True) for row in plain.tolist()]
    finally:
        model.generation_config = own
    assert after == before
    assert sum(a != b for a, b in zip(inherited, before)) >= len(samples) // 2


def test_every_backend_gets_every_decoding_field_with_the_same_values():
    from morelib.inference import hf_generation_config, openai_request_kwargs, vllm_sampling_kwargs

    hf = hf_generation_config(SETTINGS, eos_token_id=[5, 6], pad_token_id=0)
    vllm = vllm_sampling_kwargs(SETTINGS)
    api = openai_request_kwargs(SETTINGS)
    api_fields = {**api, **api["extra_body"]}
    expected = {"max_new_tokens": 77, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.05}
    assert {name: getattr(hf, name) for name in expected} == expected
    assert hf.do_sample is True and hf.num_beams == 1 and hf.eos_token_id == [5, 6]
    renamed = {"max_tokens" if name == "max_new_tokens" else name: value for name, value in expected.items()}
    assert {name: vllm[name] for name in renamed} == renamed and vllm["seed"] == 11
    assert {name: api_fields[name] for name in renamed} == renamed and api["seed"] == 11
    # Greedy: no sampling in transformers, temperature 0 (vLLM's greedy) elsewhere; the penalty stays.
    greedy = GenerationSettings(repetition_penalty=1.2)
    hf_greedy = hf_generation_config(greedy, eos_token_id=[5], pad_token_id=0)
    assert hf_greedy.do_sample is False and hf_greedy.repetition_penalty == 1.2
    assert vllm_sampling_kwargs(greedy)["temperature"] == 0 == openai_request_kwargs(greedy)["temperature"]


def test_openai_request_fields_reach_a_vllm_style_server_at_the_top_level(fake_server):
    from openai import OpenAI

    from morelib.inference import openai_request_kwargs

    client = OpenAI(base_url=fake_server, api_key="EMPTY", max_retries=0)
    client.chat.completions.create(model="stage1", messages=[{"role": "user", "content": "hi"}],
                                   **openai_request_kwargs(SETTINGS, max_pixels=12544))
    body = FakeOpenAI.requests[0]["body"]
    # vLLM's ChatCompletionRequest reads these as top-level fields.
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed",
                                 "mm_processor_kwargs")} == {
        "max_tokens": 77, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.05, "seed": 11,
        "mm_processor_kwargs": {"max_pixels": 12544}}


def test_pixel_limits_reach_the_transformers_processor(world, samples):
    from morelib.inference import make_backend

    default = generate(world[2], samples[:1], GenerationSettings(max_new_tokens=2))[0]
    capped = make_backend(world[1], "transformers", device="cpu", max_pixels=56 * 56, max_model_len=99)
    small = generate(capped, samples[:1], GenerationSettings(max_new_tokens=2))[0]
    # The 112x112 image drops from 4x4 merged tokens to 2x2 (the crop is small already).
    assert default.prompt_tokens - small.prompt_tokens == 16 - 4


def test_the_attention_kernel_setting_reaches_the_transformers_model(world):
    from morelib.inference import make_backend

    assert make_backend(world[1], "transformers", device="cpu").model.config._attn_implementation == "sdpa_gqa"  # auto, CPU
    eager = make_backend(world[1], "transformers", device="cpu", attn_implementation="eager")
    assert eager.model.config._attn_implementation == "eager"


# ----------------------------------------------------------------------------- vLLM (a fake module)

FAKE_VLLM = '''
"""A stand-in for vllm: records what the engine is given and answers every prompt with 'none'."""
import json
import os


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class _Completion:
    def __init__(self):
        self.text = "<think> Step 1: x </think> <answer>none</answer>"
        self.token_ids = [1, 2, 3]


class _Output:
    def __init__(self, n_prompt):
        self.prompt_token_ids = list(range(n_prompt))
        self.outputs = [_Completion()]


class LLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def generate(self, requests, params, use_tqdm=True):
        with open(os.environ["FAKE_VLLM_RECORD"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "llm": self.kwargs, "sampling": params.kwargs,
                                "images": [len(r["multi_modal_data"]["image"]) for r in requests],
                                "prompts": [r["prompt"] for r in requests]}) + "\\n")
        return [_Output(100 + i) for i, _ in enumerate(requests)]
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A fake ``vllm`` package, importable here and in child processes; returns its record file."""
    import importlib
    import sys

    package = tmp_path / "fakes" / "vllm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_VLLM)
    record = tmp_path / "vllm_calls.jsonl"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fakes"))
    monkeypatch.syspath_prepend(str(tmp_path / "fakes"))
    # The fake must not outlive its test: a later import of TRL would take it for an installed vllm.
    def vllm_modules():
        return [name for name in sys.modules if name == "vllm" or name.startswith("vllm.")]

    for name in vllm_modules():
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    importlib.invalidate_caches()
    yield record
    for name in vllm_modules():
        del sys.modules[name]


def read_calls(record):
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_vllm_engine_gets_image_limits_pixels_context_and_every_sampling_field(world, samples, fake_vllm):
    from morelib.inference import VLLMBackend, make_backend

    backend = make_backend(world[1], "vllm", in_subprocess=False, max_model_len=4096,
                           min_pixels=3136, max_pixels=12544, gpu_memory_utilization=0.3)
    assert isinstance(backend, VLLMBackend)
    predictions = generate(backend, samples[:3], SETTINGS)
    assert [p.label for p in predictions] == ["none"] * 3 and predictions[1].prompt_tokens == 101
    (call,) = read_calls(fake_vllm)
    assert call["llm"] == {"model": str(world[1]), "dtype": "auto", "seed": 0,
                           "limit_mm_per_prompt": {"image": 2, "video": 0},
                           "mm_processor_kwargs": {"min_pixels": 3136, "max_pixels": 12544},
                           "max_model_len": 4096, "gpu_memory_utilization": 0.3}
    assert call["sampling"] == {"n": 1, "max_tokens": 77, "temperature": 0.7, "top_p": 0.9, "top_k": 20,
                                "min_p": 0.0, "repetition_penalty": 1.05, "presence_penalty": 0.0,
                                "frequency_penalty": 0.0, "seed": 11}
    assert call["images"] == [2, 2, 2]
    # The prompt is the chat-templated student prompt the transformers backend encodes too.
    assert call["prompts"][0].count("<|image_pad|>") == 2 and call["prompts"][0].endswith("<|im_start|>assistant\n")


def test_vllm_runs_each_model_in_a_child_process(world, tmp_path, fake_vllm, capsys):
    """Evaluation with vLLM: one child process per model, so each engine's GPU memory is freed."""
    import os

    from morelib import evaluation
    from morelib.inference import SubprocessBackend, make_backend
    from morelib.layout import RunLayout

    data_dir, model_dir, _ = world
    assert isinstance(make_backend(model_dir, "vllm"), SubprocessBackend)
    layout = RunLayout(tmp_path / "run")
    for key in ("stage1", "grpo_progressive"):  # finished models: their files and done.json
        layout.checkpoint(key).mkdir(parents=True)
        for item in Path(model_dir).iterdir():
            (layout.checkpoint(key) / item.name).symlink_to(item)
        layout.model_done(key).write_text("{}")
    test = load_split(data_dir, "test")[:4]
    out = evaluation.evaluate_models(test, layout.root, str(tmp_path / "no-base"), keys=["zero_shot", "stage1", "grpo_progressive"],
                                     settings=GenerationSettings(backend="vllm", max_new_tokens=9, batch_size=4,
                                                                 vllm_max_model_len=2048, max_pixels=12544))
    assert list(out) == ["stage1", "grpo_progressive"]
    assert [r["id"] for r in out["stage1"]] == [s.id for s in test]
    calls = read_calls(fake_vllm)
    assert len(calls) == 2 and len({c["pid"] for c in calls}) == 2 and os.getpid() not in {c["pid"] for c in calls}
    assert [c["llm"]["model"] for c in calls] == [str(layout.checkpoint("stage1")), str(layout.checkpoint("grpo_progressive"))]
    assert all(c["llm"]["max_model_len"] == 2048 and c["llm"]["mm_processor_kwargs"] == {"max_pixels": 12544}
               and c["sampling"]["max_tokens"] == 9 for c in calls)
    assert "4 predictions in" in capsys.readouterr().out  # the child's output is shown here

    # Cached now: no child process is started again.
    evaluation.evaluate_models(test, layout.root, str(tmp_path / "no-base"), keys=["stage1"], backend="vllm")
    assert len(read_calls(fake_vllm)) == 2


def test_a_failing_child_process_is_one_error_naming_the_model(world, tmp_path, samples):
    from morelib.inference import make_backend, predict_to_file

    backend = make_backend(tmp_path / "no-model", "vllm")
    with pytest.raises(RuntimeError, match=r"vllm inference of .*no-model failed in its child process \(exit code 1\): "
                                           r"model path .*no-model: no such directory"):
        predict_to_file(backend, samples[:2], tmp_path / "p.jsonl", progress=False)


def test_the_child_reads_its_settings_and_request_from_one_file(world, tmp_path, samples, capsys):
    """The vLLM child gets what training children get: one JSON file (launch.write_settings), read back
    whole; a request with a missing field is a one-line error naming the file and the field."""
    import os

    from morelib.files import read_json, write_json
    from morelib.inference import make_backend
    from morelib.launch import read_request

    backend = make_backend(world[1], "vllm", max_model_len=2048, max_pixels=12544)
    path = backend.write_request(tmp_path / "request.json", samples[:2], tmp_path / "p.jsonl",
                                 GenerationSettings(max_new_tokens=9, temperature=0.5), template="T")
    settings, request = read_request(path)
    assert (settings.backend, settings.max_new_tokens, settings.temperature, settings.vllm_max_model_len,
            settings.max_pixels) == ("vllm", 9, 0.5, 2048, 12544)
    assert request["ids"] == [s.id for s in samples[:2]] and request["template"] == "T"
    assert request["out"] == str(tmp_path / "p.jsonl") and request["model"] == os.path.abspath(world[1])
    data = read_json(path)
    del data["request"]["ids"]
    write_json(path, data)
    assert main(["--settings", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {path}: field 'request.ids': missing"


# ----------------------------------------------------------------------------- command line


def test_cli_help_and_one_line_errors(world, tmp_path, capsys):
    data_dir, model_dir, _ = world
    for argv in (["--help"], ["predict", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--repetition_penalty", "--top_k", "--served_model_name", "--vllm_max_model_len", "--max_pixels"):
        assert option in help_text
    common = ["--data", str(data_dir), "--out", str(tmp_path / "p.jsonl")]
    assert main(["predict", "--model", "runs/x/nothing", *common]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model path runs/x/nothing: no such directory") and err.count("\n") == 1
    assert main(["predict", "--model", str(model_dir), "--data", str(tmp_path / "none"), "--out", "x.jsonl"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'none'}: no such data directory\n"
    (tmp_path / "ids.json").write_text('{"pool": []}')
    argv = ["predict", "--model", str(model_dir), *common, "--ids_file", str(tmp_path / "ids.json"), "--ids_key", "x"]
    assert main(argv) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'ids.json'}: field 'x': not found; keys are ['pool']\n"
    assert main(argv + ["--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err

