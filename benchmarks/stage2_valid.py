"""Choose Stage 2 settings on the valid split: train one GRPO variant with changed settings, then
score it and its Stage 1 model on valid (paired bootstrap), and print the learning signal.

It reads a finished run (its data, Stage 1 model and difficulty split; notebooks 00-04). It
trains into ``<run>/experiments/<name>/`` (``result.json`` last), a run directory of its own
whose data, models and Stage 1 checkpoint are links into the run. The one file it adds to the
run itself is Stage 1's valid predictions (``predictions/stage1__valid.jsonl``), shared by every
experiment. The run's ``grpo/`` and checkpoints are never touched, so several experiments can
run side by side (give each ``OMP_NUM_THREADS=1`` on a 2-core machine). Test is never scored
here: settings are chosen on valid.

    python benchmarks/stage2_valid.py --profile toy-full --name lr3e-5 \\
        --set 05_grpo.learning_rate=3e-5 --set 05_grpo.max_hard_samples=null [--variant hard_only]

One JSON line: valid F1 of both models, the gain with its 95% interval, the steps and seconds,
and the share of zero-variance groups, the entropy and the answer reward early and late in
training (``grpo/<variant>/log.jsonl``), and how sure each model is of its valid labels
(``morelib.label_entropy``: the entropy at the label's first token and over its tokens, and the
share of labels given with under 90% probability).

It also says whether GRPO learnt on the facts it trained on, and what that did to valid:
``pool`` counts the tuned model's right greedy answers on up to ``--pool`` hard and as many easy
pool facts (a seeded sample; Stage 1 has every hard one wrong and every easy one right, which is
what the difficulty split means), and ``fixed``/``broken`` count the valid facts that went from
wrong to right and from right to wrong. A run can learn many pool facts and still lose on valid.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from morelib import data, grpo, metrics, training_logs  # noqa: E402
from morelib.difficulty import read_split  # noqa: E402
from morelib.config import ConfigError, load_profile  # noqa: E402
from morelib.files import write_json  # noqa: E402
from morelib.inference import backend_for, predict_to_file, read_predictions  # noqa: E402
from morelib.label_entropy import label_entropies, summary  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402
from morelib.prompts import prompt_template  # noqa: E402
from morelib.rewards import answer_log_key  # noqa: E402


def experiment_dir(run: RunLayout, name: str) -> RunLayout:
    """``<run>/experiments/<name>/`` with links to the run's inputs (data, models, Stage 1, split)."""
    exp = RunLayout(run.experiment(name))
    exp.root.mkdir(parents=True, exist_ok=True)
    links = {run.toy_data: exp.toy_data, run.toy_base_model.parent: exp.toy_base_model.parent,
             run.checkpoint("stage1"): exp.checkpoint("stage1")}
    for source, link in links.items():
        if source.exists() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source, target_is_directory=True)
    exp.difficulty_split.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.difficulty_split, exp.difficulty_split)
    return exp


class ExperimentError(Exception):
    """A one-line reason why an experiment cannot start."""


def finished_run(profile: str, overrides: list[str], run_dir: str | None, name: str, recorded: list[str]) -> RunLayout:
    """The finished run an experiment starts from. ``recorded`` is what its result.json keeps as
    ``overrides``: a name already used with other settings is refused."""
    try:
        run = load_profile(profile, overrides, run_dir).layout
    except ConfigError as error:
        raise ExperimentError(str(error)) from None
    if not (run.model_done("stage1").is_file() and run.difficulty_split.is_file()):
        raise ExperimentError(f"{run.root}: needs a finished Stage 1 model and difficulty split (notebooks 00-04)")
    earlier = RunLayout(run.experiment(name)).result
    if earlier.is_file() and json.loads(earlier.read_text())["overrides"] != recorded:
        # A rerun resumes or reuses the trained model, so the same name must mean the same settings.
        raise ExperimentError(f"{earlier}: experiment {name!r} ran with other settings; choose another --name")
    return run


def score_on_valid(run: RunLayout, exp: RunLayout, name: str, model_dir: Path, gen, valid: list) -> dict:
    """Valid F1 of Stage 1 and of the model trained from it (``name``), and the paired gain (F1 points)."""
    labels = {}
    for key, path in (("stage1", run.checkpoint("stage1")), (name, model_dir)):
        backend = backend_for(gen, path, backend="transformers")
        # Stage 1's valid predictions are shared by all experiments of the run (same model).
        out = (run if key == "stage1" else exp).predictions(key, "valid")
        rows = predict_to_file(backend, valid, out, gen.for_model("stage1"), template=prompt_template("reasoning"),
                               progress=False)
        labels[key] = [r["label"] for r in rows]
    gold = [s.label for s in valid]
    stage1, tuned = labels.values()
    # Facts of one image-text pair are not independent: resample whole pairs, as the report does.
    gain = metrics.paired_bootstrap_f1(gold, stage1, tuned, n=1000, clusters=[s.img_id for s in valid])
    return {"valid_facts": len(gold),
            "stage1_f1": round(100 * metrics.score(gold, stage1)["f1"], 2),
            "tuned_f1": round(100 * metrics.score(gold, tuned)["f1"], 2),
            "gain": round(100 * gain["delta"], 2), "ci95": [round(100 * gain["low"], 2), round(100 * gain["high"], 2)],
            "ci_unit": "image-text pair",
            "changed_predictions": sum(a != b for a, b in zip(stage1, tuned)),
            "fixed": sum(a != g and b == g for g, a, b in zip(gold, stage1, tuned)),
            "broken": sum(a == g and b != g for g, a, b in zip(gold, stage1, tuned))}


POOL_SAMPLE_SEED = 0  # one pool sample for every experiment of a run, whatever its training seed


def score_on_pool(run: RunLayout, exp: RunLayout, name: str, model_dir: Path, gen, data_dir, per_kind: int) -> dict:
    """The tuned model's right greedy answers on up to ``per_kind`` hard and ``per_kind`` easy pool
    facts (a sample drawn with ``POOL_SAMPLE_SEED``). By the difficulty split, Stage 1 has the hard
    ones wrong and the easy ones right."""
    difficulty = {row["id"]: row["difficulty"] for row in read_split(run.difficulty_split)}
    train = [s for s in data.load_split(data_dir, "train") if s.id in difficulty]
    random.Random(POOL_SAMPLE_SEED).shuffle(train)
    facts = {kind: [s for s in train if difficulty[s.id] == kind][:per_kind] for kind in ("hard", "easy")}
    chosen = facts["hard"] + facts["easy"]
    rows = predict_to_file(backend_for(gen, model_dir, backend="transformers"), chosen,
                           exp.predictions(name, "pool_sample"), gen.for_model("stage1"),
                           template=prompt_template("reasoning"), progress=False)
    right = {r["id"] for r in rows if r["label"] == r["gold"]}
    return {"hard": len(facts["hard"]), "hard_right": sum(s.id in right for s in facts["hard"]),
            "easy": len(facts["easy"]), "easy_right": sum(s.id in right for s in facts["easy"])}


def label_certainty(model_dir: Path, predictions: Path, valid: list, gen) -> dict:
    """How sure the model is of the labels it gave on valid (``morelib.label_entropy.summary``)."""
    backend = backend_for(gen, model_dir, backend="transformers")  # a TransformersBackend: model and processor
    texts = {r["id"]: r["text"] for r in read_predictions(predictions)}
    return summary(label_entropies(backend.model, backend.processor, valid, [texts[s.id] for s in valid],
                                   prompt_template("reasoning")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy-full")
    parser.add_argument("--run-dir", default=None, help="the finished run (default: the profile's run_dir)")
    parser.add_argument("--name", required=True, help="the experiment's name (its directory)")
    parser.add_argument("--variant", default="progressive")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="SECTION.KEY=VALUE")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N valid facts")
    parser.add_argument("--pool", type=int, default=150, help="score up to N hard and N easy pool facts (0: none)")
    args = parser.parse_args(argv)
    try:
        run = finished_run(args.profile, args.overrides, args.run_dir, args.name, recorded=args.overrides)
    except ExperimentError as error:
        print(error, file=sys.stderr)
        return 2
    exp = experiment_dir(run, args.name)
    profile = load_profile(args.profile, args.overrides, exp.root)
    settings = profile.settings("05_grpo", variant=args.variant, stage1_model=str(exp.checkpoint("stage1")))
    started = time.time()
    model_dir = grpo.train(settings)
    train_s = time.time() - started

    valid = data.load_split(settings.data_dir, "valid")[: args.limit]
    scores = score_on_valid(run, exp, f"grpo_{args.variant}", model_dir, profile.settings("inference"), valid)
    frame = training_logs.grpo_log(settings.work_dir)
    generated = frame[frame["generated"]]
    window = max(1, len(generated) // 5)  # the first and last fifth of the generation steps
    result = {"name": args.name, "variant": args.variant, "overrides": args.overrides,
              "steps": int(frame.index.max()), "train_s": round(train_s), **scores}
    for key, short in (("frac_reward_zero_std", "zero_std"), ("entropy", "entropy"),
                       (answer_log_key(generated.columns), "answer")):
        for end, rows in (("early", generated.head(window)), ("late", generated.tail(window))):
            result[f"{short}_{end}"] = round(float(rows[key].mean()), 3) if key in rows else None
    gen = profile.settings("inference")
    for key, path, model in (("stage1", run.predictions("stage1", "valid"), run.checkpoint("stage1")),
                             ("tuned", exp.predictions(f"grpo_{args.variant}", "valid"), model_dir)):
        result[f"label_entropy_{key}"] = label_certainty(model, path, valid, gen)
    if args.pool:
        result["pool"] = score_on_pool(run, exp, f"grpo_{args.variant}", model_dir, gen, settings.data_dir, args.pool)
    write_json(exp.result, result, indent=1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
