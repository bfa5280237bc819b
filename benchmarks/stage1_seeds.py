"""Stage 1's spread over training seeds: train Stage 1 again with other seeds, score each on valid
and test, and print the F1 of each.

The same rows, base model and settings as the run's own Stage 1; the seed changes the order of the
rows (and dropout, where there is any). It reads a finished run (notebooks 00-03) and trains into
``<run>/experiments/stage1_seed<N>/``, a run directory of its own whose data, models and Stage 1
set are links into the run; the run's own seed is the run's Stage 1 model. Predictions are kept
(a rerun scores again without generating), and the table goes to
``<run>/experiments/stage1_seeds.csv`` with the columns ``seed, split, f1`` (F1 in points).

To try other Stage 1 settings (on valid), name the experiment and give the changes: every seed,
the run's own included, then trains into ``<run>/experiments/<name>_seed<N>/`` and the table goes
to ``<run>/experiments/<name>.csv``.

    python benchmarks/stage1_seeds.py --profile toy --seeds 0 1 2
    python benchmarks/stage1_seeds.py --profile toy --name lr3e-4 --set 03_sft.learning_rate=3e-4 --splits valid
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from morelib import data, metrics  # noqa: E402
from morelib.config import load_profile  # noqa: E402
from morelib.inference import backend_for, predict_to_file  # noqa: E402
from morelib.launch import train_side_by_side  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402
from morelib.prompts import prompt_template  # noqa: E402


def seed_run(run: RunLayout, seed: int, name: str = "stage1") -> RunLayout:
    """``<run>/experiments/<name>_seed<N>/`` with links to the run's data, base model and Stage 1 set."""
    exp = RunLayout(run.experiment(f"{name}_seed{seed}"))
    for source, link in ((run.toy_data, exp.toy_data), (run.toy_base_model.parent, exp.toy_base_model.parent),
                         (run.stage1_set.parent, exp.stage1_set.parent)):
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source, target_is_directory=True)
    return exp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy")
    parser.add_argument("--run-dir", default=None, help="the finished run (default: the profile's run_dir)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", default=["valid", "test"])
    parser.add_argument("--name", default="stage1", help="the experiment's name (with --set: every seed retrains)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a changed Stage 1 setting (03_sft.KEY=VALUE)")
    args = parser.parse_args()
    if args.overrides and args.name == "stage1":
        parser.error("--set needs a --name of its own, so the run's Stage 1 results are not overwritten")
    profile = load_profile(args.profile, [], args.run_dir)
    run = profile.layout
    own_seed = profile.settings("03_sft").seed
    if not run.model_done("stage1").is_file():
        print(f"error: {run.root}: needs a finished Stage 1 model (notebooks 00-03)", file=sys.stderr)
        return 2
    generation = profile.settings("inference")
    # Train every seed first, as notebook 03 trains its models (side_by_side at a time, each with its
    # share of the cores), so that a seed trains with the threads, and the numbers, of the run's own Stage 1.
    where_by_seed = {seed: seed_run(run, seed, args.name) if seed != own_seed or args.overrides else run
                     for seed in args.seeds}
    train_side_by_side("morelib.sft", [load_profile(args.profile, args.overrides, where.root).settings("03_sft", seed=seed)
                                       for seed, where in where_by_seed.items() if where is not run])
    rows = []
    for seed, where in where_by_seed.items():
        backend = backend_for(generation, where.checkpoint("stage1"), backend="transformers")
        for split in args.splits:
            samples = data.load_split(run.toy_data, split)
            out = predict_to_file(backend, samples, where.predictions("stage1", split), generation.for_model("stage1"),
                                  template=prompt_template("reasoning"), progress=False)
            by_id = {r["id"]: r["label"] for r in out}
            gold = [s.label for s in samples]
            f1 = 100 * metrics.score(gold, [by_id[s.id] for s in samples])["f1"]
            rows.append({"seed": seed, "split": split, "f1": round(f1, 2)})
            print(f"seed {seed} {split}: F1 {f1:.1f}", flush=True)
    out_csv = run.stage1_seeds(args.name)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["seed", "split", "f1"])
        writer.writeheader()
        writer.writerows(rows)
    for split in args.splits:
        scores = [r["f1"] for r in rows if r["split"] == split]
        print(f"{split}: F1 {min(scores):.1f} to {max(scores):.1f} (spread {max(scores) - min(scores):.1f}) "
              f"over seeds {args.seeds}")
    print(f"wrote {out_csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
