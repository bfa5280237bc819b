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
# Stage 2). This notebook draws the same figure from the predictions notebook 06 cached, and then
# shows a few more cases for teaching: samples every model gets right, none gets right, or only
# one model gets right.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None = the profile's run directory
overrides = []      # change settings for this run, e.g. ["sample_id='test-12'"]

# %%
from morelib.config import load_profile, resolve_path
from morelib.layout import RunLayout
config = load_profile(profile, overrides, run_dir, default_section="07_case_studies")
settings = config.settings("07_case_studies")
layout = RunLayout(settings.run_dir)
data_dir = resolve_path(settings.data_dir)
run_dir = layout.root

from IPython.display import Image, display

from morelib import data, evaluation, report
from morelib.config import resolve_path, seed_everything

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
print("models:", ", ".join(evaluation.display_name(k) for k in predictions))

# %% [markdown]
# ## 1 · Picking the sample
#
# Unless `sample_id` is set, the sample is chosen where the models *disagree*, preferring one
# that MORE-R1 gets right while the others do not (as in the paper's example), then more distinct
# answers, then a gold relation rather than `none`; ties go to the smallest id. The choice is
# deterministic, so the figure is the same on every run of the same predictions.

# %%
available = list(predictions)
prefer = "grpo_progressive" if "grpo_progressive" in available else available[-1]
chosen = settings.sample_id or report.pick_case(labels_by_model, gold, models=available, prefer=prefer)
if chosen is None:
    raise SystemExit("the settings.models share no predicted sample")
if chosen not in samples:
    raise ValueError(f"sample_id {chosen!r} is not in the {settings.split} settings.split")
sample = samples[chosen]
rows = {evaluation.display_name(k): predictions[k][chosen] for k in available if chosen in predictions[k]}
print(report.describe_case(sample, rows, max_chars=600))

# %% [markdown]
# ## 2 · Figure 4
#
# Left: the image with the object's box. Right: the headline with the entity highlighted, and the
# gold label. Below: each model's output, framed green when its answer is right and red when not.
# Read the reasoning models' steps: do they get the object's and the entity's types right (Step 4),
# keep the right candidates (Step 5), and read the relation from the text and the image (Step 6)?

# %%
outputs = {name: (row["text"], row["label"]) for name, row in rows.items()}
paths = report.figure4(sample, outputs, out_dirs, settings.profile, max_chars=settings.max_chars)
print("wrote", *paths, sep="\n  ")
display(Image(filename=str(paths[0])))

# %% [markdown]
# ## 3 · More cases
#
# One table row per sample that every model answered, with each model's answer and whether it is
# right; then, for each pattern, a case. Where only the reasoning models are right, the steps
# show what the label-only model could not use; where every model is wrong, the gold label may
# need a cue none of them read (or the toy world made the case ambiguous on purpose).

# %%
table = report.case_table(labels_by_model, gold)
ok_columns = [f"{k}_ok" for k in available]
print("share right per model:", table[ok_columns].mean().round(3).to_dict())
for pattern, mask in report.teaching_patterns(table, available).items():
    print(f"\n=== {pattern}: {int(mask.sum())} of {len(table)} samples")
    for case_id in list(table.index[mask])[:settings.n_teaching]:
        case_rows = {evaluation.display_name(k): predictions[k][case_id] for k in available}
        print(report.describe_case(samples[case_id], case_rows))

# %% [markdown]
# ## The end of the chain
#
# `figures/` now holds Table 1, Figure 3 and Figure 4 of this run. On the toy profile they show
# that every stage runs end to end and how the stages differ on a toy world, not the paper's
# numbers; the paper profile writes the same files under its run directory.
