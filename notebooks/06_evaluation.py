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
# # 06 · Evaluation: Table 1 and Figure 3
#
# Every model the run produced answers the test split, with the same inference function the
# difficulty split used (greedy decoding, the same prompt, the same answer parser):
#
# | key | model | paper row |
# |---|---|---|
# | `zero_shot` | the base model, no training | Qwen2.5-VL-7B(-zs) |
# | `sft_label_full` | label-only SFT on the whole training set | Qwen2.5-VL-SFT |
# | `sft_label_25` | label-only SFT on the Stage 1 25% | Qwen2.5-VL-SFT(25%) |
# | `stage1` | Stage 1: SFT on the expert's stepwise reasoning | MORE-R1(Stage 1) |
# | `grpo_progressive` | Stage 2 with Progressive Sample-Mixing | MORE-R1 |
# | `grpo_raw`, `grpo_balanced`, `grpo_hard_only` | the Stage 2 ablation variants | Figure 3 |
#
# **The zero-shot row is not the paper's measurement.** The paper's Qwen2.5-VL-7B(-zs) row is taken
# from another work (REMOTE, its reference [16]), with that work's prompt and parser. Ours asks
# the base model with our label prompt (`morelib/templates/label_task_description.txt`) and reads
# the answer with our strict parser, where an output that is not one of the 21 labels counts as
# wrong. The two rows share a name, not a method; on the toy, the base model is a random network
# and answers nothing parsable.
#
# Predictions are cached in `run_dir/predictions/<model>__test.jsonl` (a rerun reuses them, a
# killed run resumes). A model that is missing is skipped with a note, so this notebook runs on
# whatever the run holds.
#
# **The metric** is the MORE benchmark's: accuracy over all samples, and micro precision, recall
# and F1 with `none` as the negative class (precision = right relation answers / relation answers,
# recall = right relation answers / gold relations). F1 is the headline: always answering `none`
# gets a high accuracy and an F1 of 0. An output with no parsable label counts as wrong, and the
# tables say how many there were.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None: the profile's run directory
# each override is one "key=value" string, e.g. ["limit=100", "inference.batch_size=8"]
overrides = []      # settings changed for this run only; the comment above shows the form

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: no bars in notebooks

from IPython.display import Image, display
from transformers.utils import logging as hf_logging

from morelib import data, evaluation, faithfulness, metrics, preflight, report, run_models
from morelib.config import describe, load_profile, seed_everything
from morelib.layout import FAITHFULNESS, FIGURE3_GAINS, FIGURE3_SEEDS, PAIRED_F1, RunLayout, resolve_path

# The profile's settings; with vLLM, the context lengths it leaves unset come from the pre-flight count.
config = load_profile(profile, overrides, run_dir, default_section="06_evaluation", derive=preflight.inference_lengths)
settings = config.settings("06_evaluation")
generation = config.settings("inference")
seed_everything(settings.seed)
layout = RunLayout(settings.run_dir)
hf_logging.disable_progress_bar()  # "Loading weights" bars
base_model = resolve_path(settings.base_model) if resolve_path(settings.base_model).exists() else settings.base_model
out_dirs = [layout.figures]
samples = data.load_split(settings.data_dir, settings.split)
if settings.limit:
    samples = samples[:settings.limit]
print(f"{len(samples)} {settings.split} samples from {settings.data_dir}; figures go to {layout.figures}")
display(describe(generation, ["backend", "batch_size", "max_new_tokens", "max_new_tokens_by_model", "temperature"]))

# %% [markdown]
# ## 1 · Predictions
#
# Greedy decoding (temperature 0), as the paper evaluates, with the same explicit settings on
# every backend. The reasoning models get the reasoning prompt; the zero-shot and label-only SFT
# models get the label prompt (answer with the label only), as the paper's baselines answer
# directly. Label-only models need few tokens, so `max_new_tokens_by_model` can give them a shorter
# budget (on the toy also the zero-shot model, a random network that would ramble to the limit).

# %%
# Stage 2 variants trained again with notebook 05's extra_seeds (checkpoints/grpo_<variant>_seed<N>)
keys = list(settings.models) + evaluation.seed_runs(layout, [k for k in settings.models if k.startswith("grpo_")])
per_model = {key: generation.for_model(key) for key in keys}
predictions = evaluation.evaluate_models(samples, layout, base_model, keys=keys, split=settings.split,
                                         settings=generation, settings_by_key=per_model)
if not predictions:
    raise SystemExit("no model and no cached predictions in this run: run notebooks 03 and 05 first")

# %% [markdown]
# ## 2 · Scores
#
# Besides the paper's four numbers: the macro-F1 over the relations present in the test split
# (every relation counts the same, however rare), and a 95% bootstrap interval for each metric.
#
# **The bootstrap resamples image-text pairs, not facts** (beyond the paper, which gives no
# intervals). A MORE image-text pair holds several facts (about 5.7 on average; the toy 2 to 8):
# every object of the image against every entity of the headline. They share one image and one
# text, so a model that misreads the headline tends to get all of them wrong together. Resampling
# the facts one by one treats them as independent and makes the intervals too narrow; resampling
# whole pairs (a *cluster bootstrap*, by `img_id`) keeps each pair's facts together.
# `tests/test_metrics.py` shows the difference: six copies of each fact, resampled fact by fact,
# give an interval far narrower than the facts themselves.

# %%
pairs = evaluation.image_text_pairs(samples)  # sample id -> img_id, the resampling unit
print(f"{len(samples)} facts in {len(set(pairs.values()))} image-text pairs")
scores = {key: evaluation.score_rows(rows, n_boot=settings.n_boot, seed=settings.seed, clusters=pairs)
          for key, rows in predictions.items()}
table = evaluation.scores_table(scores)
layout.metrics.mkdir(parents=True, exist_ok=True)
table.to_csv(layout.scores(settings.split))
shown = table.copy()
for column in ["acc", "precision", "recall", "f1", "macro_f1", "f1_low", "f1_high"]:
    shown[column] = (100 * shown[column]).round(2)
display(shown)

# %% [markdown]
# ## 3 · Table 1
#
# The paper's rows, labelled *reported (paper)*, next to this run's rows, labelled with the
# profile. They never share a row: on the toy profile a tiny pretrained model trained on synthetic
# data stands in for Qwen2.5-VL-7B on MORE, so only the *order* of the rows can be compared, and
# only loosely.

# %%
table1 = report.table1(report.run_rows(scores), settings.profile)
for path in report.write_table1(table1, out_dirs, profile=settings.profile):
    print("wrote", path)
display(table1)

# %% [markdown]
# ### Gains over Stage 1, paired
#
# Two models' separate intervals overlap even when one is reliably better, because most of the
# noise comes from which test samples were drawn. The paired bootstrap scores both models on the
# same resampled image-text pairs in every draw, so its 95% interval is that of the gain itself.
# A gain whose interval lies above zero is one the test split can resolve. These intervals cover
# the test split's noise only: each model here is one training run.

# %%
paired = report.paired_gains(predictions, baseline="stage1", n_boot=settings.n_boot, seed=settings.seed,
                             clusters=pairs)
if len(paired):
    report.write_csv(paired, out_dirs, PAIRED_F1)
    display(paired.round(2))

# %% [markdown]
# ## 4 · Figure 3: the Stage 2 variants
#
# The paper compares four ways to mix easy and hard samples in Stage 2: all easy samples every
# epoch (*raw*), as many easy as hard every epoch (*1:1*), hard samples only, and the progressive
# schedule (1:1 first, then half as many easy samples each epoch). It reports that *raw* loses
# recall (too many easy `none` samples) and *hard only* loses accuracy and precision (too few).
#
# The paper's Figure 3 compares the variants with one another; every variant starts from the same
# Stage 1 model, so the question a bar must answer is *what did this variant add to Stage 1?* Here:
#
# * the **dashed line** of each metric is Stage 1; the number over a bar is its gain over Stage 1;
# * a **bar** is the variant's mean over its training seeds (the main run and notebook 05's
#   `extra_seeds`), each seed a dot; with one seed it is that one run;
# * an **error bar** is the paired 95% bootstrap interval of that gain (Stage 1 and every seed
#   scored on the same resampled image-text pairs). An error bar that crosses the dashed line is
#   a gain the test split cannot tell from zero.
#
# The interval covers the test split's noise, not training's: a GRPO run with another seed samples
# other rollouts (and, on the toy, another subset of the pool) and ends elsewhere. The dots and
# the table below show that spread. Read a difference between two variants as real only when it is
# larger than the spread of each. The numbers are in `figure3_gains.csv`.

# %%
seed_keys = {variant: [k for k in [key, *evaluation.seed_runs(layout, [key])] if k in predictions]
             for variant, key in report.VARIANT_KEYS.items() if key in predictions}
seed_scores = {variant: [scores[k] for k in keys] for variant, keys in seed_keys.items()}
if seed_keys and "stage1" in predictions:
    gains = report.variant_gains(predictions, seed_keys, baseline="stage1", n_boot=settings.n_boot,
                                 seed=settings.seed, clusters=pairs)
    report.write_csv(gains, out_dirs, FIGURE3_GAINS)
    paths = report.figure3(gains, out_dirs, settings.profile, seed_scores=seed_scores)
    print("wrote", *paths, sep="\n  ")
    display(Image(filename=str(paths[0])))
    display(gains.set_index(["variant", "metric"]).round(1))
    if max(len(v) for v in seed_scores.values()) > 1:
        spread = report.seed_spread(seed_scores, baseline=scores.get("stage1"))
        report.write_csv(spread.reset_index(), out_dirs, FIGURE3_SEEDS)
        display(spread.round(2))
else:
    print("no Stage 2 variant, or no Stage 1 to compare it with, was evaluated: run notebooks 03 and 05 first")

# %% [markdown]
# ## 5 · Per label, and what is confused with what
#
# Micro F1 is dominated by the frequent relations. The per-label F1 shows which relations each
# model learned; the confusion matrix (rows: gold, columns: answer, colour: share of the row)
# shows where the errors go, for instance relations answered `none`, or relations confused
# within the same type pair.

# %%
compared = [k for k in ("sft_label_full", "stage1", "grpo_progressive") if k in predictions] or list(predictions)
per_label = {run_models.display_name(k): metrics.per_label([r["gold"] for r in predictions[k]], [r["label"] for r in predictions[k]])
             for k in compared}
for name, frame in per_label.items():
    frame.to_csv(layout.per_label(settings.split, name))
paths = report.figure_per_label_f1(per_label, out_dirs, settings.profile)
display(Image(filename=str(paths[0])))

focus = compared[-1]  # MORE-R1 when it exists
rows = predictions[focus]
matrix = metrics.confusion([r["gold"] for r in rows], [r["label"] for r in rows])
paths = report.figure_confusion(matrix, out_dirs, settings.profile, title=run_models.display_name(focus))
display(Image(filename=str(paths[0])))

# %% [markdown]
# ## 6 · Outputs that could not be parsed
#
# Every unparsable output is a wrong answer. A few of them show what went wrong: a reasoning
# model cut off by `max_new_tokens` before `<answer>`, a label outside the 21, or several answers.

# %%
for key, rows in predictions.items():
    bad = [r for r in rows if r["label"] is None]
    print(f"{key}: {len(bad)} of {len(rows)} unparsable")
    for r in bad[:2]:
        print("   ", r["id"], repr(r["text"][-160:]))

# %% [markdown]
# ## 7 · Does the reasoning support the answer?
#
# Beyond the paper: a right label after reasoning that concludes something else is luck. For each
# reasoning model, each check on its own (`morelib.faithfulness`): Step 6 concludes the answer's
# label (`step6_agrees`); Steps 2, 4 and 6 name the queried entity (`names_entity`); Step 4 states
# the true object and entity types (`types_right`); every phrase in double quotes occurs in the news
# text (`quotes_in_text`). An output supports its answer when all four hold (`supports_answer`), and
# a right answer that is not supported is lucky. Names and quotes are compared as word tokens, so
# MORE's tokenised text (`Obama 's`) matches ordinary spelling. The true types come from the toy
# world, or on real data from a gold relation: a gold `none` fact cannot be judged there, and
# `not_judged` counts it instead of calling it a pass or a fail. On the toy, two more columns say
# where reasoning goes wrong: the share of outputs whose Step 2 quotes the headline's cue words,
# and the share of *wrong* answers that misquote it. When most wrong answers misquote the cue,
# the model's errors are copying errors (it reasons from words that are not in the text), not
# decisions (`docs/stage2-on-the-toy.md`).

# %%
reasoning_models = [k for k in predictions if run_models.MODELS_BY_KEY.get(k) and
                    run_models.MODELS_BY_KEY[k].prompt == "reasoning"]
by_id = {s.id: s for s in samples}
meta = evaluation.toy_facts(settings.data_dir)
support = faithfulness.support_table({k: predictions[k] for k in reasoning_models}, by_id, meta)
if len(support):
    report.write_csv(support.rename_axis("model").reset_index(), out_dirs, FAITHFULNESS)
    display(support.round(3))

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes on the cached predictions and works on any run that has a Stage 1 model.
# The cell below computes nothing until you fill it in: guess first.
#
# 1. **Always `none`.** Set `always_none = True` to score a model that answers `none` to every
#    fact. Why is its accuracy so high, and why is F1 the paper's headline metric?
# 2. **Facts or pairs?** Set `compare_units = True`: it gives Stage 1's F1 interval twice, once
#    resampling facts and once resampling image-text pairs (section 2). Which is wider? How many
#    facts does a pair hold on this test split, and why would facts of one pair be right or wrong
#    together?
# 3. **What a lucky answer is worth.** Section 7 calls a right answer lucky when its reasoning
#    does not support it. Set `lucky_counted_wrong = True` to rescore Stage 1 with its lucky
#    answers counted as wrong. How far does F1 fall? Would the paper's answer reward (notebook 05)
#    see any difference between the two scores?
# 4. **Read the confusion matrix** (section 5, no code). Which gold relation loses the most facts
#    to `none`, and which to another relation? Do the confusions stay within one type pair
#    (`/per/loc/...` for `/per/loc/...`)? What does that say about Step 4 and Step 6 of the
#    reasoning?

# %%
always_none = False
compare_units = False
lucky_counted_wrong = False

gold_labels = [s.label for s in samples]
if always_none:
    print("always none:", {k: round(100 * float(v), 2) for k, v in metrics.score(gold_labels, ["none"] * len(gold_labels)).items()
                           if k in ("acc", "precision", "recall", "f1")})
if "stage1" in predictions and (compare_units or lucky_counted_wrong):
    rows = predictions["stage1"]
    gold, pred = [r["gold"] for r in rows], [r["label"] for r in rows]
    if compare_units:
        for unit, clusters in (("facts", None), ("image-text pairs", [pairs[r["id"]] for r in rows])):
            ci = metrics.bootstrap_f1_ci(gold, pred, n=settings.n_boot, seed=settings.seed, clusters=clusters)
            print(f"Stage 1 F1 {100 * ci['f1']:.1f}, resampling {unit}: [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]")
        print(f"{len(rows)} facts in {len({pairs[r['id']] for r in rows})} pairs")
    if lucky_counted_wrong:
        lucky = [bool(faithfulness.check(r, by_id[r["id"]], (meta or {}).get(r["id"]))["lucky"]) for r in rows]
        strict = [None if is_lucky else label for label, is_lucky in zip(pred, lucky)]  # None: scored as wrong
        print(f"Stage 1: {sum(lucky)} lucky answers; F1 {100 * metrics.score(gold, pred)['f1']:.1f} as scored, "
              f"{100 * metrics.score(gold, strict)['f1']:.1f} with the lucky ones counted wrong")

# %% [markdown]
# ## Next
#
# `07_case_studies` draws Figure 4: one test sample, the answers of label-only SFT, Stage 1 and
# MORE-R1 side by side, and more cases where the models differ; it ends with every model's answer
# to the traced pool fact followed since notebook 00.
