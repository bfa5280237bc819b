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
#   exact layout of the MORE release, and builds a tiny Qwen2.5-VL, pretrained on a corpus of the toy world that holds no relation
#   labels, as the
#   base model; **paper profile**: it only checks the real MORE release in `data_dir`;
# * it validates the data with the same checker that `python -m morelib.data validate` runs;
# * it explains the toy world's picture code (toy only), shows a few samples and the label
#   distribution beside what the MORE paper publishes, and (toy only) how well predictors that see
#   only the text, only the image, or both can do;
# * it chooses the **traced pair**, two training facts that every later notebook follows from the
#   expert's prompt to the final answers (section 8), and writes it to `trace.json`.
#
# All outputs go to the run directory, never into git. Exercises close the notebook.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None: the profile's run directory
# each override is one "key=value" string, e.g. ["toy_train=600"]
overrides = []      # settings changed for this run only; the comment above shows the form

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: no bars in notebooks

from morelib.config import load_profile, resolve_path
from morelib.layout import RunLayout

config = load_profile(profile, overrides, run_dir, default_section="00_prepare")
settings = config.settings("00_prepare")
layout = RunLayout(settings.run_dir)
data_dir = resolve_path(settings.data_dir)
run_dir = layout.root

import random

import matplotlib.pyplot as plt
import pandas as pd

from morelib import data, labels
from morelib import report as reporting  # `report` below is the data check's report
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
# The toy world follows that layout line for line (section 2 explains its pictures). One
# image-text pair yields one fact per object and entity, as in MORE, and most of them are `none`.
# The facts behind each line go to `toy_meta.jsonl`, which only the offline expert of the toy
# profile (and the reasoning checks of notebooks 06 and 07) read: training never sees it.

# %%
from morelib import toy

if settings.build_toy:
    toy_config = toy.ToyConfig(seed=settings.seed, train=settings.toy_train, valid=settings.toy_valid,
                               test=settings.toy_test, cue_wordings=settings.toy_cue_wordings)
    if settings.overwrite or not (data_dir / "txt" / "train.txt").is_file():
        toy.generate(data_dir, toy_config)
        print("wrote the toy world to", data_dir)
    else:
        try:  # the world an earlier run wrote must be the one these settings ask for
            toy.check_config(data_dir, toy_config)
        except ValueError as mismatch:
            raise SystemExit(f"{mismatch}; rebuild it (--set 00_prepare.overwrite=true, then every later notebook "
                             "again) or use another run directory") from None
        print("toy data already present (overwrite=True rebuilds it):", data_dir)

# %% [markdown]
# ## 2 · The toy world's picture code (toy only)
#
# Every toy image is a light background with two to four shapes, and the picture follows one code
# (`morelib/toy.py`):
#
# * **colour and shape give the object's type**: a red circle is a person (`per`), a blue square an
#   organisation (`org`), a green triangle a location (`loc`), an orange diamond a miscellaneous
#   thing (`misc`: an award, a party, a nation, an event);
# * **solid or hollow tells the headline's subject from a bystander**: the one shape the headline is
#   about is filled; every other shape is only an outline.
#
# The headline says what the subject did with each entity it names ("The favourite *joins* Varo
# Labs"). A fact pairs one shape with one entity. Its label is a relation only when the shape is
# the solid subject *and* the headline's wording means a relation for the subject's type (the
# same words can mean `member_of` for a person, `subsidiary` for an organisation, and nothing for
# a location); every hollow bystander gets `none`. Object names are neutral (`obj_0`, `obj_1`,
# ...), and 70% of headlines call the subject something generic ("the newcomer"), so the type and
# the subject role must be read from the pixels while the relation must be read from the text.
# A few wordings fit two relations of one type pair ("hails from": born there, or living there),
# which leaves some error no model can remove.

# %%
if settings.build_toy:
    types = list(toy.LOOKS)
    box = [(26, 26, 86, 86)]
    fig, axes = plt.subplots(2, len(types), figsize=(1.6 * len(types), 3.6))
    for column, obj_type in enumerate(types):
        look = toy.LOOKS[obj_type]
        for row, (solid, role) in enumerate(((True, "subject"), (False, "bystander"))):
            axes[row, column].imshow(toy.draw_image([obj_type], box, 0 if solid else -1))
            axes[row, column].set_title(f"{obj_type} {role}" + ("" if row else f": {look['colour']} {look['shape']}"),
                                        fontsize=8)
            axes[row, column].axis("off")
    fig.suptitle("toy picture code: colour + shape = type; solid = the headline's subject, hollow = a bystander",
                 fontsize=9)
    plt.tight_layout()
    plt.show()
    display(pd.DataFrame([{"type": t, "colour": look["colour"], "shape": look["shape"],
                           "e.g. as an entity": {"per": "Lena Ortiz", "org": "Varo Labs", "loc": "Mount Selen",
                                                 "misc": "Golden Lyre Award"}[t]}
                          for t, look in toy.LOOKS.items()]).set_index("type"))

# %% [markdown]
# ## 3 · Validation
#
# Every later stage trusts the loader, so the data is checked first: every line must parse, every
# label must be known, the entity span must match the entity's name, the image must exist, the box
# must lie inside the image and not be empty, and the object must be listed in the entity dict.
# Each problem is reported with its file, line and field.

# %%
report = data.validate(data_dir)
print(data.format_report(report))
if not report.ok:
    # The console shows only this line (the list is in the executed notebook): name the first problem.
    hint = "; a half-written toy world is rebuilt with --set 00_prepare.overwrite=true" if settings.build_toy else ""
    raise SystemExit(f"{len(report.problems)} problem(s) in {data_dir}, the first: {report.problems[0]}{hint}")

# %% [markdown]
# ## 4 · The base model
#
# The paper fine-tunes `Qwen/Qwen2.5-VL-7B-Instruct`, a model that can already see colours and
# shapes, describe a picture and copy a name out of a headline, but has never seen the MORE task.
# The toy profile builds a tiny model of the same class (`Qwen2_5_VLForConditionalGeneration`),
# with a byte-level BPE tokenizer carrying Qwen's special tokens and chat template and an image
# processor sized for small images, and then **pretrains** it so that it starts where a real base
# starts (`morelib/pretrain.py`):
#
# * its corpus is the toy world drawn with a seed of its own, so no picture or headline of this
#   run's train, valid or test split is in it;
# * the corpus holds **no relation labels and no six-step reasoning**. Each fact becomes one small
#   task: say what the crop shows (colour and shape give the type; solid is the headline's
#   subject, hollow a bystander), say what the text says about an entity (copy its name and the
#   cue words, give its type), describe the whole picture, or copy the text.
#
# Pretraining is cached by a hash of everything that makes it (corpus and training settings, model
# sizes, seed), outside the run directory: the first run on a machine builds it (a few minutes on
# 2 cores), every later run and other run directories reuse it. The base is then copied into this
# run's `models/base`, in the standard Hugging Face layout, so every later stage loads it exactly as
# it would load the 7B model. Why a random base is not enough: `docs/stage2-on-the-toy.md`.

# %%
from morelib import pretrain

base_model_path = resolve_path(settings.base_model)
pretrain_settings = pretrain.PretrainSettings(**settings.pretrain)
if settings.build_toy:
    if settings.overwrite or not (base_model_path / "config.json").is_file():
        cached = pretrain.cached_base(settings.tiny_model, pretrain_settings, settings.seed, settings.toy_cue_wordings,
                                      settings.pretrain_cache, log_path=layout.log("pretrain"))
        pretrain.install_base(cached, base_model_path)
        print("installed the pretrained base in", base_model_path)
    else:
        print("base model already present (overwrite=True rebuilds it):", base_model_path)
    record = pretrain.read_report(base_model_path)
    size_mb = sum(p.stat().st_size for p in base_model_path.iterdir()) / 2**20
    print(f"{size_mb:.1f} MB on disk; sizes {record['tiny'] or 'default'}; "
          f"pretraining: {record['corpus_rows']} corpus rows, {record['pretrain']['epochs']} epochs, "
          f"{record['train_seconds']:.0f} s of training, once per machine (cache key {record['key']})")
else:
    print("base model:", settings.base_model, "(loaded from the hub or a local copy by later stages)")

# %% [markdown]
# **The corpus, first.** Two rows as the base saw them during pretraining: the two images (not
# drawn here), the text, an instruction, and the answer it learnt to give. None of them names a
# relation.

# %%
if settings.build_toy and record["pretrain"]["epochs"] > 0:
    for row in record["corpus_examples"][:2]:
        print(f"[{row['task']}] text: {row['text']}\n    {row['instruction']}\n    -> {row['answer']}")
    losses = pd.DataFrame(record["loss"])
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.plot(losses["step"], losses["loss"])
    ax.set(xlabel="optimizer step", ylabel="training loss", yscale="log", title="pretraining the toy's base")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# **What the base can and cannot do.** The probe asks held-out corpus facts, before pretraining
# (random weights) and after. `exact` is the share of answers that are exactly right; `type` and
# `role` the share of crop descriptions naming the right type and subject/bystander role; `cue` and
# `entity` the share of entity answers that copy the headline's cue words and the entity's name.
# The last row asks the MORE task itself: the base describes what it sees, but gives no relation
# (`relation` = share of answers holding a relation label). Stage 1 must teach that.

# %%
if settings.build_toy:
    rows = []
    for when in ("before", "after"):
        probe = record["probe"] if when == "after" else record.get("probe_before")
        if not probe:
            continue
        for task, scores in probe["skills"].items():
            rows.append({"base": when, "task": task, **scores})
    display(pd.DataFrame(rows).set_index(["task", "base"]).sort_index().fillna(""))
    print("after pretraining, asked the MORE task:", repr(record["probe"]["examples"]["more_task"]["output"][:160]))

# %% [markdown]
# ## 5 · A first look
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
    reporting.draw_sample(ax_full, ax_crop, sample, f"{sample.id}: object {sample.object_name!r}",
                       f"entity {sample.entity!r} -> {sample.label}")
    print(f"{sample.id}: {sample.text}\n    entity {sample.entity!r}, object {sample.object_name!r}, label {sample.label}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6 · Label distribution, and MORE's
#
# As in MORE, `none` is the majority class and many relations are rare. This is why the metric
# is the micro F1 over the non-`none` labels: always answering `none` scores a high accuracy and
# an F1 of zero.

# %%

counts = pd.DataFrame({split: pd.Series(summary.label_counts) for split, summary in report.splits.items()})
counts = counts.reindex(list(report.relations)).fillna(0).astype(int)
counts.loc["total"] = counts.sum()
display(counts)
ax = counts.drop(index=["total", labels.NONE])["train"].plot.barh(figsize=(6, 5), title=f"train labels other than none ({counts.loc[labels.NONE, 'train']} none)")
ax.invert_yaxis()
plt.tight_layout()
reporting.save_figure(ax.figure, layout.figures, "00_label_distribution", formats=("png",))
plt.show()

# %% [markdown]
# **The real MORE beside this run's data.** What the published papers state about MORE: 21 labels,
# `none` included (MORE-R1, section 4.1); 20,264 facts split 15,486 / 1,742 / 3,036 (MORE-R1,
# section 4.1, as in `docs/paper-notes.md`); 3,559 image-text pairs (the MORE paper, He et al.,
# ACM MM 2023, arXiv version; its proceedings abstract gives 20,136 facts on 3,522 pairs). The
# share of `none` over the whole dataset is not stated; MORE-R1's difficulty split implies that
# 8,213 of the 11,223 facts of its Stage 2 pool are `none` (7,417 easy + 796 hard), about 73%.
# **Per-label counts are not published in either text**, so none are shown here: on the paper
# profile this notebook counts them from the release itself (the table above), which is exact.

# %%
splits = {split: summary for split, summary in report.splits.items()}
facts = sum(summary.facts for summary in splits.values())
ours = {
    "labels (none included)": len(report.relations),
    "facts": facts,
    "train / valid / test": " / ".join(f"{splits[s].facts:,}" if s in splits else "-" for s in ("train", "valid", "test")),
    "image-text pairs (images)": sum(summary.images for summary in splits.values()),
    "none share": f"{counts.loc[labels.NONE, :].sum() / facts:.0%} of all facts",
    "per-label counts": "the table above",
}
published = {
    "labels (none included)": 21,
    "facts": 20264,
    "train / valid / test": "15,486 / 1,742 / 3,036",
    "image-text pairs (images)": "3,559 (MORE paper, arXiv)",
    "none share": "not stated; 73% of MORE-R1's Stage 2 pool",
    "per-label counts": "not published; count them from the release",
}
this_run = "this run: toy world" if settings.build_toy else "this run: the release in data_dir (counted)"
display(pd.DataFrame({"MORE, as published": published, this_run: ours}))

# %% [markdown]
# ## 7 · Both modalities are needed (toy only)
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
# ## 8 · The traced pair: two facts every notebook follows
#
# One fact cannot show every stage: the expert writes reasoning only for the Stage 1 quarter of
# the training set (notebooks 01 to 03), while the easy/hard split and GRPO use only the other
# three quarters, the Stage 2 pool (04 and 05). So the notebooks follow **two facts of one
# picture**:
#
# * the **Stage 1 fact**, a fact with a relation in the quarter the expert annotates: its expert
#   prompt beside the student's prompt (01), the expert's reply (01) and the filter's verdict (02),
#   and what the Stage 1 model writes for it after training on it (03);
# * the **pool fact**, a fact of the Stage 2 pool, from the same image and headline where one
#   exists: the Stage 1 model's answer to a fact it never saw (03), easy or hard (04), one GRPO
#   group of completions with their rewards and advantages (05), and each model's final answer
#   with a check of its reasoning (07).
#
# Same picture, two questions: the expert's worked example for one, the student's own attempts at
# its neighbour. The choice is deterministic (`morelib.trace.choose`; 01's stratified split is
# computed here the same way 01 computes it); set `trace_id` (a training id, in either part) to
# follow another fact. It is written to `trace.json` in the run directory.

# %%
from morelib import trace, trace_view
from morelib.splits import stratified_split

annotation = config.settings("01_annotation")
annotated_split = train if annotation.split == "train" else data.load_split(data_dir, annotation.split)
stage1_ids, pool_ids = stratified_split(annotated_split, annotation.fraction, annotation.seed)
traced = trace.choose(annotated_split, stage1_ids, pool_ids, settings.trace_id)
trace.write(layout, traced)
facts_by_id = toy.meta_by_id(data_dir) if toy.meta_path(data_dir).is_file() else {}
pair = trace_view.load_samples(data_dir, traced.ids)
print(f"chosen by {traced.how}; written to {layout.trace}\n")
for role, sample_id in (("Stage 1 fact", traced.stage1_id), ("pool fact", traced.pool_id)):
    print(role + ":", trace_view.describe(pair[sample_id], facts_by_id.get(sample_id)))

fig, axes = plt.subplots(2, 2, figsize=(5.5, 5.5), squeeze=False)
for (ax_full, ax_crop), (role, sample_id) in zip(axes, (("Stage 1 fact", traced.stage1_id), ("pool fact", traced.pool_id))):
    sample = pair[sample_id]
    reporting.draw_sample(ax_full, ax_crop, sample, f"{role} {sample_id}: full image", f"crop; entity {sample.entity!r}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 9 · Pre-flight: will every sequence fit?
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
# ## Exercises
#
# Each one runs in seconds on what this notebook has already loaded.
#
# 1. **Label four facts by hand.** The cell below draws four validation facts (seeded). Look at the
#    images and the headline, write your label for each into `my_labels`, and run it again: it
#    scores you with the benchmark's metric. Which cue did you need from the picture, which from
#    the text?
# 2. **Image tokens.** Each image becomes one LLM token per 28 x 28 pixels after resizing within
#    `min_pixels` and `max_pixels`. Change `max_pixels` in the second cell (try 3136, 50176 and
#    1003520) and count again: what happens to a 112-pixel toy image, and to a 1280 x 720 news
#    photo? Why does the paper profile set a limit at all?
# 3. **Explain a none.** In the traced pair's image, pick a hollow shape: what is its label with
#    either entity, and why can a text-only model not know that?

# %%
exercise_rng = random.Random(settings.seed + 1)
valid = data.load_split(data_dir, "valid")
to_label = exercise_rng.sample(valid, 4)
my_labels = {}  # e.g. {"valid-12": "/per/org/member_of", ...}; labels: morelib.labels.RELATIONS
fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
for ax, sample in zip(axes, to_label):
    full, _ = data.load_images(sample)
    left, top, right, bottom = data.box_to_pixels(sample.box, *full.size)
    ax.imshow(full)
    ax.add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="black", linewidth=2))
    ax.set_title(sample.id, fontsize=8)
    ax.axis("off")
    print(f"{sample.id}: {sample.text}  | entity: {sample.entity}")
plt.tight_layout()
plt.show()
if my_labels:
    from morelib import metrics

    guessed = [s for s in to_label if s.id in my_labels]
    print({s.id: (my_labels[s.id], s.label) for s in guessed})
    print(metrics.score([s.label for s in guessed], [labels.normalize_label(my_labels[s.id]) for s in guessed]))
else:
    print("fill in my_labels and run this cell again")

# %%
from morelib import vision_tokens

inference = config.settings("inference")
max_pixels_to_try = inference.max_pixels or 12845056  # None = the processor's own limit (16,384 tokens)
min_pixels_to_try = inference.min_pixels or 3136
for what, (width, height) in {"toy image, 112 x 112": (112, 112), "news photo, 1280 x 720": (1280, 720)}.items():
    tokens = vision_tokens.image_tokens(width, height, min_pixels=min_pixels_to_try, max_pixels=max_pixels_to_try)
    print(f"{what}: {tokens} image tokens at min_pixels={min_pixels_to_try}, max_pixels={max_pixels_to_try}")

# %% [markdown]
# ## Next
#
# `01_annotation` samples 25% of the training set per label and asks the expert for stepwise
# reasoning that ends in the gold label.
