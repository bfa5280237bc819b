"""Choose the toy's base on valid: build a base with other pretraining settings, train Stage 1 and
the 25% label-only model on it as notebook 03 does, and score both on the valid split.

Rounds 2 to 9 of docs/stage2-on-the-toy.md tuned every later stage on one base; Round 10 found
that another build of the base (from a few hundred more corpus facts, for one) moves Stage 1
further than its training seed does. This script measures that for one setting.

It runs notebooks 00 to 02 of the profile into a run directory of its own (the base comes from the
pretraining cache when these settings were built before), trains the two models one after another
as the profile's notebook 03 would, and scores them on valid. Test is never scored here.

    python benchmarks/base_valid.py --profile toy-full --run-dir /tmp/base-4500 \\
        --set '00_prepare.pretrain={epochs: 3, facts: 4500, probe_facts: 120, corpus_seed: 1000,
               learning_rate: 0.002, batch_size: 16, task_weights: {crop: 3, entity: 3, image: 1, text: 1}}'

One JSON line: the base's cache key, build time and probe, and each model's valid F1 and the number
of its answers that are no label (``unparsed``; for the label-only model, an invented label).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from morelib import data, metrics, pretrain  # noqa: E402
from morelib import run as chain  # noqa: E402
from morelib.config import load_profile, with_changes  # noqa: E402
from morelib.inference import backend_for, predict_to_file  # noqa: E402
from morelib.launch import train_side_by_side  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402
from morelib.prompts import prompt_template  # noqa: E402

PROMPT = {"stage1": "reasoning", "sft_label_25": "label"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy")
    parser.add_argument("--run-dir", required=True, help="a run directory of its own for this base")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a changed setting (00_prepare.pretrain={...}, or any other)")
    parser.add_argument("--limit", type=int, default=None, help="score the first N valid facts only")
    args = parser.parse_args(argv)
    sets = [arg for item in args.overrides for arg in ("--set", item)]
    steps = ["--only", "00_prepare", "--only", "01_annotation", "--only", "02_filtering"]
    if chain.main(["--profile", args.profile, "--run-dir", args.run_dir, *sets, *steps]) != 0:
        return 1
    profile = load_profile(args.profile, args.overrides, args.run_dir)
    settings = profile.settings("03_sft")
    run = RunLayout(settings.run_dir)
    # The two models of notebook 03 that tell a base apart: Stage 1, and the label-only model on the
    # same 25% of the facts (its invented labels are what a base that copies well should avoid).
    train_side_by_side("morelib.sft", [
        with_changes(settings, model_name="stage1", target="reasoning", prompt="reasoning"),
        with_changes(settings, model_name="sft_label_25", target="label", prompt="label", ids_key="stage1")])
    generation = profile.settings("inference")
    samples = data.load_split(run.toy_data, "valid")[:args.limit]
    gold = [s.label for s in samples]
    record = pretrain.read_report(run.toy_base_model)
    result = {"base": record["key"], "build_seconds": record["build_seconds"], "probe": record["probe"]["skills"],
              "valid_facts": len(samples)}
    for name, kind in PROMPT.items():
        backend = backend_for(generation, run.checkpoint(name), backend="transformers")
        out = predict_to_file(backend, samples, run.predictions(name, "valid"), generation.for_model(name),
                              template=prompt_template(kind), progress=False)
        by_id = {r["id"]: r["label"] for r in out}
        predicted = [by_id[s.id] for s in samples]
        result[name] = {"f1": round(100 * metrics.score(gold, predicted)["f1"], 1),
                        "unparsed": sum(label is None for label in predicted)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
