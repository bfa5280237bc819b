"""benchmarks/gpu_rehearsal.py on CPU (--tiny): the same code the GPU rehearsal runs, at tiny sizes."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_rehearsal  # noqa: E402


def test_the_shipped_7b_config_is_qwen2_5_vl_7b():
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    values = json.loads(gpu_rehearsal.CONFIG_7B.read_text())
    values.pop("_comment")
    config = Qwen2_5_VLConfig(**values)
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size, text.vocab_size) == (3584, 28, 28, 4, 18944, 152064)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    vision = config.vision_config
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size, vision.fullatt_block_indexes) == (
        32, 1280, 3584, [7, 15, 23, 31])
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    # The published size of Qwen2.5-VL-7B-Instruct: 8.29B parameters, 0.68B of them in the vision tower.
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656
    assert sum(p.numel() for p in model.model.visual.parameters()) == 676_550_144


def test_rehearsal_runs_every_phase_on_cpu(tmp_path, capsys):
    # Profiled, so that one run also checks the profiler's tables (it needs 4 SFT steps: wait, warm-up, 2 active).
    status = gpu_rehearsal.main(["--tiny", "--sft-steps", "4", "--profile", "--root", str(tmp_path)])
    report = json.loads((tmp_path / "rehearsal.json").read_text())
    errors = {k: v["error"] for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert status == 0 and not errors, errors
    sizes = report["sizes"]
    for name in ("sft_lora", "sft_full"):
        assert report[name]["tokens_per_s"] > 0 and report[name]["steps_timed"] >= 1
        assert report[name]["mean_row_tokens"] > sizes["completion_tokens"]
    # Full fine-tuning after the LoRA phase trains the whole language model, not nothing.
    assert report["sft_full"]["trainable_params"] > 5 * report["sft_lora"]["trainable_params"]
    assert all(norm > 0 for norm in report["sft_full"]["grad_norms"]), report["sft_full"]["grad_norms"]
    assert report["grpo_lora"]["steps"] == sizes["grpo_steps"] and report["grpo_lora"]["generated_tokens"] > 0
    for batch in sizes["batches"]:
        run = report[f"inference_batch_{batch}"]
        # Every path decodes the full length: the random model never stops early.
        for path in ("package", "plain_generate"):
            assert run[path]["generated_tokens"] == batch * sizes["new_tokens"], (batch, path)
            assert run[path]["tokens_per_s"] > 0 and run[path]["peak_memory_gb"] > 0
        assert run["speedup_vs_plain"] > 0 and run["encode_seconds"] > 0
        assert all(len(times) == sizes["inference_rounds"] for times in run["seconds_each_round"].values())
    assert report["pixel_limits"]["max_pixels"] > 0
    assert "[rehearsal] inference_batch_" in capsys.readouterr().out
    assert report["sft_speed"] == {"setting": "after", "attn_implementation": "sdpa_gqa",  # auto, on a CPU
                                   "vision_tower_without_grad": True}
    # --profile: the top operators of each SFT phase.
    for name in ("profile_sft_lora.txt", "profile_sft_full.txt"):
        table = (tmp_path / name).read_text()
        assert "ProfilerStep" in table and "aten::mm" in table, name


def test_mfu_uses_model_flops():
    flops = gpu_rehearsal.FlopModel(llm_params=7_000_000_000, vision_params=0, layers=28, hidden=3584)
    # 6N per token for full training, 4N with LoRA, plus attention 12·L·d·ctx.
    assert flops.train(1, 0, 0, lora=False) == 6 * 7e9 and flops.train(1, 0, 0, lora=True) == 4 * 7e9
    assert gpu_rehearsal.mfu(6 * 7e9 * 1000, 1.0, 989.4) == pytest.approx(0.0424, abs=1e-4)
    assert gpu_rehearsal.mfu(1.0, 1.0, None) is None
