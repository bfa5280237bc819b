"""The held-out check of a Stage 2 setting chosen on valid: its seeds scored once on the test split.

Settings are chosen on valid (``benchmarks/stage2_valid.py``, one experiment per GRPO seed, and
``stage2_seeds_valid.py`` for their mean). Once a setting is chosen, this scores the models of its
experiments on the run's test split, against the run's own Stage 1 test predictions (notebook
06): each seed's paired gain with its 95% interval, and the mean over the seeds as one model
(``metrics.paired_mean_gain``), both resampling image-text pairs. It refuses an experiment that
has not finished on valid, so test stays the last step. Predictions go to each experiment's
``predictions/grpo_<variant>__test.jsonl`` (resumable); the run's files are only read.

    python benchmarks/stage2_test.py --profile toy-full --run-dir runs/toy-full \\
        tf-g8-t10-lr1e-5-450-s0 tf-g8-t10-lr1e-5-450-s1

One JSON line: what ``stage2_seeds_valid.py`` prints, for the test split, plus each seed's
interval (``seed_ci95``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from morelib import data, metrics  # noqa: E402
from morelib.config import ConfigError, load_profile  # noqa: E402
from morelib.inference import backend_for, predict_to_file  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402
from morelib.prompts import prompt_template  # noqa: E402
from stage2_seeds_valid import labels_by_id, seeds_gain  # noqa: E402


def predict_test(run: RunLayout, profile: str, name: str, variant: str, gen, test: list) -> Path:
    """The test predictions of experiment ``name``'s model, made as notebook 06 makes a Stage 2 model's."""
    exp = RunLayout(run.experiment(name))
    if not exp.result.is_file():
        raise FileNotFoundError(f"{exp.result}: experiment {name!r} has not finished on valid "
                                "(benchmarks/stage2_valid.py first)")
    # The experiment's own settings name its model's directory (a seed may add a suffix).
    overrides = json.loads(exp.result.read_text())["overrides"]
    grpo = load_profile(profile, overrides, exp.root).settings("05_grpo", variant=variant,
                                                               stage1_model=str(exp.checkpoint("stage1")))
    model = f"grpo_{variant}"
    out = exp.predictions(model, "test")
    predict_to_file(backend_for(gen, grpo.model_dir, backend="transformers"), test, out,
                    gen.for_model(model), template=prompt_template("reasoning"), progress=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="experiments of benchmarks/stage2_valid.py, one per seed")
    parser.add_argument("--profile", default="toy-full")
    parser.add_argument("--run-dir", default=None, help="the finished run (default: the profile's run_dir)")
    parser.add_argument("--variant", default="progressive")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="SECTION.KEY=VALUE: the run's own overrides, so that test is generated as notebook 06 did")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test facts")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile, args.overrides, run_dir=args.run_dir)
        common, gen = profile.settings("common"), profile.settings("inference")
        run, data_dir = RunLayout(common.run_dir), Path(common.data_dir)
        stage1_test = run.predictions("stage1", "test")
        if not stage1_test.is_file():
            raise FileNotFoundError(f"{stage1_test}: no Stage 1 test predictions (run notebook 06 first)")
        test = data.load_split(data_dir, "test")[: args.limit]
        paths = {name: predict_test(run, args.profile, name, args.variant, gen, test) for name in args.names}
        result = seeds_gain(run, data_dir, args.names, args.variant, split="test")
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"stage2_test: {error}", file=sys.stderr)
        return 1
    stage1 = labels_by_id(stage1_test, "test")
    gold = [s.label for s in test]
    clusters = [s.img_id for s in test]
    result["seed_ci95"] = {}
    for name, path in paths.items():
        tuned = labels_by_id(path, "test")
        gain = metrics.paired_bootstrap_f1(gold, [stage1[s.id] for s in test], [tuned[s.id] for s in test],
                                           n=1000, clusters=clusters)
        result["seed_ci95"][name] = [round(100 * gain["low"], 2), round(100 * gain["high"], 2)]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
