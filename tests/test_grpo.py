"""Stage 2 GRPO: the rewards reach TRL and move the LLM but not the vision tower, the printed plan
is mixing.easy_counts, the mix is saved and reused, resume continues the log, a real two-process
run shares one mix, and the step log carries what the notebook plots."""

import json
import shutil

import pandas as pd
import pytest
import torch

from morelib import grpo, report, training_logs
from morelib.config import ConfigError, load_settings, with_changes
from morelib.difficulty import write_split
from morelib.files import read_jsonl
from morelib.layout import RunLayout
from morelib.mixing import easy_counts, none_share
from morelib.training import DONE_FILE, is_done, read_summary

REQUIRED_LOG_KEYS = (
    "rewards/format_reward/mean", "rewards/length_reward/mean", "rewards/answer_reward/mean",
    "kl", "completions/mean_length", "frac_reward_zero_std", "step", "mix_epoch", "generated",
)


@pytest.fixture(scope="module")
def run_dir(toy_world):
    """A run directory with the tiny model as 'Stage 1' and a difficulty split (every 3rd pool sample hard)."""
    torch.set_num_threads(1)
    run_dir = toy_world.run_dir("grpo", models=["stage1"])
    pool = toy_world.samples("train")[20:]
    write_split([{"id": s.id, "label": s.label, "pred": s.label, "difficulty": "hard" if k % 3 == 0 else "easy"}
                 for k, s in enumerate(pool)], RunLayout(run_dir).difficulty_split)
    return run_dir


@pytest.fixture
def settings(run_dir, toy_world):
    """The toy profile's GRPO settings, shrunk for CPU: 2 prompts x 4 completions of 16 tokens. The
    length threshold sits inside the spread of random 16-token outputs, so groups have a learning signal."""

    def make(**changes):
        small = dict(data_dir=str(toy_world.data_dir), max_hard_samples=4, max_easy_samples=6, num_generations=4,
                     per_device_train_batch_size=8, max_completion_length=16, length_threshold=40,
                     learning_rate=1e-3, save_steps=2, max_steps=3)
        return load_settings("05_grpo", "toy", run_dir=run_dir, **{**small, **changes})

    return make


def fresh(s):
    shutil.rmtree(s.work_dir, ignore_errors=True)
    shutil.rmtree(s.model_dir, ignore_errors=True)
    return s


def test_plan_matches_easy_counts_and_keeps_none_share(settings, toy_world, capsys):
    split = read_jsonl(RunLayout(settings().run_dir).difficulty_split)
    hard = [r["id"] for r in split if r["difficulty"] == "hard"]
    easy = [r["id"] for r in split if r["difficulty"] == "easy"]
    labels = {r["id"]: r["label"] for r in split}
    for variant in ("progressive", "raw", "balanced", "hard_only"):
        s = fresh(settings(variant=variant, max_hard_samples=None, max_easy_samples=None))
        mixes, plan = grpo.prepare_mix(s, num_processes=1)
        assert list(plan["n_easy"]) == easy_counts(len(hard), len(easy), s.mix_epochs, s.gamma, variant)
        assert list(plan["n_hard"]) == [len(hard)] * s.mix_epochs
        printed = capsys.readouterr().out
        assert f"({variant})" in printed and str(plan.loc[1, "n_easy"]) in printed
        # Saved plan = printed plan.
        saved = pd.read_csv(s.work_dir / grpo.PLAN_FILE, index_col="epoch")
        assert saved["n_easy"].tolist() == plan["n_easy"].tolist()
        assert saved["end_step"].tolist() == plan["end_step"].tolist()
    # Progressive epoch 1 is 1:1 and the easy draw keeps the training set's none share.
    ratio = none_share([s.label for s in toy_world.samples("train")])
    mix = json.loads((settings(max_hard_samples=None, max_easy_samples=None).work_dir / grpo.MIX_FILE).read_text())
    easy_in_mix = [i for i in mix["epochs"][0] if i not in set(hard)]
    assert len(easy_in_mix) == len(hard)
    share = sum(labels[i] == "none" for i in easy_in_mix) / len(easy_in_mix)
    assert abs(share - ratio) <= 1 / len(easy_in_mix) + 1e-9


def test_the_plan_counts_steps_from_the_trainers_batch(settings):
    s = fresh(settings(variant="hard_only", num_iterations=2))
    # 8 completions per device / 4 per prompt = 2 prompts per generation batch, 2 updates each.
    assert grpo.prompts_per_generation(s, num_processes=1) == 2
    assert grpo.prompts_per_generation(s, num_processes=2) == 4
    mixes, plan = grpo.prepare_mix(s)
    assert plan["end_step"].tolist() == [len(mixes[0]) // 2 * 2 * (e + 1) for e in range(len(mixes))]
    # A batch that does not hold whole groups is refused when the settings are built.
    with pytest.raises(ConfigError, match="divisible by num_generations"):
        settings(per_device_train_batch_size=6)


def test_reward_settings_are_checked():
    with pytest.raises(ConfigError, match="reward_weights: 1 weights for 3 rewards"):
        load_settings("05_grpo", "toy", ["reward_weights=[1.0]"])
    with pytest.raises(ConfigError, match="variant: 'mixed'"):
        load_settings("05_grpo", "toy", variant="mixed")


def test_rewards_reach_trl_and_train_the_llm_only(settings):
    trainer = grpo.build_trainer(fresh(settings(max_steps=2)))
    assert trainer.reward_func_names == ["format_reward", "length_reward", "answer_reward"]
    assert trainer.loss_type == "grpo" and trainer.beta == 0.001 and trainer.ref_model is not None
    assert trainer.args.num_train_epochs == 1 and trainer.args.shuffle_dataset is False
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    vision = {n for n in before if ".visual." in f".{n}"}
    assert vision and not (changed & vision), "the vision tower or projector moved"
    assert changed == set(before) - vision, f"LLM weights that did not move: {set(before) - vision - changed}"
    # The reference model stays the Stage 1 model.
    ref = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(ref[n], before[n]) for n in before)


def test_the_news_text_and_entity_reach_their_rewards_through_trl(settings):
    trainer = grpo.build_trainer(fresh(settings(max_steps=1, reward_names=["format", "answer", "quotes", "entity"],
                                                   reward_weights=[1.0, 1.0, 1.0, 1.0])))
    assert trainer.reward_func_names == ["format_reward", "answer_reward", "quotes_reward", "entity_reward"]
    row = trainer.train_dataset[0]
    prompt_text = row["prompt"][0]["content"][-1]["text"]
    assert row["source_text"] and row["source_text"] in prompt_text
    assert row["entity"] and f'entity "{row["entity"]}"' in prompt_text
    trainer.train()  # raises if TRL does not pass the source_text or entity column to its reward
    for name in ("quotes_reward", "entity_reward"):
        logged = [r for r in trainer.state.log_history if f"rewards/{name}/mean" in r]
        assert logged and 0.0 <= logged[0][f"rewards/{name}/mean"] <= 1.0


def test_a_missing_stage1_model_is_named(settings, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*Stage 1 model is missing"):
        grpo.build_trainer(settings(stage1_model=str(tmp_path / "nowhere")))


def test_train_logs_resumes_and_skips(settings, capsys):
    s = fresh(settings(max_steps=2))
    out = grpo.train(s)
    assert out == s.model_dir and is_done(out) and (out / "model.safetensors").exists()
    summary = read_summary(out)
    assert summary["variant"] == "progressive" and summary["global_step"] == 2 and summary["world_size"] == 1
    rows = read_jsonl(s.work_dir / grpo.STEP_LOG)
    assert [r["step"] for r in rows] == [1, 2]
    for key in REQUIRED_LOG_KEYS:
        assert all(key in r for r in rows), key
    assert rows[0]["generated"] and not rows[1]["generated"]  # num_iterations=2 reuses the batch
    mix_before = (s.work_dir / grpo.MIX_FILE).read_text()
    # As if the run had logged step 3 and died before its next checkpoint: the rerun repeats step 3.
    with open(s.work_dir / grpo.STEP_LOG, "a") as f:
        f.write(json.dumps({"step": 3, "stale": True}) + "\n")

    # Resuming restores the checkpoint's weights, not the Stage 1 weights it started from
    # (transformers 5's own non-strict reload silently restores nothing).
    ckpt = out / "ckpt" / "checkpoint-2"
    longer = settings(max_steps=4)
    resumed = grpo.build_trainer(longer)
    initial = {n: p.detach().clone() for n, p in resumed.model.named_parameters()}
    resumed._load_from_checkpoint(str(ckpt))
    saved = type(resumed.model).from_pretrained(ckpt).state_dict()
    weights = dict(resumed.model.named_parameters())
    assert all(torch.equal(weights[n], saved[n]) for n in weights)
    assert any(not torch.equal(weights[n], initial[n]) for n in weights)

    # Rerun with more steps after losing the final model: resumes from checkpoint-2 with the same mix.
    for name in (DONE_FILE, "model.safetensors"):
        (out / name).unlink()
    capsys.readouterr()
    grpo.train(longer)
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "checkpoint-2" in printed
    # The progress lines count from the resumed step (toy profile: progress_lines 5).
    assert "[grpo progressive] step 3/4 (75%): loss " in printed and "[grpo progressive] trained 2 steps in " in printed
    assert (s.work_dir / grpo.MIX_FILE).read_text() == mix_before
    rows = read_jsonl(s.work_dir / grpo.STEP_LOG)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and not any(r.get("stale") for r in rows)
    assert read_summary(out)["global_step"] == 4

    # Finished: a rerun skips.
    grpo.train(longer)
    assert "already holds a finished model" in capsys.readouterr().out

    # What notebook 05 shows from the step log: per-variant summary and reward curves.
    table = training_logs.grpo_summary({"progressive": s.work_dir})
    assert table.loc["progressive", "steps"] == 4
    for name in ("answer", "format", "length"):
        assert 0.0 <= table.loc["progressive", f"{name}_start"] <= 1.0
    assert table.loc["progressive", "peak_rss_mb"] > 0
    paths = report.save_figure(report.plot_reward_curves({"progressive": s.work_dir}), s.work_dir, "rewards")
    assert paths[0].stat().st_size > 5_000


def test_two_process_run_shares_one_mix(settings, tmp_path):
    """A real 2-process (gloo) run: one process builds the mix and the log, both train on it."""
    from morelib.launch import launch, write_settings

    s = fresh(settings(variant="balanced", per_device_train_batch_size=4, max_steps=2))
    log = tmp_path / "train.log"
    launch("morelib.grpo", write_settings(s, tmp_path / "settings.json"), num_processes=2, log_path=log,
           env={"OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "rank 0 of 2" in text and "rank 1 of 2" in text
    assert text.count("Sample-mixing plan (balanced)") == 1
    assert [r["step"] for r in read_jsonl(s.work_dir / grpo.STEP_LOG)] == [1, 2]
    assert read_summary(s.model_dir)["world_size"] == 2
    # The plan counted steps for two processes: 4 completions each, so 2 prompts per generation
    # batch (one process would take 1), and epoch 1's 8 rows end at update 4 x num_iterations.
    assert (grpo.prompts_per_generation(s, 2), grpo.prompts_per_generation(s, 1)) == (2, 1)
    assert pd.read_csv(s.work_dir / grpo.PLAN_FILE)["end_step"].iloc[0] == 4 * s.num_iterations


def test_variants_share_the_stage1_model_and_split_their_files(settings):
    progressive, raw = settings(), with_changes(settings(), variant="raw")
    assert progressive.stage1_dir == raw.stage1_dir == RunLayout(progressive.run_dir).checkpoint("stage1")
    assert progressive.work_dir != raw.work_dir and progressive.model_dir != raw.model_dir


def test_extra_seeds_train_each_variant_again_into_its_own_files(settings):
    runs = grpo.variant_runs(settings(variants=["progressive", "raw"], extra_seeds=[3]))
    assert list(runs) == ["progressive", "raw", "progressive_seed3", "raw_seed3"]
    main, again = runs["progressive"], runs["progressive_seed3"]
    assert (main.seed, again.seed) == (0, 3)
    layout = RunLayout(main.run_dir)
    assert main.model_dir == layout.checkpoint("grpo_progressive")
    assert again.model_dir == layout.checkpoint("grpo_progressive_seed3")
    assert again.work_dir == layout.grpo_dir("progressive_seed3")
    assert again.stage1_dir == main.stage1_dir
    # the seed also draws the toy's subset of the pool, so a second seed trains on other samples
    (main_mix, main_plan), (again_mix, again_plan) = grpo.prepare_mix(fresh(main)), grpo.prepare_mix(fresh(again))
    assert main_plan["n_hard"].tolist() == again_plan["n_hard"].tolist()
    assert set(main_mix[0]) != set(again_mix[0])
    assert (again.work_dir / grpo.MIX_FILE).exists()
    with pytest.raises(ValueError, match="extra_seeds: .*leave out seed 0"):
        grpo.variant_runs(settings(extra_seeds=[0, 1]))
    with pytest.raises(ValueError, match="must be distinct"):
        grpo.variant_runs(settings(extra_seeds=[1, 1]))
