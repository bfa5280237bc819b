"""A yardstick for Stage 2 on the valid split: fine-tune the Stage 1 model on reasoning for the
Stage 2 pool with plain SFT (no RL), then score it and Stage 1 on valid (paired bootstrap).

If GRPO cannot raise valid F1, is it GRPO, or is there nothing in the pool to learn? Two sets of
rows answer that, both on the pool Stage 1 did not train on:

- ``--rows own``: the model's own right answers, the simplest way to learn from the answer
  reward (rejection sampling, as in STaR or expert iteration): its greedy output for each easy
  fact, and each distinct right output among ``--samples`` sampled ones for each hard fact, drawn
  with Stage 2's temperature, top-p and top-k. It also prints the room GRPO has on the pool:
  pass@1 (greedy) against pass@G, the hard facts where some sample is right. ``--grounded`` keeps only the hard-fact outputs
  whose quoted phrases are all in the news text, which drops most lucky answers.
- ``--rows expert`` (toy only): the offline expert's reasoning, without mistakes, for every pool
  fact. That is what the pool would give if it were annotated like Stage 1's 25%: an upper bound
  for learning from the pool.
- ``--rows expert-hard`` (toy only): the expert's reasoning for the hard facts, the model's own
  greedy right answers for the easy ones: what a perfect explorer would find on the pool.

``--with-stage1-set`` adds Stage 1's own rows. Training takes the profile's ``03_sft`` settings,
from the Stage 1 checkpoint, with a learning rate of 1e-4 and one epoch unless ``--set 03_sft.learning_rate=...`` or ``--set 03_sft.num_train_epochs=...``
say otherwise. It writes ``<run>/experiments/<name>/`` like ``stage2_valid.py``, so notebook 05's
table lists both kinds of experiment; the run's own files are never touched. Test is never scored.

    OMP_NUM_THREADS=1 python benchmarks/self_training_valid.py --profile toy-full --name own --rows own
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stage2_valid import ExperimentError, experiment_dir, finished_run, score_on_valid  # noqa: E402  (beside this one)

from morelib import data, sft  # noqa: E402
from morelib.answer import parse_label  # noqa: E402
from morelib.config import load_profile  # noqa: E402
from morelib.difficulty import HARD, read_split  # noqa: E402
from morelib.faithfulness import quotes_in_text  # noqa: E402
from morelib.files import write_json, write_jsonl  # noqa: E402
from morelib.filtering import read_stage1  # noqa: E402
from morelib.inference import backend_for, read_predictions  # noqa: E402
from morelib.layout import RunLayout  # noqa: E402
from morelib.prompts import prompt_template  # noqa: E402
from morelib.training import read_summary  # noqa: E402

DEFAULTS = {"learning_rate": 1e-4, "num_train_epochs": 1}  # a short, gentle continuation of Stage 1


def sample_hard(run: RunLayout, exp: RunLayout, hard: list, gen, samples: int) -> list[dict]:
    """``samples`` outputs of the Stage 1 model per hard fact (cached in the experiment: paid work)."""
    path = exp.predictions("stage1", f"pool_hard_x{samples}")
    if path.is_file():
        return read_predictions(path)
    backend = backend_for(gen, run.checkpoint("stage1"), backend="transformers")
    rows = []
    for draw in range(samples):
        settings = replace(gen, seed=draw)  # each draw its own seed, so the draws differ
        for start in range(0, len(hard), settings.batch_size):
            batch = hard[start:start + settings.batch_size]
            for sample, out in zip(batch, backend.generate(batch, settings, prompt_template("reasoning"))):
                rows.append({"id": sample.id, "gold": sample.label, "draw": draw, "text": out.text,
                             "label": parse_label(out.text)})
    write_jsonl(path, rows)
    return rows


def own_rows(pool_predictions: list[dict], hard_samples: list[dict], texts: dict[str, str],
             grounded: bool) -> list[dict]:
    """Training rows from the model's right answers: greedy ones on easy facts, distinct sampled ones on hard."""
    rows = [{"id": r["id"], "label": r["gold"], "completion": r["text"]}
            for r in pool_predictions if r["label"] == r["gold"]]
    seen = set()
    for r in hard_samples:
        key = (r["id"], r["text"])
        if r["label"] != r["gold"] or key in seen or (grounded and not quotes_in_text(r["text"], texts[r["id"]])):
            continue
        seen.add(key)
        rows.append({"id": r["id"], "label": r["gold"], "completion": r["text"]})
    return rows


def room_for_rl(pool: list[dict], hard_samples: list[dict]) -> dict:
    """pass@1 (greedy) against pass@G (any of the G sampled outputs, or greedy) on the pool: the
    facts GRPO can learn from are the hard ones where some sample is right."""
    right = {r["id"] for r in hard_samples if r["label"] == r["gold"]}
    hard = [r["id"] for r in pool if r["difficulty"] == HARD]
    rescued = sum(i in right for i in hard)
    return {"pool_facts": len(pool), "hard_facts": len(hard), "hard_right_in_samples": rescued,
            "pool_pass1": round(1 - len(hard) / len(pool), 4),
            "pool_passG": round(1 - (len(hard) - rescued) / len(pool), 4)}


def expert_rows(pool: list[dict], meta: dict[str, dict]) -> list[dict]:
    """The offline expert's reasoning (no mistakes) for every pool fact."""
    from morelib.expert_server import compose, reasoning_steps

    return [{"id": r["id"], "label": r["label"], "completion": compose(reasoning_steps(meta[r["id"]], r["label"])[0], r["label"])}
            for r in pool]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy-full")
    parser.add_argument("--run-dir", default=None, help="the finished run (default: the profile's run_dir)")
    parser.add_argument("--name", required=True, help="the experiment's name (its directory)")
    parser.add_argument("--rows", choices=("own", "expert", "expert-hard"), default="own")
    parser.add_argument("--samples", type=int, default=4, help="sampled outputs per hard fact (--rows own)")
    parser.add_argument("--hard-limit", type=int, default=None,
                        help="sample only the first N hard facts of the pool (--rows own; default: all)")
    parser.add_argument("--grounded", action="store_true", help="keep hard-fact outputs whose quotes are in the text")
    parser.add_argument("--with-stage1-set", action="store_true", help="also train on Stage 1's own rows")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="03_sft.KEY=VALUE")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N valid facts")
    args = parser.parse_args(argv)
    recipe = [f"rows={args.rows}"] + (["grounded"] if args.grounded else []) + (
        ["with_stage1_set"] if args.with_stage1_set else []) + ([f"samples={args.samples}"] if args.rows == "own" else []) + (
        [f"hard_limit={args.hard_limit}"] if args.rows == "own" and args.hard_limit is not None else [])
    try:
        run = finished_run(args.profile, args.overrides, args.run_dir, args.name, recorded=recipe + args.overrides)
    except ExperimentError as error:
        print(error, file=sys.stderr)
        return 2
    exp = experiment_dir(run, args.name)
    profile = load_profile(args.profile, args.overrides, exp.root)
    train = {s.id: s for s in data.load_split(str(exp.toy_data), "train")}
    pool = read_split(run.difficulty_split)

    pool_predictions = read_predictions(run.predictions("stage1", "stage2_pool"))
    if args.rows != "own":
        from morelib.toy import meta_by_id, meta_path

        if not meta_path(exp.toy_data).is_file():
            print(f"{meta_path(exp.toy_data)}: --rows {args.rows} needs the toy's facts (toy data only)", file=sys.stderr)
            return 2
        if args.rows == "expert":
            rows = expert_rows(pool, meta_by_id(exp.toy_data))
        else:
            hard = [r for r in pool if r["difficulty"] == HARD]
            rows = own_rows(pool_predictions, [], {}, grounded=False) + expert_rows(hard, meta_by_id(exp.toy_data))
    else:
        stage2 = profile.settings("05_grpo")
        gen = replace(profile.settings("inference").for_model("stage1"), temperature=stage2.temperature,
                      top_p=stage2.top_p, top_k=stage2.top_k)
        hard = [train[r["id"]] for r in pool if r["difficulty"] == HARD][: args.hard_limit]
        hard_samples = sample_hard(run, exp, hard, gen, args.samples)
        rows = own_rows(pool_predictions, hard_samples,
                        {i: s.text for i, s in train.items()}, args.grounded)
        sampled = {s.id for s in hard}  # with --hard-limit, the room is measured on these and the easy facts
        room = room_for_rl([r for r in pool if r["difficulty"] != HARD or r["id"] in sampled], hard_samples)
        print(f"room for RL: greedy right on {room['pool_pass1']:.1%} of the pool; some of {args.samples} samples "
              f"right on {room['hard_right_in_samples']} of its {room['hard_facts']} hard facts "
              f"(pass@{args.samples} {room['pool_passG']:.1%})", flush=True)
    if args.with_stage1_set:
        rows += [{"id": r["id"], "label": r["label"], "completion": r["completion"]} for r in read_stage1(run.stage1_set)]
    # The experiment is a run directory of its own: the set its SFT trains on is its "Stage 1 set".
    write_jsonl(exp.stage1_set, rows)

    given = {item.split("=", 1)[0].removeprefix("03_sft.") for item in args.overrides}
    settings = profile.settings("03_sft", base_model=str(run.checkpoint("stage1")), model_name="self_trained", label_baselines=False,
                                blank_images_ablation=False, **{k: v for k, v in DEFAULTS.items() if k not in given})
    started = time.time()
    model_dir = sft.train(settings)
    train_s = time.time() - started

    valid = data.load_split(settings.data_dir, "valid")[: args.limit]
    scores = score_on_valid(run, exp, "self_trained", model_dir, profile.settings("inference"), valid)
    steps = read_summary(exp.checkpoint("self_trained"))["global_step"]
    result = {"name": args.name, "variant": f"self-training ({args.rows})", "overrides": recipe + args.overrides,
              "training_rows": len(rows), "steps": steps, "train_s": round(train_s), **scores,
              **({"room_for_rl": room} if args.rows == "own" else {})}
    write_json(exp.result, result, indent=1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
