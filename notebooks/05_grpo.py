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
#    (temperature 0.8 in the paper; G is not stated, see section 1);
# 2. score each completion with the rewards below;
# 3. the **advantage** of a completion is its reward minus the group's mean, divided by the
#    group's standard deviation: better than its siblings means pushed up, worse means pushed
#    down. No value network is needed;
# 4. update the model with a PPO-style clipped objective (clip range epsilon = 0.2), reusing each
#    group for mu = 2 updates, plus a small KL penalty (beta = 0.001) that keeps the model near the
#    **reference model**, here the Stage 1 model.
#
# A group whose completions all get the same reward has zero advantage everywhere: it teaches
# nothing. The log tracks the share of such groups (`frac_reward_zero_std`). Section 2 works one
# group out by hand, for the pool fact every notebook follows.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/training_settings.py
run_dir = None      # None: the profile's run directory
# each override is one "key=value" string, e.g. ["gamma=0.25", "variants=[progressive]"]
overrides = []      # settings changed for this run only; the comment above shows the form

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: no bars in notebooks

import gc

import pandas as pd
import torch
from IPython.display import display
from transformers.utils import logging as hf_logging

from morelib import difficulty, grpo, grpo_group, mixing, preflight, report, trace, trace_view, training_logs
from morelib.config import describe, load_profile, seed_everything
from morelib.launch import train_side_by_side
from morelib.layout import RunLayout
from morelib.training import is_done

# The profile's settings; with vLLM, the context lengths it leaves unset come from the pre-flight count.
config = load_profile(profile, overrides, run_dir, default_section="05_grpo", derive=preflight.engine_lengths)
settings = config.settings("05_grpo")
generation = config.settings("inference")
seed_everything(settings.seed)
layout = RunLayout(settings.run_dir)
hf_logging.disable_progress_bar()  # "Loading weights" bars; the trainer's output goes to train.log
all_settings = grpo.variant_runs(settings)  # each variant, and again with each of extra_seeds
display(describe(settings, ["variants", "extra_seeds", "mix_epochs", "gamma", "max_hard_samples", "max_easy_samples",
                            "num_generations", "temperature", "learning_rate", "max_steps", "beta", "epsilon", "num_iterations",
                            "length_threshold", "max_completion_length", "use_vllm"]))

# %% [markdown]
# ## 1 · The three rewards
#
# Each completion gets three rewards, each 0 or 1:
#
# * **format**: `<think> Step 1: ... Step 6: ... </think> <answer>LABEL</answer>`, the six steps
#   once each and in order, one answer tag holding one of the 21 labels, nothing after it;
# * **length**: the output is longer than a threshold (paper: 1,024), which pays for thorough
#   reasoning rather than a bare label. *Inferred:* the paper gives no unit; we count
#   **characters**, because a 1,024-*token* threshold could hardly be passed with a 1,024-token
#   completion limit (`docs/paper-notes.md`, "Length is counted in characters"). The toy's
#   reasoning is short, so its threshold is lower (`length_threshold`);
# * **answer**: the label, read by the same parser as evaluation, equals the gold label.
#
# *Inferred:* the paper's **Eq. 5**, which combines the three, was lost in the text we worked from;
# we read it as the **plain sum** (0 to 3), and the weights are a setting (`reward_weights`, TRL's
# own; `docs/paper-notes.md`, "Eq. 5"). *Inferred:* the **group size G** is not stated; the paper
# profile uses 8, the default of ms-swift (the paper's framework) and of TRL (`num_generations`;
# "Group size G = 8" in the notes); the toy uses a smaller group to fit a CPU.
#
# Each reward can be gamed on its own (padding for length, several answer tags, a label outside
# the 21): `morelib.rewards` is tested against these. Two optional guards, off by default to keep
# the paper's behaviour, pay length or answer only to well-formed outputs. None of the three checks
# that the answer follows from the reasoning; a fourth reward, beyond the paper and off unless
# named in `reward_names`, does: **consistency** pays when Step 6 concludes the answer's label.
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
funcs = get_reward_funcs(settings)
gold = ["/per/misc/awarded"] * len(examples)
headline = ["Lena Ortiz wins Golden Lyre Award"] * len(examples)  # the news text, read by the 'quotes' reward
entity = ["Golden Lyre Award"] * len(examples)  # the queried entity, read by the 'entity' reward
table = pd.DataFrame({name: f(list(examples.values()), label=gold, source_text=headline, entity=entity)
                      for name, f in zip(settings.reward_names, funcs)},
                     index=list(examples))
display(table)

# %% [markdown]
# ### Does the length reward also pay for a label?
#
# A reward should pay for what it names and nothing else, because GRPO follows whatever it pays.
# The length reward is meant to pay for complete reasoning, whatever the answer. Below, it is
# applied to the Stage 1 model's outputs on the Stage 2 pool (notebook 04 saved them), by gold
# label and by whether the answer is right. The rates should be about equal. If they are not,
# the threshold sits inside the range of normal output lengths, and the reward also pays for
# whatever makes outputs longer.
#
# On the toy, reasoning that ends in `none` is shorter (no relation to explain). At the
# toy's first threshold, 450 characters, the reward paid 96% of the pool's wrong answers and 59%
# of the right ones. Stage 2 learnt to write longer and answered worse
# (`docs/stage2-on-the-toy.md`). The toy threshold now sits below every complete reasoning, as
# the paper's 1,024 characters presumably does for a 7B model's answers: it fails a bare label or
# reasoning cut short, and pays every complete one.

# %%
pool_predictions = layout.predictions(*difficulty.POOL_PREDICTIONS)
if pool_predictions.exists():
    from morelib.inference import read_predictions

    (length_reward,) = get_reward_funcs(settings, ["length"])  # as this run's settings configure it
    by_group = training_logs.length_reward_by_group(read_predictions(pool_predictions), length_reward)
    display(by_group.round(3))
    spread = by_group["length_reward_rate"].max() - by_group["length_reward_rate"].min()
    if spread > 0.1:
        print(f"warning: the length reward's rate differs by {spread:.2f} between groups at "
              f"length_threshold={settings.length_threshold}: it pays for the label too")
else:
    print(f"no Stage 1 pool predictions at {pool_predictions}: run notebook 04 first")

# %% [markdown]
# ## 2 · One group, by hand
#
# The heart of GRPO, for the **traced pool fact** (chosen in 00; notebook 04 said whether it is
# easy or hard). Below, the Stage 1 model, where Stage 2 starts, writes G completions for it,
# sampled as a GRPO rollout is sampled (the GRPO settings' temperature, top-p, top-k, repetition
# penalty and completion length; seeded), in this process with transformers. Each completion
# gets the three rewards and their weighted sum, and then its advantage:
#
# $$A_i = \frac{r_i - \operatorname{mean}(r_1..r_G)}{\operatorname{std}(r_1..r_G) + 10^{-4}}$$
#
# This is what TRL 1.16 computes with `scale_rewards="group"` (the paper profile's setting), in
# `GRPOTrainer._generate_and_score_completions`: the standard deviation is the *sample* one
# (Bessel's correction, divided by G - 1; TRL's `nanstd`), and 1e-4 keeps a group with equal
# rewards at advantage 0. TRL does not expose this as a function of its own, so the column
# `advantage (TRL)` runs TRL's lines with TRL's `nanstd` (`morelib.grpo_group.trl_group_advantages`)
# beside our plain NumPy (`morelib.grpo_group.group_advantages`). Every token of completion i is then
# pushed up or down in proportion to A_i.

# %%
traced = trace.load(layout)
group = None
if traced is None or not is_done(settings.stage1_dir):
    print("nothing to sample: no trace.json (notebook 00) or no finished Stage 1 model")
else:
    from morelib import evaluation, faithfulness
    from morelib.answer import parse_label
    from morelib.inference import backend_for
    from morelib.prompts import prompt_template

    traced_sample = trace_view.load_samples(settings.data_dir, [traced.pool_id])[traced.pool_id]
    policy = backend_for(generation, settings.stage1_dir, backend="transformers")  # pixel limits from common, as GRPO's
    completions = grpo_group.sample_group(policy, traced_sample, settings, prompt_template(settings.prompt))
    del policy
    gc.collect()  # free the model before the training subprocess starts
    torch.cuda.empty_cache()  # and its GPU memory (a no-op without a GPU)
    group = grpo_group.score_group(completions, traced_sample.label, settings, traced_sample.text, traced_sample.entity)
    if (settings.scale_rewards, settings.multi_objective_aggregation) != ("group", "sum_then_normalize"):
        print(f"note: this profile trains with scale_rewards={settings.scale_rewards!r} and "
              f"multi_objective_aggregation={settings.multi_objective_aggregation!r}; the advantages below "
              "are the per-group ones of the paper's GRPO")
    print(trace_view.describe(traced_sample))
    row = trace_view.difficulty_row(layout, traced.pool_id)
    print(f"  notebook 04: {row['difficulty'] if row else 'not split'}; G = {settings.num_generations}, "
          f"temperature {settings.temperature}")
    facts = evaluation.toy_facts(settings.data_dir) or {}  # the toy world's true types; {} on real data
    rows = [{"id": traced.pool_id, "text": c, "label": parse_label(c), "gold": traced_sample.label} for c in completions]
    checks = [faithfulness.check(r, traced_sample, facts.get(traced.pool_id)) for r in rows]
    shown = group.assign(supports=[c["supports"] for c in checks],
                         ending=[c[-90:].replace("\n", " ") for c in completions])
    display(shown.round(3))
    best = int(group["advantage"].idxmax())
    text = completions[best - 1]
    print(f"completion {best} (highest advantage):\n{text[:1500]}{' …' if len(text) > 1500 else ''}")
    print(f"\ncompletion {best}: {faithfulness.verdict(rows[best - 1], traced_sample, facts.get(traced.pool_id))}")
    rewarded = [i + 1 for i, (c, a) in enumerate(zip(checks, group["advantage"])) if c["supports"] is False and a > 0]
    if rewarded:
        print(f"pushed up although the reasoning does not support the answer: completion(s) {rewarded}")

# %% [markdown]
# Read the table: completions that beat their siblings get a positive advantage, the others a
# negative one, and the advantages of a group sum to zero. The `supports` column checks each
# completion's reasoning as notebook 06 does (Step 6 concludes the answer, Steps 2, 4 and 6 name
# the entity, Step 4's types are right, quotes are in the text). None of the paper's rewards reads
# the reasoning: a completion whose Step 6 concludes one relation and whose answer tag holds
# another is paid in full when the tag is right, and GRPO pushes it up. The line under the
# completion says so when it happens. If all G rewards are equal (every
# completion right, or every one wrong in the same way), every advantage is 0 and the group
# teaches nothing: that is what `frac_reward_zero_std` counts during training. A very peaked
# Stage 1 model (low entropy) produces such groups often, which is why the temperature matters.

# %% [markdown]
# ## 3 · Progressive Sample-Mixing
#
# Notebook 04 split the remaining 75% of the training set by the Stage 1 model's answer: *easy*
# (right) and *hard* (wrong). **Why the paper mixes them, and lets the easy share decay** (its
# section 3.3.2): GRPO on the raw remaining 75% gave only a slight gain, and the answer reward did
# not grow during training. 79% of those samples were easy, mostly `none` (7,417 of 8,853), and
# with so many in a mini-batch the model overfit the easy patterns instead of exploring the hard
# cases. Training on hard samples only was worse: the answer reward hardly improved and the scores
# fell, because without easy samples to warm up on at the start, the model found no useful
# exploration paths for the hard ones. Hence: start with easy samples, then give them less room.
#
# *Our addition, not the paper's argument:* in GRPO an easy sample tends to give a group whose
# completions are all right; equal rewards mean zero advantage, so such a group teaches nothing
# (section 2). MORE-R1 mixes them and shifts the mix over time: every epoch uses all hard samples,
# epoch 1 adds as many easy ones (1:1), and the easy share halves each epoch (gamma = 0.5). The easy
# draw keeps the none / non-none proportion of the original training set.
#
# *Inferred:* the per-epoch count is the paper's **Eq. 6**, lost in extraction; we read it as
# easy(e) = round(n_hard * gamma^(e-1)), capped at the easy pool, the only common decay that gives
# 1:1 in epoch 1 and halves with gamma = 0.5 (`docs/paper-notes.md`, "Eq. 6").
#
# The ablations of Figure 3 change only the easy share: **raw** (all easy samples every epoch),
# **balanced** (1:1 every epoch), **hard_only** (no easy samples). The epochs are built in advance,
# seeded, saved to `grpo/<variant>/mix.json`, and trained as one pass in order, so a resumed run
# sees exactly the same rows.
#
# A step budget (`max_steps`) can end a run before its mix does; the lines under the table say
# where. A budget that ends every run in epoch 1 makes progressive and balanced the same run:
# both draw the same 1:1 first epoch (`docs/stage2-on-the-toy.md`, Round 8). The toy profiles
# train each variant's whole mix, on a small subset.

# %%
plans, mixes = {}, {}
for name, run_settings in all_settings.items():
    mixes[name], plans[name] = grpo.prepare_mix(run_settings, settings.num_processes)
display(pd.concat({variant: plans[variant] for variant in settings.variants}, names=["variant"]))
if settings.max_steps > 0:  # a step budget can end a run before its schedule does
    for variant in settings.variants:
        ends = list(plans[variant]["end_step"])
        epoch = next((e for e, end in enumerate(ends, start=1) if settings.max_steps <= end), len(ends))
        print(f"{variant}: max_steps={settings.max_steps} ends the run in mix epoch {epoch} of {len(ends)} "
              f"(the whole mix: {ends[-1]} steps)")

# %% [markdown]
# **The toy's ratios are not the paper's.** In the paper, *raw* trains on the whole pool every
# epoch: 8,853 easy to 2,370 hard, about 3.7 : 1. The toy's *raw* trains on whatever easy : hard
# ratio this run's pool has (capped by `max_easy_samples` and `max_hard_samples`), printed below;
# where it is much lower than 3.7 : 1, the toy's *raw* is far less flooded with easy `none` samples
# than the paper's, and should lose less to the other variants than in Figure 3. The last column
# says in which mix epochs the traced pool fact is trained on (an empty list: this run's mix left it
# out, and section 2 shows what GRPO *would* do with it).

# %%
ratios = pd.DataFrame({
    variant: {"easy : hard, epoch 1": plan["n_easy"].iloc[0] / max(1, plan["n_hard"].iloc[0]),
              "easy : hard, last epoch": plan["n_easy"].iloc[-1] / max(1, plan["n_hard"].iloc[-1]),
              "traced fact in epochs": trace_view.mix_epochs(mixes[variant], traced.pool_id) if traced else None}
    for variant, plan in plans.items() if variant in settings.variants}).T
ratios.loc["raw, paper"] = [8853 / 2370, 8853 / 2370, None]
display(ratios)

# %% [markdown]
# ## 4 · Training
#
# Each variant runs as its own subprocess (`morelib.grpo`; `accelerate launch` on the paper profile), with TRL's
# `GRPOTrainer`. Every paper setting is passed explicitly, because TRL's defaults differ
# (loss type `dapo`, bf16 and gradient checkpointing on). The toy generates rollouts with
# transformers; the paper profile uses vLLM (`use_vllm`, colocated with training or as a server).
# Checkpoints go to `checkpoints/grpo_<variant>/ckpt`, and a rerun resumes from the last one; a
# finished variant is skipped. The trainer's own output goes to `checkpoints/grpo_<variant>/train.log`; here,
# only the lines the trainer marks for the notebook.
#
# One run per variant says little about the variants: GRPO samples, and a tiny model moves a lot
# with the seed. `extra_seeds` (beyond the paper; toy-full: two) trains every variant again with
# each extra seed, into `checkpoints/grpo_<variant>_seed<N>`; notebook 06 puts them in Figure 3.
#
# `side_by_side` (speed only) trains several runs at once on a CPU, each with its share of the
# cores, as notebook 03 does. GRPO uses two threads well, so two at a time is no faster
# (`benchmarks/bench_side_by_side.py`): toy trains one run at a time; toy-full two, with one
# thread each, because its setting was chosen from one-thread runs and one thread sums in another
# order than two. Toy-full's twelve runs of 450 steps take most of its time.

# %%
trained = train_side_by_side("morelib.grpo", all_settings.values())
print(f"trained now: {', '.join(trained) or 'none (all finished before)'}")

# %% [markdown]
# ## 5 · Reward curves
#
# One panel per variant: the mean answer, format and length rewards of each generation batch
# (rolling mean over 3), with the ends of the mix epochs in grey. On the toy, read the curves as
# "it trains", not as Figure 3.
#
# **Why the progressive answer reward falls.** A curve shows the mean reward of the *batches
# trained on*, and the progressive mix changes what is in them: every epoch keeps all hard
# samples while the easy ones halve (1:1, then 1:2, 1:4, 1:8 easy : hard). Hard samples are, by
# definition, ones the Stage 1 model answered wrongly, so later batches hold more samples the
# model still gets wrong, and the mean answer reward drops even while the model improves. The
# curve measures the mix as much as the model; *balanced* and *hard_only* keep a fixed mix, so
# their curves can be read directly. Notebook 06 judges every variant on the same test split.

# %%
grpo_dirs = {variant: layout.grpo_dir(variant) for variant in settings.variants}
figure = report.plot_reward_curves(grpo_dirs)
report.save_figure(figure, layout.figures, "05_grpo_rewards")
display(report.show_figure(figure))
summary = training_logs.grpo_summary({name: run.work_dir for name, run in all_settings.items()})
layout.metrics.mkdir(parents=True, exist_ok=True)
summary.to_csv(layout.grpo_summary)
display(summary.round(3))

# %% [markdown]
# `frac_reward_zero_std` is the share of groups that taught nothing. Easy samples the model
# already gets right tend to produce such groups, which is one reason the progressive mix spends
# less of its budget on them as training goes on.
#
# **The learning signal, step by step.** A group whose completions all earn the same reward has
# zero advantage and gives no gradient. Below, per variant: the share of such groups in each
# generation step, and the entropy of the sampled tokens (how far sampling strays from the greedy
# answer). A Stage 1 model that is very sure of itself (entropy near zero) samples the same answer
# G times, and most groups then teach nothing. On the toy profiles most groups are of that kind;
# more completions per prompt and a higher temperature lower the share (`docs/stage2-on-the-toy.md`).

# %%
figure = report.plot_learning_signal(grpo_dirs)
report.save_figure(figure, layout.figures, "05_grpo_signal")
display(report.show_figure(figure))

# %% [markdown]
# ## 6 · Choosing Stage 2's settings on valid
#
# The paper fixes few of Stage 2's settings for a 7B model, and a tiny model needs its own
# (learning rate, sampling temperature, how much of the pool to use). Settings are chosen on the
# **valid** split, never on test. `benchmarks/stage2_valid.py` trains one variant with changed
# settings into `experiments/<name>/` (this run's own Stage 2 files stay as they are), then
# scores it and the Stage 1 model on valid with a paired bootstrap:
#
# ```
# OMP_NUM_THREADS=1 python benchmarks/stage2_valid.py --profile toy-full --name lr3e-5 \
#     --set 05_grpo.learning_rate=3e-5 --set 05_grpo.max_hard_samples=null
# ```
#
# `benchmarks/self_training_valid.py` is the yardstick: it fine-tunes Stage 1 on the pool with
# plain SFT, on the model's own right answers (`--rows own`, the simplest way to learn from the
# answer reward) or, on the toy, on the expert's reasoning for every pool fact (`--rows expert`,
# what an annotated pool would give). If neither raises valid F1, GRPO has little to find.
#
# The table lists this run's experiments of both kinds, best valid gain first, with the learning
# signal of the GRPO runs early and late in training: the share of zero-variance groups, the
# entropy and the answer reward. `docs/stage2-on-the-toy.md` lists what we tried on the toy and
# what each gave.
#
# One run per setting is not enough: the GRPO seed moves valid F1 by several points. Train a
# setting with a few seeds (`--set 05_grpo.seed=N`, one experiment each) and score them as one
# model with `benchmarks/stage2_seeds_valid.py`. Only once a setting is chosen does
# `benchmarks/stage2_test.py` score its seeds on test, once. On toy-full, eight completions per
# prompt at temperature 1.0 and lr 1e-5 for 450 steps gained +2.7 on valid and +5.3 [+2.1, +8.9]
# on the 502 test facts of the time over four seeds; the toy-full profile now trains with that
# setting, and its run gains +3.5 [+1.6, +5.4] over three seeds on 2,002 test facts. The toy profile's
# short Stage 2 gains nothing that counts.

# %%
experiments = training_logs.stage2_experiments(layout.experiments)
if experiments is None:
    print("No Stage 2 experiments in this run yet: python benchmarks/stage2_valid.py --help")
else:
    display(experiments)

# %% [markdown]
# ## Exercises
#
# Exercises 1 to 4 and 6 take a few minutes each; 5 and 7 train models and are homework. The cell
# below computes nothing until you fill it in.
#
# 1. **Redraw the plan.** Change `gamma_to_try` (and `epochs_to_try`) below: `mixing.easy_counts`
#    gives the easy samples per epoch for the paper's 2,370 hard and 8,853 easy. What gamma would
#    keep the last epoch at 1 : 2? What does gamma = 1 turn the progressive variant into?
# 2. **Advantages by hand.** For a group with rewards 3, 2, 2 and 0, compute the four advantages
#    on paper (sample standard deviation), write them into `my_advantages`, then run the cell: it
#    compares them with `grpo_group.group_advantages`. What are they for rewards 3, 3, 3, 3? For
#    1, 0, 0, 0 compared with 3, 2, 2, 2?
# 3. **The falling curve.** Using the plan of section 3 (`plans["progressive"]`: `n_hard`,
#    `n_easy`, `total` per epoch), compute the share of hard samples in each progressive epoch. If
#    the model answered every hard sample with probability 0.2 and every easy one with 0.9, what
#    mean answer reward would each epoch show?
# 4. **After training.** Point the group of section 2 at `layout.checkpoint("grpo_progressive")`
#    instead of the Stage 1 model and sample again: did the rewards or their spread change?
# 5. **Homework (one GRPO run and a valid scoring: at about 2.3 s per toy step, minutes for the
#    profile's steps, 20 minutes for the whole pool; `docs/stage2-on-the-toy.md`): a setting of
#    your own.** Pick one Stage 2 setting (the learning rate, `temperature`,
#    `num_generations`), guess what it does to the zero-variance share and the valid F1, then run
#    `benchmarks/stage2_valid.py` with it and add the row to the table of section 6.
# 6. **A reward that pays for saying less.** The `quotes` reward (beyond the paper) pays an output
#    when every phrase its reasoning quotes is in the news text, so an output that quotes nothing
#    is paid too. Which toy reasonings quote nothing (look at a bystander's Step 6), and what
#    could GRPO learn from this reward? Guess before you read rows q1 and q2 of
#    `docs/stage2-on-the-toy.md`. How would you change the reward so it cannot be earned that way?
#    Compare your answer with the `grounded_answer` reward and rows ga1 and ga2.
# 7. **Homework (two SFT runs on the pool and their valid scorings; not timed here, longer than a
#    meeting on a laptop CPU): what the pool holds.** Run `benchmarks/self_training_valid.py` twice with the same training
#    budget (`--with-stage1-set --set 03_sft.learning_rate=3e-4 --set 03_sft.num_train_epochs=3`):
#    once with `--rows own` and once with `--rows expert-hard`. Both train on the model's own right
#    answers for the easy facts; they differ only on the hard facts. What does the gap between the
#    two valid gains say about what GRPO's sampling would have to find?

# %%
gamma_to_try, epochs_to_try = None, 4  # exercise 1: e.g. 0.25
my_advantages = None                     # exercise 2: your four advantages of rewards 3, 2, 2, 0

if gamma_to_try is not None:
    print("easy per epoch (paper's pool):", mixing.easy_counts(2370, 8853, epochs_to_try, gamma_to_try))
if my_advantages is not None:
    truth = grpo_group.group_advantages([3, 2, 2, 0])
    print("yours:", [round(a, 3) for a in my_advantages], "TRL's formula:", truth.round(3).tolist(),
          "-> match" if all(abs(a - b) < 0.01 for a, b in zip(my_advantages, truth)) else "-> look again")

# %% [markdown]
# ## Next
#
# `06_evaluation` evaluates every variant on the test split (Table 1, Figure 3).
