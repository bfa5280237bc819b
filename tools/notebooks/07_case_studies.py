"""Build notebooks/07_case_studies.ipynb: Figure 4 and a few teaching cases.

    .venv/bin/python tools/notebooks/07_case_studies.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 07 · Case studies: Figure 4

Scores say how often a model is right; cases show *how* it gets there. The paper's Figure 4
puts one test sample next to the answers of three models: label-only SFT (it answers with a
bare label), MORE-R1 after Stage 1 (it reasons in six steps), and the complete MORE-R1 (after
Stage 2). This notebook draws the same figure from the predictions notebook 06 cached, and then
shows a few more cases for teaching: samples every model gets right, none gets right, or only
one model gets right.
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"   # MORE-layout data (the images and texts of the cases)
split = "test"
models = ["sft_label_full", "stage1", "grpo_progressive"]  # Figure 4's three models, in order
sample_id = None             # the Figure 4 sample, e.g. "test-17"; None: picked automatically
n_teaching = 1               # cases shown per pattern (all right, all wrong, only one model right, ...)
max_chars = 1400             # longest output text shown per model in Figure 4
figures_dir = "figures"      # a second copy of Figure 4 (the repo's figures/); None: run_dir only
"""),
    ("code", """
from IPython.display import Image, display

from morelib import data, evaluation, report
from morelib.config import resolve_path, seed_everything

seed_everything(seed)
run_dir, data_dir = resolve_path(run_dir), resolve_path(data_dir)
out_dirs = [run_dir / "figures"] + ([resolve_path(figures_dir)] if figures_dir else [])
samples = {s.id: s for s in data.load_split(data_dir, split)}
predictions = {}
for key in models:
    path = evaluation.predictions_path(run_dir, key, split)
    if path.exists():
        predictions[key] = {r["id"]: r for r in evaluation.load_predictions(path)}
    else:
        print(f"{key}: SKIPPED, no predictions at {path} (notebook 06 writes them)")
if not predictions:
    raise SystemExit("no predictions for any of the case-study models: run notebook 06 first")
gold = {i: s.label for i, s in samples.items()}
labels_by_model = {key: {i: r["label"] for i, r in rows.items()} for key, rows in predictions.items()}
print("models:", ", ".join(evaluation.display_name(k) for k in predictions))
"""),
    ("md", """
## 1 · Picking the sample

Unless `sample_id` is set, the sample is chosen where the models *disagree*, preferring one
that MORE-R1 gets right while the others do not (as in the paper's example), then more distinct
answers, then a gold relation rather than `none`; ties go to the smallest id. The choice is
deterministic, so the figure is the same on every run of the same predictions.
"""),
    ("code", """
available = list(predictions)
prefer = "grpo_progressive" if "grpo_progressive" in available else available[-1]
chosen = sample_id or report.pick_case(labels_by_model, gold, models=available, prefer=prefer)
if chosen is None:
    raise SystemExit("the models share no predicted sample")
if chosen not in samples:
    raise ValueError(f"sample_id {chosen!r} is not in the {split} split")
sample = samples[chosen]
rows = {evaluation.display_name(k): predictions[k][chosen] for k in available if chosen in predictions[k]}
print(report.describe_case(sample, rows, max_chars=600))
"""),
    ("md", """
## 2 · Figure 4

Left: the image with the object's box. Right: the headline with the entity highlighted, and the
gold label. Below: each model's output, framed green when its answer is right and red when not.
Read the reasoning models' steps: do they get the object's and the entity's types right (Step 4),
keep the right candidates (Step 5), and read the relation from the text and the image (Step 6)?
"""),
    ("code", """
outputs = {name: (row["text"], row["label"]) for name, row in rows.items()}
paths = report.figure4(sample, outputs, out_dirs, profile, max_chars=max_chars)
print("wrote", *paths, sep="\\n  ")
display(Image(filename=str(paths[0])))
"""),
    ("md", """
## 3 · More cases

One table row per sample that every model answered, with each model's answer and whether it is
right; then, for each pattern, a case. Where only the reasoning models are right, the steps
show what the label-only model could not use; where every model is wrong, the gold label may
need a cue none of them read (or the toy world made the case ambiguous on purpose).
"""),
    ("code", """
table = report.case_table(labels_by_model, gold)
ok_columns = [f"{k}_ok" for k in available]
print("share right per model:", table[ok_columns].mean().round(3).to_dict())
for pattern, mask in report.teaching_patterns(table, available).items():
    print(f"\\n=== {pattern}: {int(mask.sum())} of {len(table)} samples")
    for case_id in list(table.index[mask])[:n_teaching]:
        case_rows = {evaluation.display_name(k): predictions[k][case_id] for k in available}
        print(report.describe_case(samples[case_id], case_rows))
"""),
    ("md", """
## The end of the chain

`figures/` now holds Table 1, Figure 3 and Figure 4 of this run. On the toy profile they show
that every stage runs end to end and how the stages differ on a toy world, not the paper's
numbers; the paper profile writes the same files under its run directory.
"""),
]

if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("07_case_studies")))
