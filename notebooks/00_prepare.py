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
# # 00 · Prepare: the data, the base model, and the task
#
# MORE-R1 solves **multimodal object-entity relation extraction** (MORE): given a news image, one
# *object* in it (a bounding box), a headline, and one *entity* named in the headline, choose one
# of 21 labels, such as `/per/org/member_of` ("the person in the box is a member of the
# organisation named in the text"), or `none`. A label `/A/B/rel` joins an object of type A to an
# entity of type B, so the type pair alone already rules most labels out.
#
# This notebook makes everything the later stages read:
#
# * **toy profile**: it writes the synthetic *toy world* (drawn images, invented headlines) in the
#   exact layout of the MORE release, and builds a tiny, randomly initialised Qwen2.5-VL as the
#   base model; **paper profile**: it only checks the real MORE release in `data_dir`;
# * it validates the data with the same checker that `python -m morelib.data validate` runs;
# * it shows a few samples and the label distribution, and (toy only) how well predictors that
#   see only the text, only the image, or both can do.
#
# All outputs go to the run directory, never into git.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None = the profile's run directory
overrides = []      # change settings for this run, e.g. ["toy_train=600"]

# %%
from morelib.config import load_profile, resolve_path
from morelib.layout import RunLayout
config = load_profile(profile, overrides, run_dir, default_section="00_prepare")
settings = config.settings("00_prepare")
layout = RunLayout(settings.run_dir)
data_dir = resolve_path(settings.data_dir)
run_dir = layout.root

import json
import random
from collections import Counter

import matplotlib.pyplot as plt
import pandas as pd

from morelib import data, labels
from morelib.config import resolve_path, seed_everything

seed_everything(settings.seed)
print("run directory:", run_dir)
print("data directory:", data_dir)

# %% [markdown]
# ## 1 · The data
#
# The MORE release keeps one Python dict literal per line in `txt/{train,valid,test}.txt`
# (tokens, relation, the entity's token span `h`, the object's name and box `t`, the image id),
# the objects of every image in `ent_{split}_dict.pth`, and the images in `img_org/{split}/`.
#
# The toy world follows that layout line for line. Each drawn image holds several shapes; the
# shape's colour and form give the object's type, and the headline's *subject* is drawn solid.
# One image-text pair yields one fact per object and entity, as in MORE, and most of them are
# `none`. The facts behind each line go to `toy_meta.jsonl`, which only the offline expert of the
# toy profile reads: training and evaluation never see it.

# %%
from morelib import toy

if settings.build_toy:
    if settings.overwrite or not (data_dir / "txt" / "train.txt").is_file():
        toy.generate(data_dir, toy.ToyConfig(seed=settings.seed, train=settings.toy_train, valid=settings.toy_valid,
                                             test=settings.toy_test))
        print("wrote the toy world to", data_dir)
    else:
        print("toy data already present (overwrite=True rebuilds it):", data_dir)

# %% [markdown]
# ## 2 · Validation
#
# Every later stage trusts the loader, so the data is checked first: every line must parse, every
# label must be known, the entity span must match the entity's name, the image must exist, the box
# must lie inside the image and not be empty, and the object must be listed in the entity dict.
# Each problem is reported with its file, line and field.

# %%
report = data.validate(data_dir)
print(data.format_report(report))
if not report.ok:
    raise SystemExit(f"{len(report.problems)} problem(s) in {data_dir}; see the list above")

# %% [markdown]
# ## 3 · The base model
#
# The paper fine-tunes `Qwen/Qwen2.5-VL-7B-Instruct`. The toy profile builds a tiny model of the
# same class (`Qwen2_5_VLForConditionalGeneration`) with random weights, a byte-level BPE tokenizer
# trained on the toy text with Qwen's special tokens and chat template, and an image processor
# sized for small images. It is saved in the standard Hugging Face layout, so every later stage
# loads it exactly as it would load the 7B model.

# %%
from morelib import tiny

base_model_path = resolve_path(settings.base_model)
if settings.build_toy:
    if settings.overwrite or not (base_model_path / "config.json").is_file():
        tiny.build_tiny_model(base_model_path, data_dir, seed=settings.seed,
                              settings=tiny.TinySettings(**settings.tiny_model))
        print("built the tiny model in", base_model_path)
    else:
        print("tiny model already present (overwrite=True rebuilds it):", base_model_path)
    tiny_settings = json.loads((base_model_path / "tiny_settings.json").read_text())
    size_mb = sum(p.stat().st_size for p in base_model_path.iterdir()) / 2**20
    print(f"{size_mb:.1f} MB on disk; settings: {tiny_settings}")
else:
    print("base model:", settings.base_model, "(loaded from the hub or a local copy by later stages)")

# %% [markdown]
# ## 4 · A first look
#
# Each sample gives the student two images, the full image and the crop of the object, plus the
# headline and the entity. Below, the object's box is drawn on the full image. Try to guess the
# label before reading it: which object is the headline about, of which type is it, and what does
# the headline say about it and the entity?

# %%
train = data.load_split(data_dir, "train")
rng = random.Random(settings.seed)
# Half relations, half none, so the first look is not all `none`.
related = [s for s in train if s.label != labels.NONE]
unrelated = [s for s in train if s.label == labels.NONE]
shown = rng.sample(related, min(len(related), (settings.n_show + 1) // 2)) + rng.sample(unrelated, min(len(unrelated), settings.n_show // 2))

fig, axes = plt.subplots(len(shown), 2, figsize=(6, 3 * len(shown)), squeeze=False)
for (ax_full, ax_crop), sample in zip(axes, shown):
    full, crop = data.load_images(sample)
    left, top, right, bottom = data.box_to_pixels(sample.box, *full.size)
    ax_full.imshow(full)
    ax_full.add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="black", linewidth=2))
    ax_full.set_title(f"{sample.id}: object {sample.object_name!r}", fontsize=8)
    ax_crop.imshow(crop)
    ax_crop.set_title(f"entity {sample.entity!r} -> {sample.label}", fontsize=8)
    for ax in (ax_full, ax_crop):
        ax.axis("off")
    print(f"{sample.id}: {sample.text}\n    entity {sample.entity!r}, object {sample.object_name!r}, label {sample.label}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5 · Label distribution
#
# As in MORE, `none` is the majority class and many relations are rare. This is why the metric
# is the micro F1 over the non-`none` labels: always answering `none` scores a high accuracy and
# an F1 of zero.

# %%
counts = pd.DataFrame({split: pd.Series(summary.label_counts) for split, summary in report.splits.items()})
counts = counts.reindex(list(report.relations)).fillna(0).astype(int)
counts.loc["total"] = counts.sum()
display(counts)
figures = layout.figures
figures.mkdir(parents=True, exist_ok=True)
ax = counts.drop(index=["total", labels.NONE])["train"].plot.barh(figsize=(6, 5), title=f"train labels other than none ({counts.loc[labels.NONE, 'train']} none)")
ax.invert_yaxis()
plt.tight_layout()
plt.savefig(figures / "00_label_distribution.png", dpi=120)
plt.show()

# %% [markdown]
# ## 6 · Both modalities are needed (toy only)
#
# How much can be read from one side alone? Below, simple predictors are fitted on the train split
# of the toy world's generation facts: one sees only the text side (the headline's wording and the
# entity's type), one only the object (its type and look), one both. The `_f1` rows predict the most
# frequent relation wherever its share passes a threshold tuned for F1 on train. These are numbers
# about the toy world, not about MORE: they show how much room there is above one-sided guessing.

# %%
if settings.build_toy:
    scores = pd.DataFrame(toy.baselines(data_dir)).T[["acc", "precision", "recall", "f1"]] * 100
    display(scores.round(2))
else:
    print("no generation facts for real data; see 06_evaluation for the zero-shot and trained models")

# %% [markdown]
# ## 7 · Pre-flight: will every sequence fit?
#
# A training row is the chat template, both images as image tokens (one per 28 x 28 pixels after
# resizing within `min_pixels` and `max_pixels`), the prompt and the completion. TRL's SFT would
# keep the start of a row longer than `max_length` and cut the completion, that is the answer,
# without a word; vLLM's context would default to the model's 128k. So before any GPU time is
# spent, `morelib.preflight` counts the tokens of every sample of every stage with the model's
# own processor and checks them against each limit (`python -m morelib.preflight --profile P`
# does the same from the shell). On the paper profile it needs the model's processor files.

# %%
from morelib import preflight

status = preflight.run(profile, overrides, run_dir)
print({0: "every stage fits", 1: "A STAGE WOULD TRUNCATE: fix the limits above before training",
       2: "skipped: nothing to count yet"}[status])

# %% [markdown]
# ## Next
#
# `01_annotation` samples 25% of the training set per label and asks the expert for stepwise
# reasoning that ends in the gold label.
