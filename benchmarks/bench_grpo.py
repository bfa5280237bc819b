"""GRPO speed and memory on CPU: seconds per optimizer step and peak resident memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grpo.py [--stage1 runs/toy/checkpoints/stage1
        --data runs/toy/data] [--steps 6] [--lengths 128 256] [--generations 4 8] [--attn sdpa sdpa_gqa]

Without ``--stage1`` it builds a small toy world and the tiny random model in a temporary
directory; a random model stops at a random point (its small vocabulary makes the end token
likely), so look at the mean completion length beside the times. With a trained Stage 1 model,
completions stop where the reasoning ends.
Each configuration runs in a fresh process so that peak memory is its own. Steps alternate
between generating (new completions) and reusing them (num_iterations = 2); the table shows both.
``--attn`` compares attention kernels (``attn_implementation``; default: the profile's ``auto``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_world(root: Path) -> tuple[Path, Path, Path]:
    """Toy data, the tiny model as 'Stage 1', and a run directory with a split file (a third of the pool hard)."""
    from morelib import toy
    from morelib.layout import RunLayout
    from morelib.tiny import build_tiny_model

    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=0, train=200, valid=10, test=10))
    run_dir = root / "run"
    stage1 = build_tiny_model(RunLayout(run_dir).checkpoint("stage1"), data_dir, seed=0)
    write_split(run_dir, data_dir)
    return data_dir, run_dir, stage1


def write_split(run_dir: Path, data_dir: Path) -> Path:
    from morelib.data import load_split
    from morelib.difficulty import write_split as write_rows
    from morelib.layout import RunLayout

    rng = random.Random(0)
    rows = [{"id": s.id, "label": s.label, "pred": s.label, "difficulty": "hard" if rng.random() < 0.34 else "easy"}
            for s in load_split(data_dir, "train")]
    return write_rows(rows, RunLayout(run_dir).difficulty_split)


def run_one(run_dir: Path, data_dir: Path, stage1: Path, length: int, generations: int, steps: int,
            attn: str = "auto") -> dict:
    """One configuration in this process: build the trainer, train ``steps`` steps, read the step log."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from morelib.config import load_settings
    from morelib.files import read_jsonl
    from morelib.grpo import build_trainer
    from morelib.layout import GrpoRunFolder
    from morelib.training import peak_rss_mb

    # The toy profile's GRPO settings, with this configuration's completion length and group size.
    settings = load_settings("05_grpo", "toy", run_dir=run_dir, data_dir=str(data_dir), stage1_model=str(stage1),
                             variant="progressive", max_hard_samples=16, max_easy_samples=16,
                             num_generations=generations, per_device_train_batch_size=2 * generations,
                             max_completion_length=length, length_threshold=450, learning_rate=1e-5,
                             max_steps=steps, save_steps=10_000, attn_implementation=attn)
    trainer = build_trainer(settings)
    trainer.train()
    rows = read_jsonl(GrpoRunFolder(settings.work_dir).step_log)
    # Seconds of each step after the first (which pays for warm-up), from the log's clock.
    timed = [(b["time_s"] - a["time_s"], b["generated"]) for a, b in zip(rows, rows[1:])]
    gen = [s for s, generated in timed if generated]
    reuse = [s for s, generated in timed if not generated]
    return {"attn": attn, "max_completion_length": length, "num_generations": generations,
            "prompts_per_step": settings.generation_batch_size // generations,
            "s_per_step": round(sum(s for s, _ in timed) / len(timed), 3),
            "s_generation_step": round(sum(gen) / max(len(gen), 1), 3),
            "s_reuse_step": round(sum(reuse) / max(len(reuse), 1), 3),
            "mean_completion_tokens": round(sum(r["completions/mean_length"] for r in rows[1:]) / len(timed), 1),
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage1", type=Path, help="a trained Stage 1 model (default: the tiny random model)")
    parser.add_argument("--data", type=Path, help="the data directory the Stage 1 model was trained on")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--generations", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--attn", nargs="+", default=["auto"], help="attention kernels (attn_implementation)")
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)  # internal: run_dir data stage1 length generations attn
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is warm-up)")

    if args.one:
        run_dir, data_dir, stage1, length, generations, attn = args.one
        print(json.dumps(run_one(Path(run_dir), Path(data_dir), Path(stage1), int(length), int(generations), args.steps,
                                 attn)))
        return

    from morelib.layout import RunLayout

    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        root = Path(tmp)
        if args.stage1:
            if not args.data:
                parser.error("--stage1 needs --data")
            data_dir, run_dir, stage1 = args.data, root / "run", args.stage1.resolve()
            write_split(run_dir, data_dir)
        else:
            data_dir, run_dir, stage1 = make_world(root)
        results = []
        for attn, length, generations in itertools.product(args.attn, args.lengths, args.generations):
            # A run directory per configuration (its own mix and step log), sharing the split.
            work = root / f"run-{attn}-{length}-{generations}"
            split = RunLayout(work).difficulty_split
            split.parent.mkdir(parents=True)
            split.symlink_to(RunLayout(run_dir).difficulty_split)
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", str(work),
                                  str(data_dir), str(stage1), str(length), str(generations), attn],
                                 capture_output=True, text=True, cwd=REPO)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)

    import pandas as pd

    print(f"\nGRPO on CPU ({os.environ.get('OMP_NUM_THREADS', '?')} thread(s)), {args.steps} steps each "
          f"(toy profile otherwise); stage1 = {args.stage1 or 'tiny random model'}")
    print(pd.DataFrame(results).to_string(index=False))


if __name__ == "__main__":
    main()
