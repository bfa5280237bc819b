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
# # 04 · Difficulty split: which samples does the Stage 1 model already get right?
#
# Stage 1 (notebooks 01-03) taught the student to reason in six steps on 25% of the training set.
# Stage 2 trains it with reinforcement learning on the other 75%, the **Stage 2 pool**. Not every
# pool sample is equally useful there: a sample the Stage 1 model already answers correctly gives
# GRPO little to learn from, while a sample it gets wrong is where the reward can still move.
#
# So MORE-R1 lets the Stage 1 model answer every pool sample once, with greedy decoding
# (temperature 0), and sorts them:
#
# * **easy**: the parsed answer equals the gold label;
# * **hard**: the answer is wrong, *or it cannot be parsed* into one of the 21 labels.
#
# Progressive Sample-Mixing (notebook 05) then trains on all hard samples in every epoch and mixes
# in a shrinking number of easy ones. This notebook writes `difficulty/split.jsonl`, which 05 reads.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None: the profile's run directory
# each override is one "key=value" string, e.g. ["inference.batch_size=8"]
overrides = []      # settings changed for this run only; the comment above shows the form

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: no bars in notebooks

from transformers.utils import logging as hf_logging

from morelib import difficulty, preflight, report, trace, trace_view
from morelib.config import describe, load_profile, seed_everything
from morelib.inference import backend_for
from morelib.layout import RunLayout, resolve_path

# The profile's settings; with vLLM, the context lengths it leaves unset come from the pre-flight count.
config = load_profile(profile, overrides, run_dir, default_section="04_difficulty", derive=preflight.inference_lengths)
settings = config.settings("04_difficulty")
generation = config.settings("inference").for_model("stage1")
seed_everything(generation.seed)
layout = RunLayout(settings.run_dir)
hf_logging.disable_progress_bar()  # "Loading weights" bars
model_dir = resolve_path(settings.model) if settings.model else layout.checkpoint("stage1")
pool = difficulty.pool_ids(layout)
print("Stage 1 model:", model_dir)
print("Stage 2 pool:", len(pool), "samples, e.g.", pool[:3])
display(describe(generation, ["backend", "batch_size", "max_new_tokens", "temperature", "max_pixels"]))

# %% [markdown]
# ## 1 · The Stage 1 model answers the pool
#
# The model sees exactly what it will see in Stage 2 and in evaluation: the full image, the crop of
# the object, and the basic task description (`morelib.prompts.student_prompt`). Prompts are
# batched with **left padding**, so that every prompt ends in the same column and generation
# appends to all of them at once; greedy decoding makes the answer a property of the model, not of
# a random draw. The label is read by `morelib.answer.parse_label`, the same parser the rewards use.
#
# Predictions are appended batch by batch to `predictions/stage1__stage2_pool.jsonl`: rerunning the
# notebook after an interruption only predicts the samples that are missing. The paper profile
# uses vLLM (`inference.backend: vllm`, as the paper did), one child process per model; `openai`
# points at a `vllm serve` server. Every backend decodes with the same explicit settings.

# %%
model = backend_for(generation, model_dir)
rows = difficulty.split_pool(layout, settings.data_dir, model, generation)
unparsable = sum(r["pred"] is None for r in rows)
print(f"{len(rows)} pool samples split; {unparsable} answers could not be parsed (counted as hard)")
print("written:", layout.difficulty_split)

# %% [markdown]
# ### The traced pool fact: easy or hard?
#
# The pool fact every notebook follows (`trace.json`): the Stage 1 model's greedy answer to it,
# and the part it falls in. Its Stage 1 sibling is not in the pool: the expert annotated it, and
# Stage 1 trained on it.

# %%
traced = trace.load(layout)
traced_row = trace_view.difficulty_row(layout, traced.pool_id) if traced else None
if traced_row is None:
    print("no traced pool fact in this run (notebook 00 writes trace.json)")
else:
    print(f"{traced_row['id']}: gold {traced_row['label']}, Stage 1 answered {traced_row['pred']} "
          f"-> {traced_row['difficulty'].upper()}")

# %% [markdown]
# ## 2 · How many are easy, how many hard?
#
# The paper reports, for Qwen2.5-VL-7B after Stage 1 on the MORE training pool: **2,370 hard** and
# **8,853 easy** samples; 7,417 of the easy ones and 796 of the hard ones are `none`. Most easy
# samples are `none`, the majority class, while two thirds of the hard ones carry a real relation:
# the split concentrates Stage 2 on the relations the model still confuses.
#
# The paper's pool is thus about 3.7 easy samples per hard one (8,853 : 2,370). This ratio is what
# the *raw* variant of notebook 05 trains on every epoch, and what the progressive mix starts to
# move away from. The first row below is the paper's, the second is this run's. On the toy profile
# the model and data are tiny and synthetic, so compare the *shape* (hard share, none ratio per
# part), not the counts; the last line gives this run's easy : hard ratio.

# %%
table = difficulty.comparison_table(rows, profile)
display(table.round(3))
run_easy, run_hard = table.iloc[1]["easy"], table.iloc[1]["hard"]
print(f"easy : hard = {run_easy / run_hard if run_hard else float('inf'):.1f} : 1 in this run, "
      f"{difficulty.REPORTED_COUNTS['easy'] / difficulty.REPORTED_COUNTS['hard']:.1f} : 1 in the paper")

# %% [markdown]
# ## 3 · Which relations are hard?
#
# Per gold label: how many pool samples fell into each part. Labels that need the image and the
# text together (several similar objects, a headline that hides the type) should show a higher
# hard share than `none`.

# %%
labels = difficulty.label_table(rows)
display(labels.round(3))

import matplotlib.pyplot as plt

ax = labels[["easy", "hard"]].plot.barh(stacked=True, figsize=(7, 0.3 * len(labels) + 1.5), color=["#8fbc8f", "#cd5c5c"])
ax.invert_yaxis()
ax.set_xlabel("pool samples")
ax.set_title("Stage 2 pool split by the Stage 1 model (this run)")
plt.tight_layout()
report.save_figure(ax.figure, layout.figures, "04_difficulty_split", formats=("png",))
plt.show()

# %% [markdown]
# Notebook 05 reads `difficulty/split.jsonl` and builds each GRPO epoch from all hard samples plus
# a decaying number of easy ones.

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes.
#
# 1. **Redo the split by hand.** The cell below rebuilds the easy/hard rows from the cached
#    predictions with `difficulty.split_rows` (no model needed) into `again`. Count how many hard
#    samples are hard only because their output could not be parsed (a row's `pred` is None).
#    Should those count as hard?
# 2. **Where the hard relations are.** In the table of section 3, which relation has the highest
#    hard share? Is it one whose toy wording is ambiguous between two relations (`morelib/toy.py`,
#    cues with two labels), or one that needs the picture?
# 3. **Temperature 0.** Why does the split use greedy decoding? What would a sampled answer (as GRPO
#    samples) do to the notion of an "easy" sample?

# %%
from morelib.inference import read_predictions

cached = read_predictions(layout.predictions(*difficulty.POOL_PREDICTIONS))
again = difficulty.split_rows(cached)
print(f"{len(again)} rows rebuilt from {layout.predictions(*difficulty.POOL_PREDICTIONS)} into `again`")
