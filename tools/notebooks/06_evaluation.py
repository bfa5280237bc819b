"""Build notebooks/06_evaluation.ipynb: every model on the test split, Table 1, Figure 3.

    .venv/bin/python tools/notebooks/06_evaluation.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 06 · Evaluation: Table 1 and Figure 3

Every model the run produced answers the test split, with the same inference function the
difficulty split used (greedy decoding, the same prompt, the same answer parser):

| key | model | paper row |
|---|---|---|
| `zero_shot` | the base model, no training | Qwen2.5-VL-7B(-zs) |
| `sft_label_full` | label-only SFT on the whole training set | Qwen2.5-VL-SFT |
| `sft_label_25` | label-only SFT on the Stage 1 25% | Qwen2.5-VL-SFT(25%) |
| `stage1` | Stage 1: SFT on the expert's stepwise reasoning | MORE-R1(Stage 1) |
| `grpo_progressive` | Stage 2 with Progressive Sample-Mixing | MORE-R1 |
| `grpo_raw`, `grpo_balanced`, `grpo_hard_only` | the Stage 2 ablation variants | Figure 3 |

Predictions are cached in `run_dir/predictions/<model>__test.jsonl` (a rerun reuses them, a
killed run resumes). A model that is missing is skipped with a note, so this notebook runs on
whatever the run holds.

**The metric** is the MORE benchmark's: accuracy over all samples, and micro precision, recall
and F1 with `none` as the negative class (precision = right relation answers / relation answers,
recall = right relation answers / gold relations). F1 is the headline: always answering `none`
gets a high accuracy and an F1 of 0. An output with no parsable label counts as wrong, and the
tables say how many there were.
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"           # MORE-layout data (the test split is read from here)
base_model = "runs/toy/models/base"  # the zero-shot model: a local directory or a hub id
split = "test"
models = ["zero_shot", "sft_label_full", "sft_label_25", "stage1", "grpo_progressive",
          "grpo_raw", "grpo_balanced", "grpo_hard_only"]
backend = "transformers"             # "transformers" | "vllm" | "openai" (then set base_url)
base_url = None                      # an OpenAI-compatible server, e.g. vllm serve
batch_size = 32                      # samples per generate call (openai: concurrent requests)
max_new_tokens = 384                 # longest output; reasoning + answer must fit (paper: 1024)
max_new_tokens_by_model = {"zero_shot": 64, "sft_label_full": 32, "sft_label_25": 32}
                                     # per-model budgets: label-only SFT answers a label (< 16 tokens);
                                     # toy zero-shot is a random model that never stops. Paper: {}
limit = None                         # evaluate only the first N samples (None: the whole split)
n_boot = 1000                        # bootstrap resamples for the F1 interval
figures_dir = "figures"              # a second copy of the figures (the repo's figures/); None: run_dir only
"""),
    ("code", """
import dataclasses

from IPython.display import Image, display

from morelib import data, evaluation, metrics, report
from morelib.config import resolve_path, seed_everything
from morelib.inference import GenerationSettings

seed_everything(seed)
run_dir, data_dir = resolve_path(run_dir), resolve_path(data_dir)
base_model_path = resolve_path(base_model)
base_model = base_model_path if base_model_path.exists() else base_model  # else a hub id
out_dirs = [run_dir / "figures"] + ([resolve_path(figures_dir)] if figures_dir else [])
samples = data.load_split(data_dir, split)
if limit:
    samples = samples[:limit]
print(f"{len(samples)} {split} samples from {data_dir}; figures go to {[str(d) for d in out_dirs]}")
"""),
    ("md", """
## 1 · Predictions

Greedy decoding (temperature 0), as the paper evaluates. The reasoning models need room for
their six steps; label-only SFT models answer with a bare label, so `max_new_tokens_by_model`
can give them a shorter budget (on the toy profile also the zero-shot model, a random network
that would otherwise ramble to the limit; the paper profile gives every model the same budget).
"""),
    ("code", """
settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size, seed=seed)
per_model = {key: dataclasses.replace(settings, max_new_tokens=n) for key, n in (max_new_tokens_by_model or {}).items()}
predictions = evaluation.evaluate_models(samples, run_dir, base_model, keys=models, split=split, backend=backend,
                                         settings=settings, base_url=base_url, settings_by_key=per_model)
if not predictions:
    raise SystemExit("no model and no cached predictions in this run: run notebooks 03 and 05 first")
"""),
    ("md", """
## 2 · Scores

Besides the paper's four numbers: the macro-F1 over the relations present in the test split
(every relation counts the same, however rare), and a 95% bootstrap interval for F1 (resampling
the test samples). The toy test split is small, so differences inside the interval are noise.
"""),
    ("code", """
scores = {key: evaluation.score_rows(rows, n_boot=n_boot, seed=seed) for key, rows in predictions.items()}
table = evaluation.scores_table(scores)
(run_dir / "metrics").mkdir(parents=True, exist_ok=True)
table.to_csv(run_dir / "metrics" / f"scores_{split}.csv")
shown = table.copy()
for column in ["acc", "precision", "recall", "f1", "macro_f1", "f1_low", "f1_high"]:
    shown[column] = (100 * shown[column]).round(2)
display(shown)
"""),
    ("md", """
## 3 · Table 1

The paper's rows, labelled *reported (paper)*, next to this run's rows, labelled with the
profile. They never share a row: on the toy profile a tiny random model trained on synthetic
data stands in for Qwen2.5-VL-7B on MORE, so only the *order* of the rows can be compared, and
only loosely.
"""),
    ("code", """
table1 = report.table1(report.run_rows(scores), profile)
for path in report.write_table1(table1, out_dirs, profile=profile):
    print("wrote", path)
display(table1)
"""),
    ("md", """
## 4 · Figure 3: the Stage 2 variants

The paper compares four ways to mix easy and hard samples in Stage 2: all easy samples every
epoch (*raw*), as many easy as hard every epoch (*1:1*), hard samples only, and the progressive
schedule (1:1 first, then half as many easy samples each epoch). It reports that *raw* loses
recall (too many easy `none` samples) and *hard only* loses accuracy and precision (too few).
"""),
    ("code", """
variant_scores = {variant: scores[key] for variant, key in report.VARIANT_KEYS.items() if key in scores}
if variant_scores:
    paths = report.figure3(variant_scores, out_dirs, profile)
    print("wrote", *paths, sep="\\n  ")
    display(Image(filename=str(paths[0])))
else:
    print("no Stage 2 variant was evaluated: run notebook 05 first")
"""),
    ("md", """
## 5 · Per label, and what is confused with what

Micro F1 is dominated by the frequent relations. The per-label F1 shows which relations each
model learned; the confusion matrix (rows: gold, columns: answer, colour: share of the row)
shows where the errors go, for instance relations answered `none`, or relations confused
within the same type pair.
"""),
    ("code", """
compared = [k for k in ("sft_label_full", "stage1", "grpo_progressive") if k in predictions] or list(predictions)
per_label = {evaluation.display_name(k): metrics.per_label([r["gold"] for r in predictions[k]], [r["label"] for r in predictions[k]])
             for k in compared}
for name, frame in per_label.items():
    frame.to_csv(run_dir / "metrics" / f"per_label_{split}__{name.replace(' ', '_')}.csv")
paths = report.figure_per_label_f1(per_label, out_dirs, profile)
display(Image(filename=str(paths[0])))

focus = compared[-1]  # MORE-R1 when it exists
rows = predictions[focus]
matrix = metrics.confusion([r["gold"] for r in rows], [r["label"] for r in rows])
paths = report.figure_confusion(matrix, out_dirs, profile, title=evaluation.display_name(focus))
display(Image(filename=str(paths[0])))
"""),
    ("md", """
## 6 · Outputs that could not be parsed

Every unparsable output is a wrong answer. A few of them show what went wrong: a reasoning
model cut off by `max_new_tokens` before `<answer>`, a label outside the 21, or several answers.
"""),
    ("code", """
for key, rows in predictions.items():
    bad = [r for r in rows if r["label"] is None]
    print(f"{key}: {len(bad)} of {len(rows)} unparsable")
    for r in bad[:2]:
        print("   ", r["id"], repr(r["text"][-160:]))
"""),
    ("md", """
## Next

`07_case_studies` draws Figure 4: one test sample, the answers of label-only SFT, Stage 1 and
MORE-R1 side by side, and more cases where the models differ.
"""),
]

if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("06_evaluation")))
