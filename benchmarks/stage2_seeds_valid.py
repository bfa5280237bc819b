"""The gain of one Stage 2 setting over its GRPO seeds, on the valid split.

Each experiment of ``benchmarks/stage2_valid.py`` is one training seed of a setting. This scores
them as one model, averaged over the seeds, against Stage 1 (``metrics.paired_mean_gain``: every
bootstrap draw resamples whole image-text pairs, and scores Stage 1 and every seed on the same
draw). The interval covers the valid split's noise, not the spread of training seeds; the gain of
each seed is printed beside it. Nothing is trained or generated: it reads the valid predictions
that the experiments wrote.

    python benchmarks/stage2_seeds_valid.py --run-dir runs/toy g8-t10-lr1e-5-450 g8-t10-lr1e-5-450-s1

One JSON line: the experiments, the valid facts they share, Stage 1's F1, the mean F1 over the
seeds, the gain with its 95% interval, and each seed's gain (F1 points).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from morelib import data, metrics  # noqa: E402
from morelib.config import ConfigError, load_profile  # noqa: E402
from morelib.inference import read_predictions  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402


def labels_by_id(path: Path, split: str = "valid") -> dict[str, str | None]:
    if not path.is_file():
        script = "stage2_valid.py" if split == "valid" else "stage2_test.py"
        raise FileNotFoundError(f"{path}: no {split} predictions (run benchmarks/{script} first)")
    return {row["id"]: row["label"] for row in read_predictions(path)}


def seeds_gain(run: RunLayout, data_dir: Path, names: list[str], variant: str, split: str = "valid") -> dict:
    """Stage 1 against the mean of the experiments ``names`` on the facts of ``split`` they all scored
    (``valid`` to choose a setting; ``test`` once, for the setting chosen: ``stage2_test.py``)."""
    stage1 = labels_by_id(run.predictions("stage1", split), split)
    runs = {name: labels_by_id(RunLayout(run.experiment(name)).predictions(f"grpo_{variant}", split), split)
            for name in names}
    scored = set(next(iter(runs.values())))
    for name, labels in runs.items():
        if set(labels) != scored:
            raise ValueError(f"{name}: scored {len(labels)} {split} facts, {names[0]} {len(scored)}: "
                             "compare experiments scored on the same facts (the same --limit)")
    missing = scored - set(stage1)
    if missing:
        raise ValueError(f"{run.predictions('stage1', split)}: no Stage 1 prediction for {len(missing)} facts")
    facts = [s for s in data.load_split(data_dir, split) if s.id in scored]
    gold = [s.label for s in facts]
    base = [stage1[s.id] for s in facts]
    seeds = [[labels[s.id] for s in facts] for labels in runs.values()]
    f1 = metrics.paired_mean_gain(gold, base, seeds, n=1000, clusters=[s.img_id for s in facts])["f1"]
    stage1_f1 = metrics.score(gold, base)["f1"]
    return {"experiments": names, f"{split}_facts": len(facts), "stage1_f1": round(100 * stage1_f1, 2),
            "mean_f1": round(100 * f1["mean"], 2), "gain": round(100 * f1["gain"], 2),
            "ci95": [round(100 * f1["low"], 2), round(100 * f1["high"], 2)], "ci_unit": "image-text pair",
            "seed_gains": {name: round(100 * (metrics.score(gold, labels)["f1"] - stage1_f1), 2)
                           for name, labels in zip(names, seeds)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="experiments of benchmarks/stage2_valid.py, one per seed")
    parser.add_argument("--profile", default="toy")
    parser.add_argument("--run-dir", default=None, help="the finished run (default: the profile's run_dir)")
    parser.add_argument("--variant", default="progressive")
    args = parser.parse_args(argv)
    try:
        common = load_profile(args.profile, run_dir=args.run_dir).settings("common")
        result = seeds_gain(RunLayout(common.run_dir), Path(common.data_dir), args.names, args.variant)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"stage2_seeds_valid: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
