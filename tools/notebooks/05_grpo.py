"""Build notebooks/05_grpo.ipynb: Stage 2 GRPO with Progressive Sample-Mixing and its ablations.

    .venv/bin/python tools/notebooks/05_grpo.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 05 · Stage 2: GRPO with Progressive Sample-Mixing

Stage 1 taught the student *how* to reason: six steps, then an answer, copied from the expert.
Stage 2 lets it practise on the rest of the training set and rewards what comes out, so it
learns *which* reasoning gets the label right. This is reinforcement learning with
**GRPO** (Group Relative Policy Optimization, from DeepSeekMath):

1. for each prompt, sample a *group* of G completions from the current model
   (temperature 0.8 in the paper);
2. score each completion with the rewards below;
3. the **advantage** of a completion is its reward minus the group's mean, divided by the
   group's standard deviation: better than its siblings means pushed up, worse means pushed
   down. No value network is needed;
4. update the model with a PPO-style clipped objective (clip range epsilon = 0.2), reusing each
   group for mu = 2 updates, plus a small KL penalty (beta = 0.001) that keeps the model near the
   **reference model**, here the Stage 1 model.

A group whose completions all get the same reward has zero advantage everywhere: it teaches
nothing. The log tracks the share of such groups (`frac_reward_zero_std`).
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"          # MORE-layout data (the Stage 2 pool is part of its train split)
stage1_model = None                 # None = run_dir/checkpoints/stage1 (notebook 03); also the KL reference
variants = ["progressive", "raw", "balanced", "hard_only"]  # progressive = MORE-R1; the toy runs all four (Figure 3)
# --- the data mix ---
epochs = 4
gamma = 0.5                         # easy share decay of Progressive Sample-Mixing
max_hard_samples = 8                # toy: a seeded subset keeps CPU runs short; paper: None (all)
max_easy_samples = 16               # toy: a seeded subset of the easy pool (> max_hard so raw != balanced); paper: None
# --- rewards ---
reward_names = ["format", "length", "answer"]
reward_weights = [1.0, 1.0, 1.0]    # inferred: the paper's Eq. 5 as a plain sum
length_threshold = 450              # characters (paper: 1024; toy reasoning is about 400-575 characters)
length_requires_format = False      # guard, not in the paper: length reward only for well-formed outputs
# --- GRPO ---
loss_type = "grpo"                  # TRL 1.16 defaults to "dapo"
beta = 0.001
epsilon = 0.2
num_iterations = 2                  # mu: updates per generation batch
num_generations = 4                 # group size G (paper: not stated, 8 inferred)
temperature = 0.8
top_p = 0.9                         # inferred: ms-swift default
top_k = 50                          # inferred: ms-swift default
max_completion_length = 256         # tokens (paper: 1024); toy reasoning is about 190 tokens
# --- optimisation ---
learning_rate = 2e-5                # paper: 1e-6 (the toy runs a few dozen steps)
per_device_batch_size = 8           # completions per device per step (paper: 16)
gradient_accumulation_steps = 1
warmup_ratio = 0.05
lr_scheduler_type = "cosine"        # inferred: ms-swift default
bf16 = False                        # paper: True (GPU)
model_dtype = None                  # None = bf16 weights with bf16 (fine under DeepSpeed's fp32 master weights), else fp32
gradient_checkpointing = False
max_steps = -1                      # > 0 stops early (quick checks)
save_steps = 50
# --- launch ---
num_processes = 1
distributed = "auto"                # accelerate launch; "none" = plain process; "torchrun"
deepspeed_config = None             # e.g. "configs/deepspeed/zero3.json" on the paper profile
use_vllm = False                    # paper profile: vLLM rollouts (GPU only)
vllm_mode = "colocate"              # or "server" (a separate `trl vllm-serve`)
vllm_gpu_memory_utilization = 0.3
"""),
    ("code", """
import pandas as pd
from IPython.display import display

from morelib import grpo
from morelib.config import resolve_path, seed_everything
from morelib.launch import launch, write_settings

seed_everything(seed)
run_dir = resolve_path(run_dir)
print("run directory:", run_dir)


def settings_for(variant):
    return grpo.GRPOSettings(
        run_dir=str(run_dir), data_dir=str(resolve_path(data_dir)), variant=variant,
        model_path=str(resolve_path(stage1_model)) if stage1_model else None,
        epochs=epochs, gamma=gamma, max_hard_samples=max_hard_samples, max_easy_samples=max_easy_samples,
        reward_names=list(reward_names), reward_weights=list(reward_weights), length_threshold=length_threshold,
        length_requires_format=length_requires_format, loss_type=loss_type, beta=beta, epsilon=epsilon,
        num_iterations=num_iterations, num_generations=num_generations, temperature=temperature, top_p=top_p,
        top_k=top_k, max_completion_length=max_completion_length, learning_rate=learning_rate,
        per_device_batch_size=per_device_batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
        warmup_ratio=warmup_ratio, lr_scheduler_type=lr_scheduler_type, bf16=bf16, model_dtype=model_dtype,
        gradient_checkpointing=gradient_checkpointing, max_steps=max_steps, save_steps=save_steps,
        use_vllm=use_vllm, vllm_mode=vllm_mode, vllm_gpu_memory_utilization=vllm_gpu_memory_utilization, seed=seed,
    )


all_settings = {variant: settings_for(variant) for variant in variants}
"""),
    ("md", """
## 1 · The three rewards

Each completion gets three rewards, each 0 or 1, summed (the paper's Eq. 5 was lost in
extraction; a plain sum is inferred, so the weights are parameters):

* **format**: `<think> Step 1: ... Step 6: ... </think> <answer>LABEL</answer>`, the six steps
  once each and in order, one answer tag holding one of the 21 labels, nothing after it;
* **length**: the output is longer than a threshold (paper: 1,024 characters), which pays for
  thorough reasoning rather than a bare label;
* **answer**: the label, read by the same parser as evaluation, equals the gold label.

Each reward can be gamed on its own (padding for length, several answer tags, a label outside
the 21): `morelib.rewards` is tested against these. Two optional guards, off by default to keep
the paper's behaviour, pay length or answer only to well-formed outputs.

Here are the rewards on a few hand-written outputs:
"""),
    ("code", """
from morelib.rewards import get_reward_funcs

steps = " ".join(f"Step {i}: ..." for i in range(1, 7))
examples = {
    "well formed, right": f"<think> {steps} </think> <answer>/per/misc/awarded</answer>",
    "well formed, wrong": f"<think> {steps} </think> <answer>none</answer>",
    "bare label": "/per/misc/awarded",
    "two answers": f"<think> {steps} </think> <answer>none</answer><answer>/per/misc/awarded</answer>",
    "padded after the answer": f"<think> {steps} </think> <answer>/per/misc/awarded</answer>" + " pad" * 300,
}
funcs = get_reward_funcs(reward_names, min_chars=length_threshold, length_requires_format=length_requires_format)
gold = ["/per/misc/awarded"] * len(examples)
table = pd.DataFrame({name: f(list(examples.values()), label=gold) for name, f in zip(reward_names, funcs)},
                     index=list(examples))
display(table)
"""),
    ("md", """
## 2 · Progressive Sample-Mixing

Notebook 04 split the remaining 75% of the training set by the Stage 1 model's answer: *easy*
(right) and *hard* (wrong). Training only on hard samples makes GRPO forget what it already does
well; training on everything wastes rollouts on groups that are all right, which carry no
advantage. MORE-R1 mixes them and shifts the mix over time: every epoch uses all hard samples,
epoch 1 adds as many easy ones (1:1), and the easy share halves each epoch (gamma = 0.5). The easy
draw keeps the none / non-none proportion of the original training set.

The ablations of Figure 3 change only the easy share: **raw** (all easy samples every epoch),
**balanced** (1:1 every epoch), **hard_only** (no easy samples). The epochs are built in advance,
seeded, saved to `grpo/<variant>/mix.json`, and trained as one pass in order, so a resumed run
sees exactly the same rows.
"""),
    ("code", """
plans = {}
for variant, settings in all_settings.items():
    _, plans[variant] = grpo.prepare_mix(settings, num_processes)
display(pd.concat(plans, names=["variant"]))
"""),
    ("md", """
## 3 · Training

Each variant runs as its own subprocess through `accelerate launch` (`morelib.grpo`), with TRL's
`GRPOTrainer`. Every paper setting is passed explicitly, because TRL's defaults differ
(loss type `dapo`, bf16 and gradient checkpointing on). The toy generates rollouts with
transformers; the paper profile uses vLLM (`use_vllm`, colocated with training or as a server).
Checkpoints go to `checkpoints/grpo_<variant>/ckpt`, and a rerun resumes from the last one; a
finished variant is skipped.
"""),
    ("code", """
for variant, settings in all_settings.items():
    if grpo.is_done(settings.out_dir):
        print(f"{variant}: finished model in {settings.out_dir}; skipping (delete it to retrain)")
        continue
    settings_path = write_settings(settings, settings.work_dir / "settings.json")
    launch("morelib.grpo", settings_path, num_processes=num_processes,
           mixed_precision="bf16" if bf16 else "no", deepspeed_config=deepspeed_config,
           log_path=settings.work_dir / "train.log", distributed=distributed)
"""),
    ("md", """
## 4 · Reward curves

One panel per variant: the mean answer, format and length rewards of each generation batch
(rolling mean over 3), with the ends of the mix epochs in grey. On the paper's data the answer
reward climbs while format stays near 1. On the toy, a few dozen steps with a tiny model
show the machinery, not the paper's effect: read the curves as "it trains", not as Figure 3.
"""),
    ("code", """
import matplotlib.pyplot as plt

figure = grpo.plot_reward_curves(run_dir, variants, run_dir / "figures" / "05_grpo_rewards")
plt.show()
summary = grpo.summarize(run_dir, variants)
summary.to_csv(run_dir / "grpo" / "summary.csv")
display(summary.round(3))
"""),
    ("md", """
`frac_reward_zero_std` is the share of groups that taught nothing. Easy samples the model
already gets right tend to produce such groups, which is one reason the progressive mix spends
less of its budget on them as training goes on.

## Next

`06_evaluation` evaluates every variant on the test split (Table 1, Figure 3).
"""),
]

if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("05_grpo")))
