"""SFT speed and memory on the toy: seconds per update, samples per second, peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sft.py [--data DIR --model DIR] [--steps 30]

Without --data/--model it builds the toy data and the tiny model in a temporary directory.
Each target (Stage 1 reasoning rows, label-only rows) is timed in-process over ``--steps``
updates after ``--warmup`` untimed ones, with the toy profile's SFT settings otherwise. The
reasoning rows are synthetic stand-ins of the expert's length (about 220 tokens) when no Stage 1
file is given.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import TrainerCallback  # noqa: E402

from morelib import sft, toy  # noqa: E402
from morelib.config import load_settings  # noqa: E402
from morelib.data import load_split  # noqa: E402
from morelib.files import write_jsonl  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402
from morelib.tiny import build_tiny_model  # noqa: E402

STAND_IN = ("<think>\n" + "\n".join(
    f"Step {i}: the object is a solid red circle at the middle left and the entity is a person named in the text."
    for i in range(1, 7)) + "\n</think>\n<answer>{label}</answer>")


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int):
        self.warmup, self.times = warmup, []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def stand_in_file(data_dir: Path, path: Path, n: int = 200) -> Path:
    return write_jsonl(path, [{"id": s.id, "label": s.label, "completion": STAND_IN.format(label=s.label)}
                              for s in load_split(data_dir, "train")[:n]])


def bench(settings, warmup: int) -> dict:
    trainer = sft.build_trainer(settings)
    timer = StepTimer(warmup)
    trainer.add_callback(timer)
    trainer.train()
    timed = timer.times[warmup:]
    s_per_step = (timed[-1] - timed[0]) / (len(timed) - 1)
    rows_per_step = settings.per_device_train_batch_size * settings.gradient_accumulation_steps
    return {"s/step": round(s_per_step, 3), "samples/s": round(rows_per_step / s_per_step, 1),
            "rows/step": rows_per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--train-file", type=Path, help="Stage 1 rows (sft/stage1.jsonl); default: stand-ins")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    data_dir = args.data or toy.generate(tmp / "data", toy.ToyConfig())
    model_dir = args.model or build_tiny_model(tmp / "model", data_dir)
    run_dir = tmp / "run"
    # The reasoning target reads the run directory's Stage 1 set, as notebook 03 does.
    stage1_set = RunLayout(run_dir).stage1_set
    if args.train_file:
        stage1_set.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.train_file, stage1_set)
    else:
        stand_in_file(Path(data_dir), stage1_set)
    common = dict(base_model=str(model_dir), data_dir=str(data_dir), num_train_epochs=100, max_length=1024,
                  per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, learning_rate=1e-3,
                  logging_steps=10**6, save_strategy="no", max_steps=args.steps + args.warmup)
    print(f"{'target':<10} {'s/step':>8} {'samples/s':>10} {'rows/step':>10}")
    for target in ("reasoning", "label"):
        settings = load_settings("03_sft", "toy", run_dir=run_dir, model_name=f"bench_{target}", target=target,
                                 prompt=target, **common)
        result = bench(settings, args.warmup)
        print(f"{target:<10} {result['s/step']:>8} {result['samples/s']:>10} {result['rows/step']:>10}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MiB (whole process, both runs)")


if __name__ == "__main__":
    main()
