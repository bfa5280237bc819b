"""Build notebooks/04_difficulty.ipynb: the Stage 1 model splits the Stage 2 pool into easy and hard.

    .venv/bin/python tools/notebooks/04_difficulty.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 04 · Difficulty split: which samples does the Stage 1 model already get right?

Stage 1 (notebooks 01-03) taught the student to reason in six steps on 25% of the training set.
Stage 2 trains it with reinforcement learning on the other 75%, the **Stage 2 pool**. Not every
pool sample is equally useful there: a sample the Stage 1 model already answers correctly gives
GRPO little to learn from, while a sample it gets wrong is where the reward can still move.

So MORE-R1 lets the Stage 1 model answer every pool sample once, with greedy decoding
(temperature 0), and sorts them:

* **easy**: the parsed answer equals the gold label;
* **hard**: the answer is wrong, *or it cannot be parsed* into one of the 21 labels.

Progressive Sample-Mixing (notebook 05) then trains on all hard samples in every epoch and mixes
in a shrinking number of easy ones. This notebook writes `difficulty/split.jsonl`, which 05 reads.
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"   # MORE-layout data (toy: written by 00; paper: the real release)
model_dir = None             # the Stage 1 model; None: checkpoints/stage1 in the run directory
backend = "transformers"     # "transformers" (in-process), "vllm" (offline engine, GPU) or "openai" (a server)
base_url = None              # backend "openai" only: e.g. "http://localhost:8000/v1" (`vllm serve MODEL_DIR`)
batch_size = 32              # samples per generate call (openai: concurrent requests)
max_new_tokens = 384         # longest answer; reasoning + answer must fit
dtype = "auto"               # "auto": bf16 on a GPU that has it, fp32 on CPU
"""),
    ("code", """
import matplotlib.pyplot as plt

from morelib import difficulty
from morelib.config import resolve_path, seed_everything
from morelib.inference import GenerationSettings, make_backend

seed_everything(seed)
run_dir, data_dir = resolve_path(run_dir), resolve_path(data_dir)
model_dir = resolve_path(model_dir) if model_dir else run_dir / "checkpoints" / "stage1"
pool = difficulty.pool_ids(run_dir)
print("Stage 1 model:", model_dir)
print("Stage 2 pool:", len(pool), "samples, e.g.", pool[:3])
"""),
    ("md", """
## 1 · The Stage 1 model answers the pool

The model sees exactly what it will see in Stage 2 and in evaluation: the full image, the crop of
the object, and the basic task description (`morelib.prompts.student_prompt`). Prompts are
batched with **left padding**, so that every prompt ends in the same column and generation
appends to all of them at once; greedy decoding makes the answer a property of the model, not of
a random draw. The label is read by `morelib.answer.parse_label`, the same parser the rewards use.

Predictions are appended batch by batch to `predictions/stage1__stage2_pool.jsonl`: rerunning the
notebook after an interruption only predicts the samples that are missing. On the paper profile
set `backend = "vllm"` (the paper used vLLM) or point `backend = "openai"` at a `vllm serve` server.
"""),
    ("code", """
settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size, seed=seed)
model = make_backend(model_dir, backend, dtype=dtype, base_url=base_url)
rows = difficulty.split_pool(run_dir, data_dir, model, settings)
unparsable = sum(r["pred"] is None for r in rows)
print(f"{len(rows)} pool samples split; {unparsable} answers could not be parsed (counted as hard)")
print("written:", run_dir / "difficulty" / "split.jsonl")
"""),
    ("md", """
## 2 · How many are easy, how many hard?

The paper reports, for Qwen2.5-VL-7B after Stage 1 on the MORE training pool: **2,370 hard** and
**8,853 easy** samples; 7,417 of the easy ones and 796 of the hard ones are `none`. Most easy
samples are `none`, the majority class, while two thirds of the hard ones carry a real relation:
the split concentrates Stage 2 on the relations the model still confuses.

The first row below is the paper's, the second is this run's. On the toy profile the model and
data are tiny and synthetic, so compare the *shape* (hard share, none ratio per part), not the
counts.
"""),
    ("code", """
table = difficulty.comparison_table(rows)
display(table.round(3))
"""),
    ("md", """
## 3 · Which relations are hard?

Per gold label: how many pool samples fell into each part. Labels that need the image and the
text together (several similar objects, a headline that hides the type) should show a higher
hard share than `none`.
"""),
    ("code", """
labels = difficulty.label_table(rows)
display(labels.round(3))

figures = run_dir / "figures"
figures.mkdir(parents=True, exist_ok=True)
ax = labels[["easy", "hard"]].plot.barh(stacked=True, figsize=(7, 0.3 * len(labels) + 1.5), color=["#8fbc8f", "#cd5c5c"])
ax.invert_yaxis()
ax.set_xlabel("pool samples")
ax.set_title("Stage 2 pool split by the Stage 1 model (this run)")
plt.tight_layout()
plt.savefig(figures / "04_difficulty_split.png", dpi=120)
plt.show()
"""),
    ("md", """
Notebook 05 reads `difficulty/split.jsonl` and builds each GRPO epoch from all hard samples plus
a decaying number of easy ones.
"""),
]


if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("04_difficulty")))
