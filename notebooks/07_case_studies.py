# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (morelib)
#     language: python
#     name: morelib
# ---

# %% [markdown]
# # 07 · Case studies: Figure 4
#
# Scores say how often a model is right; cases show *how* it gets there. The paper's Figure 4
# puts one test sample next to the answers of three models: label-only SFT (it answers with a
# bare label), MORE-R1 after Stage 1 (it reasons in six steps), and the complete MORE-R1 (after
# Stage 2). This notebook draws the same figure from the predictions notebook 06 cached, after
# checking whether the reasoning models' reasoning actually supports their answers; then it shows
# a few more cases for teaching, and last, every model's answer to the traced pool fact that the
# notebooks have followed since 00.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None: the profile's run directory
# each override is one "key=value" string, e.g. ["sample_id='test-12'"]
overrides = []      # settings changed for this run only; the comment above shows the form

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: no bars in notebooks

import pandas as pd
from IPython.display import Image, display
from transformers.utils import logging as hf_logging

from morelib import cases, data, evaluation, faithfulness, report, run_models, trace, trace_view
from morelib.config import load_profile, resolve_path, seed_everything
from morelib.layout import RunLayout

config = load_profile(profile, overrides, run_dir, default_section="07_case_studies")
settings = config.settings("07_case_studies")
layout = RunLayout(settings.run_dir)
data_dir = resolve_path(settings.data_dir)
hf_logging.disable_progress_bar()  # "Loading weights" bars

seed_everything(settings.seed)
out_dirs = [layout.figures]
samples = {s.id: s for s in data.load_split(data_dir, settings.split)}
predictions = {}
for key in settings.models:
    path = layout.predictions(key, settings.split)
    if path.exists():
        predictions[key] = {r["id"]: r for r in evaluation.load_predictions(path)}
    else:
        print(f"{key}: SKIPPED, no predictions at {path} (notebook 06 writes them)")
if not predictions:
    raise SystemExit("no predictions for any of the case-study settings.models: run notebook 06 first")
gold = {i: s.label for i, s in samples.items()}
labels_by_model = {key: {i: r["label"] for i, r in rows.items()} for key, rows in predictions.items()}
facts = evaluation.toy_facts(data_dir) or {}  # the toy world's true types; {} on real data
reasoning = [k for k in predictions if run_models.MODELS_BY_KEY.get(k) and run_models.MODELS_BY_KEY[k].prompt == "reasoning"]
print("models:", ", ".join(run_models.display_name(k) for k in predictions))

# %% [markdown]
# ## 1 · Does the reasoning support the answer?
#
# Beyond the paper (`morelib.faithfulness`): a right label after reasoning that says something
# else is luck, not reasoning. Four checks, each its own column:
#
# * `step6_agrees`: Step 6 concludes the label of the answer tag;
# * `names_entity`: Steps 2, 4 and 6 all name the queried entity (not another one of the headline);
# * `types_right`: the object and entity types Step 4 states are the true ones (the toy world knows
#   them; on real data only a gold relation carries them, so a gold `none` fact cannot be judged:
#   it is counted in `not_judged`, not as a pass or a fail);
# * `quotes_in_text`: every phrase the reasoning puts in double quotes occurs in the news text.
#
# An output **supports its answer** when all four hold (`supports_answer`); a right answer whose
# reasoning does not support it is **lucky**. On the toy, `step2_quotes_cue` is the share of
# outputs whose Step 2 quotes the headline's cue words. The rates, per reasoning model, on this
# split:

# %%
if reasoning:
    support = faithfulness.support_table({k: list(predictions[k].values()) for k in reasoning}, samples, facts)
    display(support.rename(index=run_models.display_name).round(3))
else:
    print("no reasoning model among settings.models")

# %% [markdown]
# ## 2 · Picking the sample
#
# Unless `sample_id` is set, the sample is one where MORE-R1 is right **and its reasoning supports
# its answer** by all four checks of section 1; among those, one where the models *disagree*, preferring the others wrong (as in
# the paper's example), then more distinct answers, then a gold relation rather than `none`; ties go
# to the smallest id. The choice is deterministic, so the figure is the same on every run of the
# same predictions.

# %%
available = list(predictions)
prefer = "grpo_progressive" if "grpo_progressive" in available else available[-1]
checks = {i: faithfulness.check(row, samples[i], facts.get(i)) for i, row in predictions[prefer].items()} \
    if prefer in reasoning else {}
supported = {i: check["supports"] for i, check in checks.items()}
chosen = settings.sample_id or cases.pick_case(labels_by_model, gold, models=available, prefer=prefer,
                                                supported=supported)
if chosen is None:
    raise SystemExit("the settings.models share no predicted sample")
if chosen not in samples:
    raise ValueError(f"sample_id {chosen!r} is not in the {settings.split} settings.split")
sample = samples[chosen]
rows = {run_models.display_name(k): predictions[k][chosen] for k in available if chosen in predictions[k]}
lucky = [run_models.display_name(k) for k in available if k in reasoning and chosen in predictions[k]
         and faithfulness.is_lucky(predictions[k][chosen], sample, facts.get(chosen))]
print(cases.describe_case(sample, rows, max_chars=600))
print()
for k in available:  # every reasoning output on screen, checked
    if k in reasoning and chosen in predictions[k]:
        print(f"{run_models.display_name(k)}: {faithfulness.verdict(predictions[k][chosen], sample, facts.get(chosen))}")
if prefer in reasoning and not supported.get(chosen):
    print(f"\nnote: no case has {run_models.display_name(prefer)} right with reasoning that passes every check")
if lucky:
    print("lucky (right label, reasoning does not support it):", ", ".join(lucky))

# %% [markdown]
# ## 3 · Figure 4
#
# Left: the image with the object's box. Right: the headline with the entity highlighted, and the
# gold label. Below: each model's output, framed green when its answer is right and its reasoning
# (if any) supports it, amber when the label is right but the reasoning does not support it
# (lucky), and red when the answer is wrong. Read the reasoning models' steps: do they get the
# object's and the entity's types right (Step 4), keep the right candidates (Step 5), and read the
# relation from the text and the image (Step 6)?

# %%
outputs = {name: (row["text"], row["label"]) for name, row in rows.items()}
paths = report.figure4(sample, outputs, out_dirs, settings.profile, max_chars=settings.max_chars, lucky=lucky)
print("wrote", *paths, sep="\n  ")
display(Image(filename=str(paths[0])))

# %% [markdown]
# ## 4 · More cases
#
# One table row per sample that every model answered, with each model's answer and whether it is
# right; then, for each pattern, how many samples follow it and the first of them, in one line
# (`cases.describe_case(samples[i], rows)` prints a case with each model's reasoning). Where only
# the reasoning models are right, the steps show what the label-only model could not use; where
# every model is wrong, the gold label may need a cue none of them read (or the toy world made the
# case ambiguous on purpose).

# %%
table = cases.case_table(labels_by_model, gold)
ok_columns = [f"{k}_ok" for k in available]
print("share right per model:", table[ok_columns].mean().round(3).to_dict())
for pattern, mask in cases.teaching_patterns(table, available).items():
    print(f"=== {pattern}: {int(mask.sum())} of {len(table)} samples")
    for case_id in list(table.index[mask])[:settings.n_teaching]:
        case = samples[case_id]
        answers = "; ".join(f"{run_models.display_name(k)}: {predictions[k][case_id]['label']}"
                            f" ({'right' if table.loc[case_id, f'{k}_ok'] else 'wrong'})" for k in available)
        print(f"    {case_id}: {case.text} | entity {case.entity} | gold {case.label} | {answers}")

# %% [markdown]
# ## 5 · What Stage 2 changed
#
# A paired gain over Stage 1 is the facts Stage 2 **fixed** (Stage 1 wrong, MORE-R1 right) minus
# those it **broke**, weighed by the F1 they move. Below: how many of each, how many of the fixed
# ones MORE-R1 answers with reasoning that passes every check of section 1 (a fix the answer
# reward paid for the right reason), and the first of those with both models' outputs. On
# toy-full, part of the fixes are outputs Stage 1 left unparsable, which the format reward
# teaches away.

# %%
if {"stage1", "grpo_progressive"} <= set(available):
    changes = cases.changed_answers(table, "stage1", "grpo_progressive")
    fixed = list(table.index[changes["fixed"]])
    fixed_supported = [i for i in fixed if supported.get(i)]
    unparsed_before = [i for i in fixed if predictions["stage1"][i]["label"] is None]
    print(f"fixed {len(fixed)}, broken {int(changes['broken'].sum())} of {len(table)} samples; of the fixed, "
          f"{len(fixed_supported)} with reasoning that passes every check, {len(unparsed_before)} unparsable before")
    for case_id in fixed_supported[:settings.n_teaching]:
        print(cases.describe_case(samples[case_id], {run_models.display_name(k): predictions[k][case_id]
                                                     for k in ("stage1", "grpo_progressive")},
                                  max_chars=settings.max_chars))
else:
    print("settings.models lacks stage1 or grpo_progressive: nothing to compare")

# %% [markdown]
# ## 6 · The traced pool fact, at the end
#
# The pool fact that notebook 00 chose and that the earlier notebooks followed (its Stage 1 answer
# in 03, easy or hard in 04, one GRPO group in 05), answered now by each model of this notebook,
# with greedy decoding and each model's own prompt. It is a training fact, not a test one, so it
# is predicted here (cached in `predictions/<model>__trace.jsonl`), in this process with
# transformers: for one fact, loading a model is quicker than starting an inference engine.

# %%
traced = trace.load(layout)
if traced is None:
    print("no trace.json in this run (notebook 00 writes it)")
else:
    inference = config.settings("inference")
    common = config.settings("common")
    traced_sample = trace_view.load_samples(data_dir, [traced.pool_id])[traced.pool_id]
    base_model = resolve_path(common.base_model) if resolve_path(common.base_model).exists() else common.base_model
    final = evaluation.evaluate_models(
        [traced_sample], layout, base_model, keys=settings.models, split="trace", backend="transformers",
        settings=inference, settings_by_key={k: inference.for_model(k) for k in settings.models})
    verdicts = []
    for key, (row,) in final.items():
        check = faithfulness.check(row, traced_sample, facts.get(traced.pool_id)) if key in reasoning else {}
        verdicts.append({"model": run_models.display_name(key), "answer": row["label"], "right": row["label"] == row["gold"],
                         **{name: check.get(name) for name in faithfulness.CHECKS}, "lucky": check.get("lucky")})
    if verdicts:
        display(pd.DataFrame(verdicts).set_index("model"))
        for key, (row,) in final.items():
            if key in reasoning:
                print(f"{run_models.display_name(key)}: {faithfulness.verdict(row, traced_sample, facts.get(traced.pool_id))}")
        print(cases.describe_case(traced_sample, {run_models.display_name(k): rows[0] for k, rows in final.items()},
                                   max_chars=500))

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes.
#
# 1. **Another case.** Rerun the chain's last step with `--set 07_case_studies.sample_id=test-N`
#    (or set `chosen` by hand above and rerun section 3) for a sample from section 4's patterns.
# 2. **Find a lucky answer.** The cell below lists MORE-R1's lucky answers on this split. Open one
#    with `cases.describe_case` and `faithfulness.problems`: which step went wrong, and would the
#    paper's answer reward have paid for it?
# 3. **Which check fails?** In the table of section 1, which of the four checks fails most often,
#    for which model? On real data a `none` fact's types are unknown, so `types_right` cannot
#    judge it: which of the other three checks still could, and which would a GPT-4o expert's
#    reasoning be most likely to fail?
# 4. **A broken fact.** Take a fact of section 5 that Stage 2 broke (Stage 1 right, MORE-R1
#    wrong) and compare the two outputs with `cases.describe_case`: is it a label decision, or a
#    format the parser refused?

# %%
if prefer in reasoning:
    lucky_ids = [i for i, check in checks.items() if check["lucky"]]
    print(f"{run_models.display_name(prefer)}: {len(lucky_ids)} lucky of {sum(c['correct'] for c in checks.values())} "
          f"right answers; e.g. {lucky_ids[:5]}")

# %% [markdown]
# ## The end of the chain
#
# The run's `figures/` now holds Table 1, Figure 3 and Figure 4 of this run (`make figures`
# copies them into the repository). On the toy profile they show that every stage runs end to end
# and how the stages differ on a toy world, not the paper's numbers; the paper profile writes the
# same files under its run directory.
