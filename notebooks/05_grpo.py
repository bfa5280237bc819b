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
# # 05 · Stage 2: GRPO with Progressive Sample-Mixing
#
# Stage 1 taught the student *how* to reason: six steps, then an answer, copied from the expert.
# Stage 2 lets it practise on the rest of the training set and rewards what comes out, so it
# learns *which* reasoning gets the label right. This is reinforcement learning with
# **GRPO** (Group Relative Policy Optimization, from DeepSeekMath):
#
# 1. for each prompt, sample a *group* of G completions from the current model
#    (temperature 0.8 in the paper);
# 2. score each completion with the rewards below;
# 3. the **advantage** of a completion is its reward minus the group's mean, divided by the
#    group's standard deviation: better than its siblings means pushed up, worse means pushed
#    down. No value network is needed;
# 4. update the model with a PPO-style clipped objective (clip range epsilon = 0.2), reusing each
#    group for mu = 2 updates, plus a small KL penalty (beta = 0.001) that keeps the model near the
#    **reference model**, here the Stage 1 model.
#
# A group whose completions all get the same reward has zero advantage everywhere: it teaches
# nothing. The log tracks the share of such groups (`frac_reward_zero_std`).

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None = the profile's run directory
overrides = []      # change settings for this run, e.g. ["gamma=0.25", "variants=[progressive]"]

# %%
import pandas as pd
from IPython.display import display

from morelib import grpo, report
from morelib.config import describe, load_settings, seed_everything, with_changes
from morelib.launch import launch, write_settings
from morelib.layout import RunLayout
from morelib.training import is_done

settings = load_settings("05_grpo", profile, overrides, run_dir)
if settings.use_vllm and settings.vllm_max_model_length is None:
    # vLLM's context would default to the model's 128k: take what the pre-flight count needs instead.
    from morelib.preflight import derived_overrides

    overrides = list(overrides) + derived_overrides(profile, overrides, run_dir)
    settings = load_settings("05_grpo", profile, overrides, run_dir)
seed_everything(settings.seed)
layout = RunLayout(settings.run_dir)
all_settings = {variant: with_changes(settings, variant=variant) for variant in settings.variants}
display(describe(settings, ["variants", "mix_epochs", "gamma", "max_hard_samples", "max_easy_samples",
                            "num_generations", "temperature", "learning_rate", "beta", "epsilon", "num_iterations",
                            "length_threshold", "max_completion_length", "use_vllm"]))

# %% [markdown]
# ## 1 · The three rewards
#
# Each completion gets three rewards, each 0 or 1, summed (the paper's Eq. 5 combines them; a
# plain sum is inferred, so the weights are parameters; see `docs/paper-notes.md`):
#
# * **format**: `<think> Step 1: ... Step 6: ... </think> <answer>LABEL</answer>`, the six steps
#   once each and in order, one answer tag holding one of the 21 labels, nothing after it;
# * **length**: the output is longer than a threshold (paper: 1,024 characters), which pays for
#   thorough reasoning rather than a bare label;
# * **answer**: the label, read by the same parser as evaluation, equals the gold label.
#
# Each reward can be gamed on its own (padding for length, several answer tags, a label outside
# the 21): `morelib.rewards` is tested against these. Two optional guards, off by default to keep
# the paper's behaviour, pay length or answer only to well-formed outputs.
#
# Here are the rewards on a few hand-written outputs:

# %%
from morelib.rewards import get_reward_funcs

steps = " ".join(f"Step {i}: ..." for i in range(1, 7))
examples = {
    "well formed, right": f"<think> {steps} </think> <answer>/per/misc/awarded</answer>",
    "well formed, wrong": f"<think> {steps} </think> <answer>none</answer>",
    "bare label": "/per/misc/awarded",
    "two answers": f"<think> {steps} </think> <answer>none</answer><answer>/per/misc/awarded</answer>",
    "padded after the answer": f"<think> {steps} </think> <answer>/per/misc/awarded</answer>" + " pad" * 300,
}
funcs = get_reward_funcs(settings.reward_names, min_chars=settings.length_threshold,
                         length_requires_format=settings.length_requires_format)
gold = ["/per/misc/awarded"] * len(examples)
table = pd.DataFrame({name: f(list(examples.values()), label=gold) for name, f in zip(settings.reward_names, funcs)},
                     index=list(examples))
display(table)

# %% [markdown]
# ## 2 · Progressive Sample-Mixing
#
# Notebook 04 split the remaining 75% of the training set by the Stage 1 model's answer: *easy*
# (right) and *hard* (wrong). Training only on hard samples makes GRPO forget what it already does
# well; training on everything wastes rollouts on groups that are all right, which carry no
# advantage. MORE-R1 mixes them and shifts the mix over time: every epoch uses all hard samples,
# epoch 1 adds as many easy ones (1:1), and the easy share halves each epoch (gamma = 0.5). The easy
# draw keeps the none / non-none proportion of the original training set. The per-epoch count,
# round(n_hard * gamma^(e-1)), is our reading of the paper's Eq. 6 (`docs/paper-notes.md`).
#
# The ablations of Figure 3 change only the easy share: **raw** (all easy samples every epoch),
# **balanced** (1:1 every epoch), **hard_only** (no easy samples). The epochs are built in advance,
# seeded, saved to `grpo/<variant>/mix.json`, and trained as one pass in order, so a resumed run
# sees exactly the same rows.

# %%
plans = {}
for variant, variant_settings in all_settings.items():
    _, plans[variant] = grpo.prepare_mix(variant_settings, settings.num_processes)
display(pd.concat(plans, names=["variant"]))

# %% [markdown]
# ## 3 · Training
#
# Each variant runs as its own subprocess through `accelerate launch` (`morelib.grpo`), with TRL's
# `GRPOTrainer`. Every paper setting is passed explicitly, because TRL's defaults differ
# (loss type `dapo`, bf16 and gradient checkpointing on). The toy generates rollouts with
# transformers; the paper profile uses vLLM (`use_vllm`, colocated with training or as a server).
# Checkpoints go to `checkpoints/grpo_<variant>/ckpt`, and a rerun resumes from the last one; a
# finished variant is skipped.

# %%
for variant, variant_settings in all_settings.items():
    if is_done(variant_settings.model_dir):
        print(f"{variant}: finished model in {variant_settings.model_dir}; skipping (delete it to retrain)")
        continue
    # The trainer's own output goes to grpo/<variant>/train.log; the notebook shows one line per mix epoch.
    settings_path = write_settings(variant_settings, variant_settings.work_dir / "settings.json")
    launch("morelib.grpo", settings_path, num_processes=settings.num_processes,
           mixed_precision="bf16" if settings.bf16 else "no", deepspeed_config=settings.deepspeed_config,
           log_path=variant_settings.work_dir / "train.log", distributed=settings.distributed)

# %% [markdown]
# ## 4 · Reward curves
#
# One panel per variant: the mean answer, format and length rewards of each generation batch
# (rolling mean over 3), with the ends of the mix epochs in grey. On the paper's data the answer
# reward climbs while format stays near 1. On the toy, a few dozen steps with a tiny model
# show the machinery, not the paper's effect: read the curves as "it trains", not as Figure 3.

# %%
grpo_dirs = {variant: layout.grpo_dir(variant) for variant in settings.variants}
figure = report.plot_reward_curves(grpo_dirs)
report.save_figure(figure, layout.figures, "05_grpo_rewards")
display(figure)
summary = report.grpo_summary(grpo_dirs)
layout.metrics.mkdir(parents=True, exist_ok=True)
summary.to_csv(layout.metrics / "grpo_summary.csv")
display(summary.round(3))

# %% [markdown]
# `frac_reward_zero_std` is the share of groups that taught nothing. Easy samples the model
# already gets right tend to produce such groups, which is one reason the progressive mix spends
# less of its budget on them as training goes on.
#
# ## Next
#
# `06_evaluation` evaluates every variant on the test split (Table 1, Figure 3).
