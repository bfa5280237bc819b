"""The trainer lifecycle SFT and GRPO share: skip a finished model, resume a killed run, and write
the log and the summary, the summary last. (The real trainers' resume is tested in test_sft and
test_grpo; here a stand-in trainer shows the order of events.)"""

import json
from types import SimpleNamespace

import pytest

from morelib.training import (
    DONE_FILE, LOG_FILE, is_done, last_checkpoint, read_log, read_summary, resumable, train_to_done,
)


class FakeTrainer:
    """What train_to_done uses of a transformers Trainer."""

    def __init__(self, output_dir, events, rank=0, world=1, fail=False):
        self.args = SimpleNamespace(output_dir=str(output_dir))
        self.train_dataset = ["row"] * 6
        self.accelerator = SimpleNamespace(process_index=rank, num_processes=world,
                                           wait_for_everyone=lambda: events.append("barrier"))
        self.state = SimpleNamespace(global_step=0, log_history=[])
        self.processing_class = SimpleNamespace(save_pretrained=lambda path: events.append("processor"))
        self.events, self.rank, self.fail = events, rank, fail

    def train(self, resume_from_checkpoint=None):
        self.events.append(("train", resume_from_checkpoint))
        if self.fail:
            raise KeyboardInterrupt  # as if the run were killed mid-way
        self.state.global_step = 3
        self.state.log_history = [{"step": s, "loss": 1.0 / s, "epoch": s / 3} for s in (1, 2, 3)]

    def is_world_process_zero(self):
        return self.rank == 0


def run(model_dir, events, **trainer_options):
    def save_final(trainer, out):
        assert not is_done(out), "done.json must be written after the final model"
        events.append("save_final")
        (out / "model.safetensors").write_text("weights")

    return train_to_done(model_dir, lambda: FakeTrainer(model_dir / "ckpt", events, **trainer_options), save_final,
                         summary=lambda trainer: {"extra": "yes"}, tag="test")


def test_a_fresh_run_trains_saves_then_writes_log_and_summary(tmp_path, capsys):
    events = []
    out = run(tmp_path / "m", events)
    assert out == tmp_path / "m" and is_done(out)
    assert events == [("train", None), "save_final", "processor", "barrier"]
    assert read_log(out) == [{"step": s, "loss": 1.0 / s, "epoch": s / 3} for s in (1, 2, 3)]
    summary = read_summary(out)
    assert {k: summary[k] for k in ("world_size", "global_step", "rows", "extra")} == {
        "world_size": 1, "global_step": 3, "rows": 6, "extra": "yes"}
    assert summary["train_seconds"] >= 0 and summary["peak_rss_mb"] > 0
    assert "[test] rank 0 of 1: 6 rows" in capsys.readouterr().out


def test_a_killed_run_leaves_no_summary_and_the_rerun_resumes(tmp_path, capsys):
    model_dir = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        run(model_dir, [], fail=True)
    assert model_dir.is_dir() and not is_done(model_dir)
    for step in (2, 10, 4):  # the newest is the highest step, not the last written
        (model_dir / "ckpt" / f"checkpoint-{step}").mkdir(parents=True)
    events = []
    run(model_dir, events)
    assert events[0] == ("train", str(model_dir / "ckpt" / "checkpoint-10"))
    assert "resuming from" in capsys.readouterr().out and is_done(model_dir)


def test_a_finished_model_is_skipped(tmp_path, capsys):
    run(tmp_path / "m", [])
    before = (tmp_path / "m" / DONE_FILE).read_text()
    events = []
    assert run(tmp_path / "m", events) == tmp_path / "m"
    assert events == [] and (tmp_path / "m" / DONE_FILE).read_text() == before
    assert "already holds a finished model; skipping" in capsys.readouterr().out


def test_a_finished_model_trained_with_other_settings_is_kept_with_a_warning(tmp_path, capsys):
    from morelib.config import load_settings, settings_values

    def train(**changes):
        settings = load_settings("05_grpo", "toy", run_dir=tmp_path, **changes)
        _, values = settings_values(settings)
        return train_to_done(tmp_path / "m", lambda: FakeTrainer(tmp_path / "m" / "ckpt", []),
                             lambda trainer, out: (out / "model.safetensors").write_text("w"),
                             summary=lambda trainer: {"settings": values}, tag="test", settings=settings)

    train(learning_rate=1e-3)
    before = (tmp_path / "m" / DONE_FILE).read_text()
    capsys.readouterr()
    # the same learned settings, another list of variants, a default given explicitly: no warning
    train(learning_rate=1e-3, variants=["raw"], variant="progressive")
    assert "warning" not in capsys.readouterr().out
    train(learning_rate=1e-3, length_threshold=400, beta=0.04)
    out = capsys.readouterr().out
    assert f"[test] warning: {tmp_path / 'm' / DONE_FILE} was trained with other settings, kept as it is: " \
           "beta: 0.001 -> 0.04; length_threshold: 350 -> 400" in out
    assert (tmp_path / "m" / DONE_FILE).read_text() == before


def test_only_the_main_process_writes(tmp_path):
    events = []
    out = tmp_path / "m"
    run(out, events, rank=1, world=2)
    assert events == [("train", None), "save_final", "barrier"]
    assert not is_done(out) and not (out / LOG_FILE).exists()


def test_last_checkpoint(tmp_path):
    assert last_checkpoint(tmp_path / "missing") is None
    assert last_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint-7").mkdir()
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / "runs").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-12")


def test_a_broken_log_names_file_and_line(tmp_path):
    (tmp_path / LOG_FILE).write_text('{"step": 1}\n{"step": \n')
    with pytest.raises(ValueError, match=rf"{LOG_FILE}:2"):
        read_log(tmp_path)
    with pytest.raises(FileNotFoundError, match=DONE_FILE):
        read_summary(tmp_path)


def test_resumable_keeps_the_trainer_class():
    from transformers import Trainer

    cls = resumable(Trainer)
    assert issubclass(cls, Trainer) and cls.__name__ == "ResumableTrainer"
    assert "_load_from_checkpoint" in vars(cls)


def test_loss_curves_of_finished_models_only(tmp_path):
    from morelib import report, training_logs

    run(tmp_path / "stage1", [])
    (tmp_path / "unfinished").mkdir()
    frame = training_logs.training_log(tmp_path / "stage1")
    assert frame["loss"].tolist() == [1.0, 0.5, pytest.approx(1 / 3)]
    figure = report.plot_loss_curves({"stage1": tmp_path / "stage1", "unfinished": tmp_path / "unfinished"})
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["stage1"]
    assert list(lines[0].get_xdata()) == [1 / 3, 2 / 3, 1.0]
    json.dumps(read_summary(tmp_path / "stage1"))  # plain JSON, for the notebook's table


@pytest.mark.parametrize("max_steps,lines,logging_steps", [(1000, 50, 1), (2000, 50, 10), (7, 50, 1), (300, 0, 1)])
def test_progress_lines_are_few_and_say_step_loss_speed_and_time_left(capsys, monkeypatch, max_steps, lines, logging_steps):
    import morelib.training as training
    from morelib.training import progress_printer

    clock = iter(range(0, 10 * (max_steps + 2), 2))  # 2 s per step
    monkeypatch.setattr(training.time, "time", lambda: next(clock))
    callback = progress_printer("sft stage1", lines)
    state = SimpleNamespace(global_step=0, max_steps=max_steps, is_world_process_zero=True)
    callback.on_train_begin(None, state, None)
    for step in range(1, max_steps + 1):
        state.global_step = step
        if step % logging_steps == 0 or step == 1:
            callback.on_log(None, state, None, logs={"loss": 1.0 / step, "learning_rate": 1e-4})
    callback.on_train_end(None, state, None)
    out = capsys.readouterr().out.splitlines()
    if lines == 0:
        assert out == []
        return
    assert len(out) <= lines + 2 and len(out) >= min(max_steps, lines) // 2
    assert out[0] == f"[sft stage1] step 1/{max_steps} ({100 / max_steps:.0f}%): loss 1, 2.00 s/step, {training.format_duration(2 * (max_steps - 1))} left"
    assert out[-1].startswith(f"[sft stage1] trained {max_steps} steps in ")
    assert all(" s/step, " in line and line.endswith(" left") for line in out[:-1])


def test_durations_read_as_hours_minutes_seconds():
    from morelib.training import format_duration

    assert [format_duration(s) for s in (12, 245, 3720, 90061)] == ["12s", "4m05s", "1h02m", "25h01m"]


def test_leave_process_group_destroys_the_group_a_finished_run_leaves():
    # In a process of its own: a test before this one in the same worker may hold a process group.
    import subprocess
    import sys

    code = """
import socket, os
import torch.distributed as dist
from morelib.training import leave_process_group
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(probe.getsockname()[1]))
dist.init_process_group("gloo", rank=0, world_size=1)
assert dist.is_initialized()
leave_process_group()
assert not dist.is_initialized()
leave_process_group()  # nothing left to destroy: a no-op, as in a one-process run
print("left")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "left", out.stderr[-2000:]
