"""Generate notebooks/02_filtering.ipynb: the regex filter and the Stage 1 SFT set."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 02 Filtering: keep only well-formed, correct expert reasoning

Even when told the answer, an expert sometimes skips a step, breaks the tags, or lands on
the wrong label. The paper removes such replies with a simple regex filter before Stage 1
fine-tuning (it kept 3,865). A reply is kept only if it

- is `<think> Step 1: ... Step 6: ... </think> <answer>LABEL</answer>` with nothing around it,
- has the six steps once each and in order, and
- answers the gold label (a missing leading slash, case and spaces are forgiven).

The last word belongs to `morelib.answer`, the same parser the GRPO format reward and the
evaluation use, so what Stage 1 learns is exactly what later stages accept.
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"
model = None          # None: the latest reply per sample, whatever its model
n_examples = 1        # rejected examples shown per reason
"""),
    ("code", """
import pandas as pd

from morelib import filtering

results = filtering.build_stage1(run_dir, data_dir, model=model)
counts = filtering.reason_counts(results)
print(f"sent {len(results)}, kept {counts['kept']}, rejected {len(results) - counts['kept']}")
pd.Series(counts, name="count").sort_values(ascending=False).to_frame()
"""),
    ("md", """
## By label

A filter that rejects one relation much more often than the others would skew the cold-start
set; the keep rate per gold label shows whether it does.
"""),
    ("code", """
filtering.label_table(results)
"""),
    ("md", """
## What the rejects look like

Each reason with its first examples (the reply as the expert wrote it).
"""),
    ("code", """
for reason in filtering.REASONS:
    examples = [r for r in results if r.reason == reason][:n_examples]
    for r in examples:
        print(f"--- {reason}: {r.id} (gold {r.label})")
        print(r.response)
"""),
    ("md", """
## The Stage 1 SFT set

`sft/stage1.jsonl` holds one row per kept reply: `id`, gold `label`, and the `completion`
(the reasoning and answer, with the answer in canonical form). The student prompt is not
stored: notebook 03 rebuilds it from the sample with `morelib.prompts.student_prompt`, the
basic task description and the two images, exactly as at inference time.
"""),
    ("code", """
rows = filtering.read_stage1(run_dir)
print(f"{len(rows)} rows in {filtering.stage1_path(run_dir)}")
print(rows[0]["id"], rows[0]["label"])
print(rows[0]["completion"])
lengths = pd.Series([len(r["completion"]) for r in rows])
print(f"completion length in characters: median {lengths.median():.0f}, max {lengths.max()}")
"""),
]

if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("02_filtering")))
