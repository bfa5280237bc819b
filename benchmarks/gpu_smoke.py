"""The paper profile's GPU branches on a small scale: one short script for a lent GPU.

    python benchmarks/gpu_smoke.py [--root /tmp/gpu_smoke] [--cpu]

On the toy world and the tiny model it runs, each through the code the chain uses and with the
paper profile's settings (``configs/paper.yaml``; only sizes and step counts cut down): label-only
SFT with the paper's flags (bf16, gradient checkpointing, LoRA merged at the end) as an
``accelerate launch`` subprocess; GRPO with bf16 and gradient checkpointing from that model, with
transformers rollouts; bf16 batched inference. It prints seconds, steps and peak GPU memory for
each, and checks that the trained weights moved. ``--cpu`` runs the same path on CPU with fewer
rows (a check of the code, not of speed). vLLM and DeepSpeed are not exercised here; the
7B-scale figures come from ``benchmarks/gpu_rehearsal.py``.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/gpu_smoke")
    parser.add_argument("--cpu", action="store_true", help="run on CPU with fewer rows (checks the code path)")
    args = parser.parse_args(argv)

    import torch

    from morelib import data, inference, metrics, toy
    from morelib.config import load_settings
    from morelib.files import write_jsonl
    from morelib.launch import launch, write_settings
    from morelib.layout import GrpoRunFolder, ModelFolder, RunLayout
    from morelib.model import load_model
    from morelib.tiny import build_tiny_model
    from morelib.training import read_summary

    if not args.cpu and not torch.cuda.is_available():
        parser.error("this check needs a GPU (or --cpu to check the code path)")
    device = "cpu" if args.cpu else "cuda"
    print("device:", torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch", torch.__version__, flush=True)
    root = Path(args.root)
    n_train, n_test = (40, 16) if args.cpu else (400, 120)
    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=0, train=n_train, valid=8, test=n_test))
    base = build_tiny_model(root / "base", data_dir, seed=0)
    run_dir = root / "run"
    layout = RunLayout(run_dir)
    overrides = [f"data_dir={data_dir}", f"base_model={base}"]
    figures = {}

    # Stage 1 path with the paper's flags (label-only target: no expert needed here).
    sft = load_settings("03_sft", "paper", overrides, str(run_dir), model_name="stage1", target="label",
                        prompt="label", ids_key=None, num_train_epochs=2, per_device_train_batch_size=8,
                        gradient_accumulation_steps=2, learning_rate=1e-3, bf16=True, gradient_checkpointing=True,
                        use_lora=True, save_strategy="no", report_to="none", num_processes=1, deepspeed_config=None)
    started = time.time()
    stage1 = ModelFolder(sft.model_dir)
    launch("morelib.sft", write_settings(sft, stage1.settings), num_processes=1,
           mixed_precision="bf16", log_path=stage1.train_log)
    figures["sft_seconds"] = round(time.time() - started, 1)
    done = read_summary(sft.model_dir)
    figures["sft_steps"] = done.get("global_step")
    before, _ = load_model(base, dtype="float32", device="cpu")
    after, _ = load_model(sft.model_dir, dtype="float32", device="cpu")
    name = "lm_head.weight"
    figures["sft_weights_moved"] = bool((dict(after.named_parameters())[name]
                                         - dict(before.named_parameters())[name]).abs().max() > 0)
    del before, after

    # Stage 2 path: GRPO, bf16, gradient checkpointing, from the merged Stage 1 model.
    rng = random.Random(0)
    train = data.load_split(data_dir, "train")
    write_jsonl(layout.difficulty_split, [{"id": s.id, "label": s.label, "pred": s.label,
                                           "difficulty": "hard" if rng.random() < 0.3 else "easy"} for s in train])
    grpo = load_settings("05_grpo", "paper", overrides, str(run_dir), variant="progressive",
                         stage1_model=str(sft.model_dir), max_steps=2 if args.cpu else 6, num_generations=8,
                         per_device_train_batch_size=16, max_completion_length=16 if args.cpu else 64,
                         length_threshold=40, learning_rate=1e-5, bf16=True, gradient_checkpointing=True,
                         save_steps=1000, use_vllm=False, report_to="none", num_processes=1, deepspeed_config=None)
    started = time.time()
    grpo_model = ModelFolder(grpo.model_dir)
    launch("morelib.grpo", write_settings(grpo, grpo_model.settings), num_processes=1,
           mixed_precision="bf16", log_path=grpo_model.train_log)
    figures["grpo_seconds"] = round(time.time() - started, 1)
    log = GrpoRunFolder(grpo.work_dir).step_log
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    figures["grpo_logged_steps"] = len(rows)
    figures["grpo_cuda_peak_mb"] = max((r.get("cuda_peak_mb") or 0 for r in rows), default=None)

    # Inference in bf16, greedy, batched, with the paper profile's decoding settings.
    test = data.load_split(data_dir, "test")
    gen = load_settings("inference", "paper", overrides, str(run_dir), backend="transformers", max_new_tokens=32,
                        batch_size=64, dtype="bfloat16")
    backend = inference.backend_for(gen, grpo.model_dir, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    preds = inference.generate(backend, test, gen)
    seconds = time.time() - started
    figures["inference_tokens_per_s"] = round(sum(p.completion_tokens for p in preds) / seconds, 1)
    if device == "cuda":
        figures["inference_cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    figures["test_scores"] = {k: round(float(v), 4) for k, v in
                              metrics.score([p.gold for p in preds], [p.label for p in preds]).items()}
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
