"""Side by side or one after another: wall time of four short training runs on this CPU.

    .venv/bin/python benchmarks/bench_side_by_side.py [--stage sft] [--steps 40]
    .venv/bin/python benchmarks/bench_side_by_side.py --stage grpo --run-dir runs/toy-full [--steps 16]

It trains the same four runs twice through ``morelib.launch.train_side_by_side``, the function
notebooks 03 and 05 use: first with ``side_by_side=1`` (one after another, each with every core),
then with ``side_by_side=2`` (two at a time, each with half the cores), and prints both wall
times. SFT runs train the tiny model on stand-in Stage 1 rows and on label-only rows in a
temporary toy world; GRPO runs start from a finished run's Stage 1 model and difficulty split
(notebooks 00-04) and train into a temporary directory. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from morelib.config import load_settings, with_changes  # noqa: E402
from morelib.launch import train_side_by_side  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402


def sft_runs(root: Path, steps: int) -> list:
    """Two Stage 1 (reasoning) and two label-only runs of the tiny model on the toy world."""
    from bench_sft import stand_in_file

    from morelib import toy
    from morelib.tiny import build_tiny_model

    data_dir = toy.generate(root / "world", toy.ToyConfig())
    model_dir = build_tiny_model(root / "model", data_dir)
    stand_in_file(data_dir, RunLayout(root / "run").stage1_set)
    base = load_settings("03_sft", "toy", run_dir=root / "run", base_model=str(model_dir), data_dir=str(data_dir),
                         max_steps=steps, save_strategy="no", logging_steps=10**6, num_train_epochs=100)
    return [with_changes(base, model_name=f"{target}_{i}", target=target, prompt=target)
            for target in ("reasoning", "label") for i in (0, 1)]


def grpo_runs(root: Path, run_dir: Path, profile: str, steps: int) -> list:
    """Four GRPO runs (the progressive variant, seeds 0-3) from a finished run's Stage 1 model."""
    source = RunLayout(run_dir)
    split = RunLayout(root).difficulty_split
    split.parent.mkdir(parents=True)
    split.symlink_to(source.difficulty_split.resolve())
    base = load_settings("05_grpo", profile, run_dir=root, data_dir=str(source.toy_data.resolve()),
                         stage1_model=str(source.checkpoint("stage1").resolve()), variant="progressive",
                         max_steps=steps, save_steps=10**6)
    return [with_changes(base, seed=seed) for seed in range(4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("sft", "grpo"), default="sft")
    parser.add_argument("--steps", type=int, default=40, help="updates per run")
    parser.add_argument("--run-dir", type=Path, help="grpo: a finished run (its data, Stage 1 model, split)")
    parser.add_argument("--profile", default="toy-full", help="grpo: the profile whose 05_grpo settings to use")
    args = parser.parse_args()
    if args.stage == "grpo" and not args.run_dir:
        parser.error("--stage grpo needs --run-dir")
    os.environ.pop("OMP_NUM_THREADS", None)  # one after another: every core, as torch chooses

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = os.getloadavg()[0]
    results = {}
    for at_once in (1, 2):
        with tempfile.TemporaryDirectory(prefix=f"bench-side-{at_once}-") as tmp:
            root = Path(tmp)
            runs = sft_runs(root, args.steps) if args.stage == "sft" else grpo_runs(root, args.run_dir, args.profile,
                                                                                  args.steps)
            runs = [with_changes(run, side_by_side=at_once) for run in runs]
            started = time.perf_counter()
            train_side_by_side(f"morelib.{args.stage}", runs)
            results[at_once] = time.perf_counter() - started
            print(f"side_by_side={at_once}: {len(runs)} {args.stage} runs of {args.steps} updates in "
                  f"{results[at_once]:.1f} s", flush=True)
    print(f"\n{cores} cores, load before the start {load_before:.2f}: two at a time takes "
          f"{results[2] / results[1]:.2f} x the time of one after another")


if __name__ == "__main__":
    main()
