"""Pre-flight: token counts equal what the trainers build, the toy profile passes, a too-small
limit fails with counts and ids, and the over-long SFT policy drops or refuses by name."""

import json
import re
import shutil
from pathlib import Path

import pytest

from morelib.data import load_images, load_split
from morelib.layout import RunLayout
from morelib.model import load_processor
from morelib.overlong import OverlongRowsError, apply_overlong_policy, sft_row_lengths
from morelib.preflight import build_report, main, percentile, run
from morelib.token_counts import count_tokens
from morelib.prompts import assistant_turn, student_prompt
from morelib.vision_tokens import PixelLimits, processor_limits

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(toy_world):
    """A toy run directory as 00_prepare leaves it: the session's toy data and tiny model
    (conftest.toy_world), copied to the layout's paths."""
    root = toy_world.run_dir("preflight")
    layout = RunLayout(root)
    shutil.copytree(toy_world.data_dir, layout.toy_data)
    shutil.copytree(toy_world.model_dir, layout.toy_base_model)
    return root


def test_counts_equal_the_sft_collators_sequence_lengths(run_dir):
    """SFT: prompt (template, text, both images) + completion, exactly as TRL's vision collator builds the row."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    layout = RunLayout(run_dir)
    processor = load_processor(layout.toy_base_model)
    samples = load_split(layout.toy_data, "train")[:6]
    completions = {s.id: f"<think> Step 1: {s.text} </think> <answer>{s.label}</answer>" for s in samples}
    counts = count_tokens(samples, processor, processor_limits(processor), completions)
    collator = DataCollatorForVisionLanguageModeling(processor, max_length=None)
    examples = [{"prompt": student_prompt(s), "completion": assistant_turn(completions[s.id]),
                 "images": list(load_images(s))} for s in samples]
    batch = collator(examples)
    assert [c.total() for c in counts] == batch["attention_mask"].sum(dim=1).tolist()
    assert all(len(c.image_tokens) == 2 and c.completion_tokens > 5 for c in counts)


def test_prompt_counts_equal_the_grpo_tokenization(run_dir):
    """GRPO and inference: the prompt as TRL's GRPOTrainer tokenizes it (processor, images expanded)."""
    layout = RunLayout(run_dir)
    limits = PixelLimits(3136, 20 * 28 * 28)
    processor = load_processor(layout.toy_base_model, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels)
    samples = load_split(layout.toy_data, "test")[:5]
    counts = count_tokens(samples, processor, limits)
    for sample, count in zip(samples, counts):
        text = processor.apply_chat_template(student_prompt(sample), add_generation_prompt=True, tokenize=False)
        ids = processor(text=[text], images=list(load_images(sample)))["input_ids"][0]
        assert count.prompt_tokens == len(ids) and count.completion_tokens is None


def test_toy_profile_passes(run_dir, capsys):
    assert main(["--profile", "toy", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for stage in ("sft_stage1", "sft_label", "grpo", "inference"):
        assert f"{stage}: " in out
    assert "preflight: ok" in out and "max_pixels=12544" in out


def test_too_small_max_length_fails_with_counts_and_ids(run_dir, capsys):
    status = main(["--profile", "toy", "--run-dir", str(run_dir), "--set", "03_sft.max_length=120"])
    out = capsys.readouterr().out
    assert status == 1
    label = out[out.index("sft_label: "):out.index("grpo: ")]
    rows = int(re.search(r"sft_label: (\d+) rows", label).group(1))
    assert f"limit 120 (03_sft.max_length): {rows} rows over -> FAIL" in label  # every prompt is longer than 120
    assert "over the limit (first 10): train-" in label and "preflight: FAILED" in out
    # Counts are printed: the distribution and the number of rows over the limit.
    assert "prompt tokens max" in label and "p99" in label


def test_stage1_set_is_checked_exactly_and_names_the_long_row(run_dir, capsys, tmp_path):
    layout = RunLayout(run_dir)
    samples = load_split(layout.toy_data, "train")
    long_id = samples[3].id
    rows = [{"id": s.id, "label": s.label, "completion": "<think> ok </think> <answer>none</answer>"} for s in samples[:5]]
    rows[3]["completion"] = "<think> " + "Step 1: the image shows the object. " * 120 + "</think>"
    layout.stage1_set.parent.mkdir(parents=True, exist_ok=True)
    layout.stage1_set.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        status = main(["--profile", "toy", "--run-dir", str(run_dir), "--set", "03_sft.max_length=600"])
    finally:
        layout.stage1_set.unlink()
    out = capsys.readouterr().out
    stage1 = out[out.index("sft_stage1: "):out.index("sft_label: ")]
    assert status == 1
    assert "sft_stage1: 5 rows, prompt + expert reasoning" in stage1
    assert "1 rows over -> FAIL" in stage1 and f"(first 1): {long_id};" in stage1


def test_grpo_without_vllm_max_model_length_gets_a_derived_value(run_dir, capsys):
    status = main(["--profile", "toy", "--run-dir", str(run_dir), "--set", "05_grpo.use_vllm=true",
                   "--set", "inference.backend=vllm"])
    out = capsys.readouterr().out
    assert status == 0
    assert "derived: 05_grpo.vllm_max_model_length = " in out and "derived: inference.vllm_max_model_len = " in out
    _, report = build_report("toy", ["05_grpo.use_vllm=true", "inference.backend=vllm"], str(run_dir))
    grpo = next(check for check in report.checks if check.name == "grpo")
    longest = max(total for _, total in grpo.totals())
    # What the trainer passes to vLLM when the profile leaves it unset: the longest row, rounded up.
    assert report.derived["05_grpo.vllm_max_model_length"] == -(-longest // 256) * 256
    status = main(["--profile", "toy", "--run-dir", str(run_dir), "--set", "05_grpo.use_vllm=true",
                   "--set", "05_grpo.vllm_max_model_length=300"])
    out = capsys.readouterr().out
    assert status == 1 and "limit 300 (05_grpo.vllm_max_model_length)" in out


def test_notebooks_get_the_derived_vllm_lengths_only_where_vllm_runs(run_dir):
    plain = load_with_engine_lengths_for([], run_dir)
    assert plain.settings("05_grpo").vllm_max_model_length is None  # transformers rollouts: nothing to derive
    with_vllm = ["05_grpo.use_vllm=true", "inference.backend=vllm"]
    _, report = build_report("toy", with_vllm, str(run_dir))
    config = load_with_engine_lengths_for(with_vllm, run_dir)
    assert config.settings("05_grpo").vllm_max_model_length == report.derived["05_grpo.vllm_max_model_length"]
    assert config.settings("inference").vllm_max_model_len == report.derived["inference.vllm_max_model_len"]
    # A length the profile sets is kept as it is.
    kept = load_with_engine_lengths_for([*with_vllm, "05_grpo.vllm_max_model_length=999"], run_dir)
    assert kept.settings("05_grpo").vllm_max_model_length == 999


def test_paper_profile_where_the_processor_files_exist(run_dir, capsys):
    """The paper profile's own model, on the toy data; skipped where its processor files are absent."""
    layout = RunLayout(run_dir)
    status = run("paper", [f"data_dir={layout.toy_data}"], str(run_dir / "paper"))
    out = capsys.readouterr().out
    if status == 2:
        assert "preflight: skipped: the processor files of Qwen/Qwen2.5-VL-7B-Instruct are not available" in out
        pytest.skip("Qwen/Qwen2.5-VL-7B-Instruct's processor files are not on this machine (offline)")
    assert "sft_label: " in out and "max_pixels=" in out


def test_missing_data_is_a_clear_skip(tmp_path, capsys):
    assert run("toy", [], str(tmp_path)) == 2
    assert "preflight: skipped: no MORE data at" in capsys.readouterr().out


def test_overlong_policy_drops_by_name_or_refuses():
    rows = [({"id": "a"}, 10), ({"id": "b"}, 30), ({"id": "c"}, 20), ({"id": "d"}, 31)]
    result = apply_overlong_policy(rows, max_length=20)
    assert [r["id"] for r in result.kept] == ["a", "c"]
    assert result.dropped == [("b", 30), ("d", 31)]
    assert result.message() == "2 of 4 rows are longer than max_length=20 tokens: b (30), d (31)"
    with pytest.raises(OverlongRowsError, match="2 of 4 rows .* b \\(30\\), d \\(31\\) .*overlong_policy=error"):
        apply_overlong_policy(rows, max_length=20, policy="error")
    assert len(apply_overlong_policy(rows, max_length=None).kept) == 4
    assert apply_overlong_policy([(("x", "text"), 5), (("y", "t"), 3)], 4, "drop").dropped == [("x", 5)]
    with pytest.raises(OverlongRowsError, match="no row is left"):
        apply_overlong_policy(rows, max_length=5)
    with pytest.raises(ValueError, match="truncate"):
        apply_overlong_policy(rows, 20, policy="truncate")


def test_sft_row_lengths_feed_the_policy(run_dir):
    layout = RunLayout(run_dir)
    processor = load_processor(layout.toy_base_model)
    samples = {s.id: s for s in load_split(layout.toy_data, "train")}
    ids = list(samples)[:3]
    rows = [(ids[0], "short"), (ids[1], "long " * 400), (ids[2], "short")]
    lengths = sft_row_lengths(samples, rows, processor)
    result = apply_overlong_policy(lengths, max_length=300)
    assert [row[0] for row in result.kept] == [ids[0], ids[2]] and result.dropped[0][0] == ids[1]


def test_percentile_is_nearest_rank():
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([5], 99) == 5
    assert percentile([1, 2, 3, 1000], 50) == 2


@pytest.mark.parametrize("argv, message", [
    (["--set", "03_sft.max_length=many"], "error: --set '03_sft.max_length=many': section '03_sft': max_length: must be"),
    (["--profile", "no-such-profile"], "error: profile 'no-such-profile': no file"),
])
def test_cli_errors_are_one_line_and_debug_adds_the_traceback(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert main([*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith(message)


def test_a_corrupt_local_model_config_is_an_error_not_a_skip(run_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(RunLayout(run_dir).toy_base_model, model)
    (model / "config.json").write_text('{"model_type": "qwen2_5_vl", ')  # cut short
    argv = ["--profile", "toy", "--run-dir", str(run_dir), "--set", f"base_model={model}"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "skipped" not in captured.out
    assert captured.err.startswith(f"error: {model / 'config.json'}:1: not valid JSON") and captured.err.count("\n") == 1


def test_colocated_vllm_gets_a_derived_step_budget_and_a_memory_estimate(run_dir):
    with_vllm = ["05_grpo.use_vllm=true", "05_grpo.vllm_mode=colocate"]
    _, report = build_report("toy", with_vllm, str(run_dir))
    grpo = next(check for check in report.checks if check.name == "grpo")
    longest_prompt = max(count.prompt_tokens for count in grpo.counts)
    assert report.derived["05_grpo.vllm_max_num_batched_tokens"] == max(4096, -(-longest_prompt // 256) * 256)
    text = report.text()
    assert "derived: 05_grpo.vllm_max_num_batched_tokens" in text and "rough estimate, not a measurement" in text
    config = load_with_engine_lengths_for(with_vllm, run_dir)
    assert config.settings("05_grpo").vllm_max_num_batched_tokens == report.derived["05_grpo.vllm_max_num_batched_tokens"]
    # A share too small for the estimate is one warning line; the pre-flight does not fail for it.
    _, tight = build_report("toy", [*with_vllm, "05_grpo.vllm_gpu_memory_utilization=0.0000001"], str(run_dir))
    warnings = [line for line in tight.text().splitlines() if line.startswith("warning: vLLM's colocated engine")]
    assert len(warnings) == 1 and not tight.failed
    # Server mode: nothing of this (the server is sized by its own command line).
    _, server = build_report("toy", ["05_grpo.use_vllm=true", "05_grpo.vllm_mode=server"], str(run_dir))
    assert "05_grpo.vllm_max_num_batched_tokens" not in server.derived and not server.notes


def load_with_engine_lengths_for(overrides, run_dir):
    """What notebooks 04 to 06 load: the profile, with the vLLM lengths it leaves unset derived."""
    from morelib.config import load_profile
    from morelib.preflight import engine_lengths

    return load_profile("toy", overrides, str(run_dir), default_section="05_grpo", derive=engine_lengths)


def test_the_memory_estimate_of_the_7b_architecture():
    """Arithmetic on Qwen2.5-VL-7B's config: the weights are its 8.29B parameters in bf16, and the
    largest image max_pixels allows sets the vision part (16,384 tokens at ms-swift's default)."""
    import json

    from transformers import Qwen2_5_VLConfig

    from morelib.preflight import vllm_memory_estimate

    values = json.loads((REPO / "configs/models/qwen2_5_vl_7b_config.json").read_text())
    config = Qwen2_5_VLConfig.from_dict({k: v for k, v in values.items() if k != "_comment"})
    paper = vllm_memory_estimate(config, 12845056, 4096, 4352)
    capped = vllm_memory_estimate(config, 1003520, 4096, 4352)
    assert 16.4 < paper["weights"] < 16.8
    assert paper["largest_image_tokens"] == 16384 and capped["largest_image_tokens"] == 1280
    assert paper["encoder_profile"] > 10 * capped["encoder_profile"]
    # 28 layers x 2 (k, v) x 4 heads x 128 x 2 bytes per token.
    assert paper["kv_one_sequence"] == pytest.approx(2 * 28 * 512 * 4352 * 2 / 1e9)
