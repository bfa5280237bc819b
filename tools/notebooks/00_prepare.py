"""Build notebooks/00_prepare.ipynb: the toy data, the tiny model, validation, a first look.

    .venv/bin/python tools/notebooks/00_prepare.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 00 · Prepare: the data, the base model, and the task

MORE-R1 solves **multimodal object-entity relation extraction** (MORE): given a news image, one
*object* in it (a bounding box), a headline, and one *entity* named in the headline, choose one
of 21 labels, such as `/per/org/member_of` ("the person in the box is a member of the
organisation named in the text"), or `none`. A label `/A/B/rel` joins an object of type A to an
entity of type B, so the type pair alone already rules most labels out.

This notebook makes everything the later stages read:

* **toy profile**: it writes the synthetic *toy world* (drawn images, invented headlines) in the
  exact layout of the MORE release, and builds a tiny, randomly initialised Qwen2.5-VL as the
  base model; **paper profile**: it only checks the real MORE release in `data_dir`;
* it validates the data with the same checker that `python -m morelib.data validate` runs;
* it shows a few samples and the label distribution, and (toy only) how well predictors that
  see only the text, only the image, or both can do.

All outputs go to the run directory, never into git.
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"           # MORE-layout data (toy: written here; paper: the real release)
base_model = "runs/toy/models/base"  # the base LVLM (toy: built here; paper: a hub id, nothing to build)
build_toy = True                     # write the toy world and build the tiny model
toy_train = 1500                     # toy facts per split (whole image-text pairs are kept)
toy_valid = 300
toy_test = 500
tiny_model = {"hidden_size": 256, "num_attention_heads": 8, "intermediate_size": 1024}  # TinySettings overrides
overwrite = False                    # rebuild the toy data / tiny model even if present
n_show = 4                           # samples drawn for a first look
"""),
    ("code", """
import json
import random
from collections import Counter

import matplotlib.pyplot as plt
import pandas as pd

from morelib import data, labels
from morelib.config import resolve_path, seed_everything

seed_everything(seed)
run_dir, data_dir = resolve_path(run_dir), resolve_path(data_dir)
print("run directory:", run_dir)
print("data directory:", data_dir)
"""),
    ("md", """
## 1 · The data

The MORE release keeps one Python dict literal per line in `txt/{train,valid,test}.txt`
(tokens, relation, the entity's token span `h`, the object's name and box `t`, the image id),
the objects of every image in `ent_{split}_dict.pth`, and the images in `img_org/{split}/`.

The toy world follows that layout line for line. Each drawn image holds several shapes; the
shape's colour and form give the object's type, and the headline's *subject* is drawn solid.
One image-text pair yields one fact per object and entity, as in MORE, and most of them are
`none`. The facts behind each line go to `toy_meta.jsonl`, which only the offline expert of the
toy profile reads: training and evaluation never see it.
"""),
    ("code", """
from morelib import toy

if build_toy:
    if overwrite or not (data_dir / "txt" / "train.txt").is_file():
        toy.generate(data_dir, toy.ToyConfig(seed=seed, train=toy_train, valid=toy_valid, test=toy_test))
        print("wrote the toy world to", data_dir)
    else:
        print("toy data already present (overwrite=True rebuilds it):", data_dir)
"""),
    ("md", """
## 2 · Validation

Every later stage trusts the loader, so the data is checked first: every line must parse, every
label must be known, the entity span must match the entity's name, the image must exist, the box
must lie inside the image and not be empty, and the object must be listed in the entity dict.
Each problem is reported with its file, line and field.
"""),
    ("code", """
report = data.validate(data_dir)
print(data.format_report(report))
if not report.ok:
    raise SystemExit(f"{len(report.problems)} problem(s) in {data_dir}; see the list above")
"""),
    ("md", """
## 3 · The base model

The paper fine-tunes `Qwen/Qwen2.5-VL-7B-Instruct`. The toy profile builds a tiny model of the
same class (`Qwen2_5_VLForConditionalGeneration`) with random weights, a byte-level BPE tokenizer
trained on the toy text with Qwen's special tokens and chat template, and an image processor
sized for small images. It is saved in the standard Hugging Face layout, so every later stage
loads it exactly as it would load the 7B model.
"""),
    ("code", """
from morelib import tiny

base_model_path = resolve_path(base_model)
if build_toy:
    if overwrite or not (base_model_path / "config.json").is_file():
        tiny.build_tiny_model(base_model_path, data_dir, seed=seed, settings=tiny.TinySettings(**tiny_model))
        print("built the tiny model in", base_model_path)
    else:
        print("tiny model already present (overwrite=True rebuilds it):", base_model_path)
    settings = json.loads((base_model_path / "tiny_settings.json").read_text())
    size_mb = sum(p.stat().st_size for p in base_model_path.iterdir()) / 2**20
    print(f"{size_mb:.1f} MB on disk; settings: {settings}")
else:
    print("base model:", base_model, "(loaded from the hub or a local copy by later stages)")
"""),
    ("md", """
## 4 · A first look

Each sample gives the student two images, the full image and the crop of the object, plus the
headline and the entity. Below, the object's box is drawn on the full image. Try to guess the
label before reading it: which object is the headline about, of which type is it, and what does
the headline say about it and the entity?
"""),
    ("code", """
train = data.load_split(data_dir, "train")
rng = random.Random(seed)
# Half relations, half none, so the first look is not all `none`.
related = [s for s in train if s.label != labels.NONE]
unrelated = [s for s in train if s.label == labels.NONE]
shown = rng.sample(related, min(len(related), (n_show + 1) // 2)) + rng.sample(unrelated, min(len(unrelated), n_show // 2))

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
    print(f"{sample.id}: {sample.text}\\n    entity {sample.entity!r}, object {sample.object_name!r}, label {sample.label}")
plt.tight_layout()
plt.show()
"""),
    ("md", """
## 5 · Label distribution

As in MORE, `none` is the majority class and many relations are rare. This is why the metric
is the micro F1 over the non-`none` labels: always answering `none` scores a high accuracy and
an F1 of zero.
"""),
    ("code", """
counts = pd.DataFrame({split: pd.Series(summary.label_counts) for split, summary in report.splits.items()})
counts = counts.reindex(list(report.relations)).fillna(0).astype(int)
counts.loc["total"] = counts.sum()
display(counts)
figures = run_dir / "figures"
figures.mkdir(parents=True, exist_ok=True)
ax = counts.drop(index=["total", labels.NONE])["train"].plot.barh(figsize=(6, 5), title=f"train labels other than none ({counts.loc[labels.NONE, 'train']} none)")
ax.invert_yaxis()
plt.tight_layout()
plt.savefig(figures / "00_label_distribution.png", dpi=120)
plt.show()
"""),
    ("md", """
## 6 · Both modalities are needed (toy only)

How much can be read from one side alone? Below, simple predictors are fitted on the train split
of the toy world's generation facts: one sees only the text side (the headline's wording and the
entity's type), one only the object (its type and look), one both. The `_f1` rows predict the most
frequent relation wherever its share passes a threshold tuned for F1 on train. These are numbers
about the toy world, not about MORE: they show how much room there is above one-sided guessing.
"""),
    ("code", """
if build_toy:
    scores = pd.DataFrame(toy.baselines(data_dir)).T[["acc", "precision", "recall", "f1"]] * 100
    display(scores.round(2))
else:
    print("no generation facts for real data; see 06_evaluation for the zero-shot and trained models")
"""),
    ("md", """
## Next

`01_annotation` samples 25% of the training set per label and asks the expert for stepwise
reasoning that ends in the gold label.
"""),
]

if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("00_prepare")))
