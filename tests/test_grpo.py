"""Stage 2 GRPO: the rewards reach TRL and move the LLM but not the vision tower, the printed
plan is mixing.easy_counts, the mix is saved and reused, resume continues the log, and the
step log carries the quantities the issue asks for."""

import json
import shutil

import pandas as pd
import pytest
import torch

from morelib import toy
from morelib.data import load_split
from morelib.grpo import (
    DONE_FILE, GRPOSettings, build_trainer, epoch_end_steps, load_or_build_mix, read_difficulty_split,
    read_log, train, train_none_ratio, write_plan,
)
from morelib.mixing import easy_counts
from morelib.tiny import TinySettings, build_tiny_model

SMALL = TinySettings(hidden_size=64, intermediate_size=128, vocab_size=1024)
REQUIRED_LOG_KEYS = (
    "rewards/format_reward/mean", "rewards/length_reward/mean", "rewards/answer_reward/mean",
    "kl", "completions/mean_length", "frac_reward_zero_std", "step", "mix_epoch",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Toy data, a tiny 'Stage 1' model and a fake difficulty split (every 3rd pool sample hard)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("grpo")
    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=2, train=80, valid=10, test=10))
    run_dir = root / "run"
    build_tiny_model(run_dir / "checkpoints" / "stage1", data_dir, seed=0, settings=SMALL)
    pool = load_split(data_dir, "train")[20:]
    split = run_dir / "difficulty" / "split.jsonl"
    split.parent.mkdir(parents=True)
    with open(split, "w") as f:
        for k, s in enumerate(pool):
            f.write(json.dumps({"id": s.id, "label": s.label, "pred": s.label,
                                "difficulty": "hard" if k % 3 == 0 else "easy"}) + "\n")
    return data_dir, run_dir


def settings(world, **overrides) -> GRPOSettings:
    data_dir, run_dir = world
    # Small enough for CPU: 2 prompts x 4 completions of 16 tokens. The length threshold sits
    # inside the spread of random 16-token outputs, so groups have a learning signal.
    base = dict(run_dir=str(run_dir), data_dir=str(data_dir), max_hard_samples=4, max_easy_samples=6,
                num_generations=4, per_device_batch_size=8, max_completion_length=16, length_threshold=40,
                learning_rate=1e-3, save_steps=2, max_steps=3)
    return GRPOSettings(**{**base, **overrides})


def fresh(s: GRPOSettings) -> GRPOSettings:
    shutil.rmtree(s.work_dir, ignore_errors=True)
    shutil.rmtree(s.out_dir, ignore_errors=True)
    return s


def test_plan_matches_easy_counts_and_keeps_none_share(world, capsys):
    data_dir, _ = world
    for variant in ("progressive", "raw", "balanced", "hard_only"):
        s = fresh(settings(world, variant=variant, max_hard_samples=None, max_easy_samples=None))
        hard, easy, labels = read_difficulty_split(s.split_path)
        ratio = train_none_ratio(load_split(data_dir, "train"))
        mixes, hard_used = load_or_build_mix(s, hard, easy, labels, ratio)
        table = write_plan(s, mixes, labels, hard_used, num_processes=1)
        assert list(table["n_easy"]) == easy_counts(len(hard), len(easy), s.epochs, s.gamma, variant)
        assert list(table["n_hard"]) == [len(hard)] * s.epochs
        printed = capsys.readouterr().out
        assert f"({variant})" in printed and str(table.loc[1, "n_easy"]) in printed
        # Saved plan = printed plan.
        saved = pd.read_csv(s.work_dir / "plan.csv", index_col="epoch")
        assert saved["n_easy"].tolist() == table["n_easy"].tolist()
        assert saved["n_none"].tolist() == table["n_none"].tolist()
    # Progressive epoch 1 is 1:1 and the easy draw keeps the training set's none share.
    s = settings(world, variant="progressive", max_hard_samples=None, max_easy_samples=None)
    mix = json.loads((s.work_dir / "mix.json").read_text())["epochs"][0]
    easy_in_mix = [i for i in mix if i not in set(hard)]
    assert len(easy_in_mix) == len(hard)
    none_share = sum(labels[i] == "none" for i in easy_in_mix) / len(easy_in_mix)
    assert abs(none_share - ratio) <= 1 / len(easy_in_mix) + 1e-9


def test_mix_is_saved_and_reused_not_rebuilt(world):
    s = fresh(settings(world))
    hard, easy, labels = read_difficulty_split(s.split_path)
    first, _ = load_or_build_mix(s, hard, easy, labels, 0.7)
    # A rebuilt mix would be shuffled again by the seed; the saved one is read back verbatim.
    path = s.work_dir / "mix.json"
    saved = json.loads(path.read_text())
    saved["epochs"][0] = list(reversed(saved["epochs"][0]))
    path.write_text(json.dumps(saved))
    again, _ = load_or_build_mix(s, hard, easy, labels, 0.7)
    assert again[0] == list(reversed(first[0])) and again[1:] == first[1:]
    # A different mix setting refuses the saved mix, naming the file and the field.
    with pytest.raises(ValueError, match=r"mix\.json.*settings\.gamma"):
        load_or_build_mix(settings(world, gamma=0.25), hard, easy, labels, 0.7)


def test_epoch_end_steps():
    s = GRPOSettings(run_dir="x", data_dir="x", num_generations=4, per_device_batch_size=8, num_iterations=2)
    # 2 prompts per generation batch, each batch serves 2 updates; 5 rows -> 3 batches (straddling).
    assert epoch_end_steps([["a"] * 5, ["b"] * 4, ["c"] * 3], s, num_processes=1) == [6, 10, 12]
    with pytest.raises(ValueError, match="multiple of num_generations"):
        epoch_end_steps([["a"]], GRPOSettings(run_dir="x", data_dir="x", num_generations=3,
                                              per_device_batch_size=8), num_processes=1)


def test_rewards_reach_trl_and_train_the_llm_only(world):
    trainer = build_trainer(fresh(settings(world, max_steps=2)))
    assert trainer.reward_func_names == ["format_reward", "length_reward", "answer_reward"]
    assert trainer.loss_type == "grpo" and trainer.beta == 0.001 and trainer.ref_model is not None
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    vision = {n for n in before if ".visual." in f".{n}"}
    assert vision and not (changed & vision), "the vision tower or projector moved"
    assert changed == set(before) - vision, f"LLM weights that did not move: {set(before) - vision - changed}"
    # The reference model stays the Stage 1 model.
    ref = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(ref[n], before[n]) for n in before)


def test_train_logs_resumes_and_skips(world, capsys):
    s = fresh(settings(world, max_steps=2))
    out = train(s)
    assert (out / DONE_FILE).exists() and (out / "model.safetensors").exists()
    rows = read_log(s.run_dir, s.variant)
    assert [r["step"] for r in rows] == [1, 2]
    for key in REQUIRED_LOG_KEYS:
        assert all(key in r for r in rows), key
    assert rows[0]["generated"] and not rows[1]["generated"]  # num_iterations=2 reuses the batch
    mix_before = (s.work_dir / "mix.json").read_text()
    # As if the run had logged step 3 and died before its next checkpoint: the rerun repeats step 3.
    with open(s.work_dir / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "stale": True}) + "\n")

    # Resuming restores the checkpoint's weights, not the Stage 1 weights it started from
    # (transformers 5's own non-strict reload silently restores nothing).
    ckpt = out / "ckpt" / "checkpoint-2"
    resumed = build_trainer(settings(world, max_steps=4))
    initial = {n: p.detach().clone() for n, p in resumed.model.named_parameters()}
    resumed._load_from_checkpoint(str(ckpt))
    saved = type(resumed.model).from_pretrained(ckpt).state_dict()
    weights = dict(resumed.model.named_parameters())
    assert all(torch.equal(weights[n], saved[n]) for n in weights)
    assert any(not torch.equal(weights[n], initial[n]) for n in weights)

    # Rerun with more steps after losing the final model: resumes from checkpoint-2 with the same mix.
    for name in (DONE_FILE, "model.safetensors"):
        (out / name).unlink()
    train(settings(world, max_steps=4))
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "checkpoint-2" in printed and "reusing the saved mix" in printed
    assert (s.work_dir / "mix.json").read_text() == mix_before
    rows = read_log(s.run_dir, s.variant)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and not any(r.get("stale") for r in rows)

    # Finished: a rerun skips.
    train(settings(world, max_steps=4))
    assert "already holds a finished model" in capsys.readouterr().out


def test_bad_split_file_names_line_and_field(tmp_path):
    path = tmp_path / "split.jsonl"
    path.write_text('{"id": "train-1", "label": "none", "difficulty": "hard"}\n'
                    '{"id": "train-2", "label": "none", "difficulty": "medium"}\n')
    with pytest.raises(ValueError, match=r"split\.jsonl:2: field 'difficulty'"):
        read_difficulty_split(path)
    path.write_text('{"id": "train-1", "label": "/per/per/nope", "difficulty": "hard"}\n')
    with pytest.raises(ValueError, match=r"split\.jsonl:1: field 'label'"):
        read_difficulty_split(path)


def test_settings_round_trip_through_launch_file(tmp_path):
    from morelib.launch import write_settings

    s = GRPOSettings(run_dir="runs/toy", data_dir="d", variant="hard_only", reward_weights=[1.0, 0.5, 2.0])
    path = write_settings(s, tmp_path / "s.json")
    assert GRPOSettings.from_json(path) == s
    with pytest.raises(ValueError, match="variant"):
        GRPOSettings(run_dir="x", data_dir="x", variant="nope")
    with pytest.raises(ValueError, match="reward_weights"):
        GRPOSettings(run_dir="x", data_dir="x", reward_weights=[1.0])


def test_two_process_run_shares_one_mix(world, tmp_path):
    """A real 2-process (gloo) run: one process builds the mix and the log, both train on it."""
    from morelib.launch import launch, write_settings

    s = fresh(settings(world, variant="balanced", per_device_batch_size=4, max_steps=2))
    log = tmp_path / "train.log"
    launch("morelib.grpo", write_settings(s, tmp_path / "settings.json"), num_processes=2, log_path=log)
    text = log.read_text()
    assert "rank 0 of world size 2" in text and "rank 1 of world size 2" in text
    assert text.count("Sample-mixing plan (balanced)") == 1
    assert [r["step"] for r in read_log(s.run_dir, s.variant)] == [1, 2]
    assert (s.out_dir / DONE_FILE).exists()
