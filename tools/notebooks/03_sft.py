"""Build notebooks/03_sft.ipynb: Stage 1 SFT, the label-only baselines and the blank-images ablation.

    .venv/bin/python tools/notebooks/03_sft.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 03 · Stage 1: supervised fine-tuning on the expert's reasoning

Notebook 02 kept the expert answers that have the six-step structure and the right label. Here
the student learns to write them: **supervised fine-tuning** (SFT) on rows of

* **prompt**: the student's view of one sample, the full image, the object crop and the basic
  task description (text, entity, candidate labels), nothing of the expert's hints;
* **completion**: the expert's `<think> Step 1 ... Step 6 </think> <answer>LABEL</answer>`.

Three details matter:

1. **The loss covers the completion only.** The prompt tokens (and the image tokens) are masked
   out (label -100), so the model learns to *answer* prompts, not to write them. TRL's
   `SFTTrainer` does this for prompt-completion rows; `tests/test_sft.py` checks the mask.
2. **The vision encoder and the projector are frozen**, as in the paper: only the language model
   learns. A test checks that no gradient reaches them.
3. **Full fine-tuning or LoRA** (`use_lora`). The paper does not say which; LoRA is inferred
   from its learning rate and ms-swift's default, so it is a parameter.

Training runs as a subprocess under `accelerate launch` (`morelib.sft`): one process on the
toy, N GPUs with DeepSpeed on the paper profile. Its log streams below. Checkpoints go to
`checkpoints/<model>/ckpt` and a rerun resumes from the last one; a finished model is skipped.

The same code trains the paper's **label-only baselines** (Table 1): the completion is the bare
label, on the whole training set (Qwen2.5-VL-SFT) and on the same 25% (Qwen2.5-VL-SFT(25%)).
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"            # MORE-layout data (training images and labels)
base_model = "runs/toy/models/base"   # the model to fine-tune: a local directory or a hub id
train_file = None                     # Stage 1 rows; None = run_dir/sft/stage1.jsonl (notebook 02)
# --- Stage 1 optimisation (paper: 20 epochs, batch 8 x 8 GPUs, lr 1e-4, accumulation 2) ---
epochs = 10
per_device_batch_size = 4             # toy: small batches give the tiny model more updates per second
gradient_accumulation_steps = 1
learning_rate = 1e-3                  # toy: a tiny random model needs a large step
warmup_ratio = 0.05
lr_scheduler_type = "cosine"          # inferred: ms-swift default
weight_decay = 0.0
max_length = 1024                     # tokens, prompt included (paper: 2096)
bf16 = False                          # paper: True (GPU); slower on CPU
gradient_checkpointing = False        # TRL turns it on by default; slower on CPU
use_lora = False                      # paper: not stated (LoRA inferred)
lora_r = 8                            # inferred: ms-swift 3.8 default
lora_alpha = 32                       # inferred: ms-swift 3.8 default
lora_dropout = 0.05
logging_steps = 5
save_strategy = "epoch"
max_steps = -1                        # > 0 stops early (quick checks)
# --- label-only baselines (Table 1) ---
label_baselines = True                # train sft_label_full and sft_label_25
label_epochs = 3                      # paper: not stated (inferred: as Stage 1)
label_batch_size = 8                  # toy: label-only targets learn better with larger batches; paper: 8
# --- ablation: do the images reach the model? ---
blank_images_ablation = True          # also train Stage 1 on blank images (checkpoints/stage1_blank)
ablation_eval_limit = None            # test samples for the ablation check; None = the whole split
eval_batch_size = 32
eval_max_new_tokens = 384
# --- launch ---
num_processes = 1
distributed = "auto"                  # accelerate launch; "none" = plain process; "torchrun"
deepspeed_config = None               # e.g. "configs/deepspeed/zero2.json" on 8 GPUs
"""),
    ("code", """
import json

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from morelib import sft
from morelib.config import resolve_path, seed_everything
from morelib.launch import launch, write_settings

seed_everything(seed)
run_dir = resolve_path(run_dir)
data_dir = resolve_path(data_dir)
base_model_path = resolve_path(base_model)
base_model = str(base_model_path) if base_model_path.exists() else base_model  # else a hub id
train_file = resolve_path(train_file) if train_file else run_dir / "sft" / "stage1.jsonl"
checkpoints = run_dir / "checkpoints"
print("run directory:", run_dir)


def settings_for(name, **overrides):
    values = dict(
        model_path=base_model, data_dir=str(data_dir), output_dir=str(checkpoints / name),
        epochs=epochs, per_device_batch_size=per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        warmup_ratio=warmup_ratio, lr_scheduler_type=lr_scheduler_type, weight_decay=weight_decay,
        max_length=max_length, bf16=bf16, gradient_checkpointing=gradient_checkpointing, use_lora=use_lora,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, seed=seed,
        logging_steps=logging_steps, save_strategy=save_strategy, max_steps=max_steps,
    )
    values.update(overrides)
    return sft.SFTSettings(**values)


def train(name, settings):
    if sft.is_done(settings.output_dir):
        print(f"{name}: finished model in {settings.output_dir}; skipping (delete it to retrain)")
        return
    path = write_settings(settings, checkpoints / name / "settings.json")
    launch("morelib.sft", path, num_processes=num_processes, mixed_precision="bf16" if bf16 else "no",
           deepspeed_config=resolve_path(deepspeed_config) if deepspeed_config else None,
           log_path=checkpoints / name / "train.log", distributed=distributed)
"""),
    ("md", """
## 1 · The training rows

One Stage 1 row: the id of a training sample, its gold label and the kept expert completion. The
prompt and the two images are rebuilt from the data directory when the row is read, so the
SFT file stays small and the images are decoded batch by batch, not all up front.
"""),
    ("code", """
rows = sft.read_completions(train_file)
print(f"{len(rows)} Stage 1 rows in {train_file}")
print(json.dumps(rows[0], indent=1)[:1200])
"""),
    ("md", """
## 2 · Stage 1

`epochs` passes over the kept rows. The loss printed is the mean cross-entropy of the completion
tokens; `mean_token_accuracy` is the share of completion tokens the model predicts right.
"""),
    ("code", """
stage1 = settings_for("stage1", target="reasoning", train_file=str(train_file))
train("stage1", stage1)
"""),
    ("md", """
## 3 · Label-only baselines

The same trainer, but the completion is the bare label (`/per/org/member_of`, `none`): no
reasoning to imitate. `sft_label_full` sees every training sample, `sft_label_25` only the 25%
the expert annotated, so that comparing it with Stage 1 isolates what the reasoning adds.
The answer parser reads a bare label as the answer.
"""),
    ("code", """
split_ids = run_dir / "annotation" / "split_ids.json"
label_runs = {
    "sft_label_full": settings_for("sft_label_full", target="label", epochs=label_epochs,
                                   per_device_batch_size=label_batch_size),
    "sft_label_25": settings_for("sft_label_25", target="label", epochs=label_epochs,
                                 per_device_batch_size=label_batch_size,
                                 ids_file=str(split_ids), ids_key="stage1"),
}
if label_baselines:
    for name, settings in label_runs.items():
        train(name, settings)
"""),
    ("md", """
## 4 · Ablation: Stage 1 with blank images

If the model really uses the images, training and testing it with both images replaced by blank
ones of the same size (same number of image tokens, no content) must score clearly lower. On the
toy, the object's type and whether it is the headline's subject are visible only in the pixels.
"""),
    ("code", """
if blank_images_ablation:
    train("stage1_blank", settings_for("stage1_blank", target="reasoning", train_file=str(train_file),
                                       blank_images=True))
"""),
    ("md", """
## 5 · Loss curves

The Stage 1 loss falls fast at first (the fixed wording of the six steps) and then slowly (the
parts that depend on the sample: the object's look, the types, the label). The label-only runs
have a single short completion, so their loss is on another scale.
"""),
    ("code", """
names = ["stage1", "sft_label_full", "sft_label_25", "stage1_blank"]
figure = sft.plot_loss_curves({n: checkpoints / n for n in names}, run_dir / "figures" / "03_sft_loss")
plt.show()
summary = {n: json.loads((checkpoints / n / sft.DONE_FILE).read_text()) for n in names
           if sft.is_done(checkpoints / n)}
display(pd.DataFrame({n: {"rows": s["rows"], "updates": s["global_step"], "world size": s["world_size"],
                          "final loss": next(e["loss"] for e in reversed(sft.read_log(checkpoints / n)) if "loss" in e)}
                      for n, s in summary.items()}).T)
"""),
    ("md", """
## 6 · Does the model look at the images?

A quick check on the test split (notebook 06 evaluates every model in full): Stage 1 with the
real images against the blank-images model with blank test images. Both use the same greedy
decoding and answer parser as the evaluation.
"""),
    ("code", """
from morelib import data, metrics
from morelib.inference import GenerationSettings, TransformersBackend, predict_to_file

if blank_images_ablation:
    test = data.load_split(data_dir, "test")[:ablation_eval_limit]
    generation = GenerationSettings(max_new_tokens=eval_max_new_tokens, batch_size=eval_batch_size, seed=seed)
    checks = {
        "stage1 (real images)": (checkpoints / "stage1", test, "stage1__test"),
        "stage1_blank (blank images)": (checkpoints / "stage1_blank",
                                        sft.blank_image_samples(test, run_dir / "ablation" / "blank_images"),
                                        "stage1_blank__test_blank"),
    }
    scores = {}
    for name, (model_dir, samples, stem) in checks.items():
        backend = TransformersBackend.from_path(model_dir, dtype="float32" if not bf16 else "bfloat16")
        predictions = predict_to_file(backend, samples, run_dir / "predictions" / f"{stem}.jsonl", generation,
                                      progress=False)
        scores[name] = metrics.score([p["gold"] for p in predictions], [p["label"] for p in predictions])
    display(pd.DataFrame(scores).T)
"""),
    ("md", """
## Next

`04_difficulty` lets the Stage 1 model answer the other 75% of the training set and splits it
into easy and hard samples for Stage 2.
"""),
]

if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("03_sft")))
