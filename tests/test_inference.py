"""Batched inference: left padding, batch == one-by-one greedy, parsing, resumable prediction
files, the OpenAI-compatible backend (against a fake loopback server) and the CLI."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from morelib import toy
from morelib.data import load_split
from morelib.inference import (
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
from morelib.tiny import TinySettings, build_tiny_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=2, train=30, valid=10, test=20))
    model_dir = build_tiny_model(root / "model", data_dir, seed=0,
                                 settings=TinySettings(hidden_size=64, intermediate_size=128, vocab_size=1024))
    model, processor = load_model(model_dir, device="cpu")
    return data_dir, model_dir, TransformersBackend(model.eval(), processor)


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


def test_a_broken_line_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2"):
        read_predictions(path, repair_tail=True)


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with a canned completion and keeps each request."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        reply = {
            "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "<think> Step 1: x </think> <answer>none</answer>"}}],
            "usage": {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333},
        }
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
    FakeOpenAI.requests = []
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


def test_cli_predicts_the_listed_ids(world, tmp_path, capsys):
    data_dir, model_dir, _ = world
    ids = [s.id for s in load_split(data_dir, "test")[:3]]
    (tmp_path / "ids.json").write_text(json.dumps({"stage2_pool": ids}))
    out = tmp_path / "pred.jsonl"
    args = ["--model", str(model_dir), "--data", str(data_dir), "--split", "test", "--out", str(out),
            "--ids-file", str(tmp_path / "ids.json"), "--ids-key", "stage2_pool",
            "--batch-size", "2", "--max-new-tokens", "4", "--device", "cpu"]
    assert main(args) == 0
    assert [r["id"] for r in read_predictions(out)] == ids
    assert "3 predictions" in capsys.readouterr().out
