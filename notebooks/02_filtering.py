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
# # 02 Filtering: keep only well-formed, correct expert reasoning
#
# Even when told the answer, an expert sometimes skips a step, breaks the tags, or lands on
# the wrong label. The paper removes such replies with a simple regex filter before Stage 1
# fine-tuning (it kept 3,865). A reply is kept only if it
#
# - is `<think> Step 1: ... Step 6: ... </think> <answer>LABEL</answer>` with nothing around it,
# - has the six steps once each and in order, and
# - answers the gold label (a missing leading slash, case and spaces are forgiven).
#
# The last word belongs to `morelib.answer`, the same parser the GRPO format reward and the
# evaluation use, so what Stage 1 learns is exactly what later stages accept.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None: the profile's run directory
# each override is one "key=value" string, e.g. ["n_examples=3"]
overrides = []      # settings changed for this run only; the comment above shows the form

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: no bars in notebooks

from morelib.config import load_profile, resolve_path
from morelib.layout import RunLayout

config = load_profile(profile, overrides, run_dir, default_section="02_filtering")
settings = config.settings("02_filtering")
layout = RunLayout(settings.run_dir)
data_dir = resolve_path(settings.data_dir)

import pandas as pd

from morelib import filtering, trace

results = filtering.build_stage1(layout, data_dir, model=settings.model)
counts = filtering.reason_counts(results)
print(f"sent {len(results)}, kept {counts['kept']}, rejected {len(results) - counts['kept']}")
pd.Series(counts, name="count").sort_values(ascending=False).to_frame()

# %% [markdown]
# ## The traced fact's verdict
#
# The fact that every notebook follows (`trace.json`, chosen in 00): was the expert's reply kept?
# A kept reply becomes one row of the Stage 1 set, with the answer in canonical form.

# %%
traced = trace.load(layout)
traced_result = next((r for r in results if traced and r.id == traced.stage1_id), None)
if traced_result is None:
    print("no traced Stage 1 fact in this run (notebook 00 writes trace.json)")
else:
    print(f"{traced_result.id} (gold {traced_result.label}): "
          + ("KEPT, a row of the Stage 1 set" if traced_result.kept else f"REJECTED: {traced_result.reason}"))

# %% [markdown]
# ## By label
#
# A filter that rejects one relation much more often than the others would skew the cold-start
# set; the keep rate per gold label shows whether it does.

# %%
filtering.label_table(results)

# %% [markdown]
# ## What the rejects look like
#
# Each reason with its first examples (the reply as the expert wrote it).

# %%
for reason in filtering.REASONS:
    examples = [r for r in results if r.reason == reason][:settings.n_examples]
    for r in examples:
        print(f"--- {reason}: {r.id} (gold {r.label})")
        print(r.response)

# %% [markdown]
# ## The Stage 1 SFT set
#
# `sft/stage1.jsonl` holds one row per kept reply: `id`, gold `label`, and the `completion`
# (the reasoning and answer, with the answer in canonical form). The student prompt is not
# stored: notebook 03 rebuilds it from the sample with `morelib.prompts.student_prompt`, the
# basic task description and the two images, exactly as at inference time.

# %%
rows = filtering.read_stage1(layout.stage1_set)
print(f"{len(rows)} rows in {layout.stage1_set}")
print(rows[0]["id"], rows[0]["label"])
print(rows[0]["completion"])
lengths = pd.Series([len(r["completion"]) for r in rows])
print(f"completion length in characters: median {lengths.median():.0f}, max {lengths.max()}")

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes.
#
# 1. **Break the reply.** The cell below takes the traced fact's reply (or any kept one) as
#    `reply`. Break it in a few ways in `variants` and guess the filter's verdict before you run
#    it (`filtering.check_response`): Step 3 removed, Steps 2 and 3 swapped, a seventh step, the
#    label without its leading slash, text after `</answer>`, two answers. Which does the filter
#    forgive, and why is that safe?
# 2. **What the filter cannot see.** A reply can pass every check while its Step 4 names the wrong
#    entity or its Step 6 argues for another label. Write one such reply and check it here; then
#    read how notebooks 06 and 07 measure it (`morelib.faithfulness`).
# 3. **Keep rate by label.** In the table "By label", which relation loses the most replies? With
#    only 25% of each relation annotated, what does a low keep rate do to a rare relation in Stage 1?

# %%
base = traced_result if traced_result is not None and traced_result.kept else next(r for r in results if r.kept)
reply = base.response
variants = {
    # "Step 3 removed": reply.replace("Step 3:", "Note:"),
    # "two answers": reply + f" <answer>{base.label}</answer>",
}
for name, text in variants.items():
    reason, _ = filtering.check_response(text, base.label)
    print(f"{name:24s} -> {'kept' if reason is None else reason}")
