"""Launching a training module as a subprocess: settings files, command lines, streaming, errors."""

import dataclasses
from pathlib import Path

import pytest

from morelib.launch import LaunchError, launch, launch_command, read_settings, settings_from_argv, write_settings


@dataclasses.dataclass
class Lora:
    r: int = 8
    """LoRA rank."""


@dataclasses.dataclass
class Settings:
    output_dir: Path
    """Where checkpoints go."""
    epochs: int = 1
    sizes: tuple[int, ...] = (1, 2)
    lora: Lora | None = None
    note: str = ""


# A "training module": reports its rank and world size, then fails if asked to.
MODULE = '''
import os, sys
from dataclasses import dataclass
from pathlib import Path
from morelib.launch import settings_from_argv

@dataclass
class S:
    output_dir: Path
    fail: bool = False

if __name__ == "__main__":
    s = settings_from_argv(S)
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if world != "1":
        import torch.distributed as dist
        dist.init_process_group("gloo")
        world = str(dist.get_world_size())
        dist.destroy_process_group()
    print(f"rank {rank} of {world} writes to {s.output_dir.name}", flush=True)
    if s.fail:
        print("about to fail", file=sys.stderr, flush=True)
        sys.exit(3)
'''


@dataclasses.dataclass
class S:  # the same fields as the module's S
    output_dir: Path
    fail: bool = False


@pytest.fixture
def module(tmp_path):
    (tmp_path / "toytrain.py").write_text(MODULE)
    return {"PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}


def test_settings_round_trip_restores_paths_tuples_and_nested(tmp_path):
    settings = Settings(output_dir=tmp_path / "out", epochs=3, sizes=(4, 5), lora=Lora(r=16))
    path = write_settings(settings, tmp_path / "s" / "settings.json")
    assert read_settings(Settings, path) == settings
    assert settings_from_argv(Settings, ["--settings", str(path)]) == settings


def test_settings_with_unknown_or_missing_field_name_the_field_and_file(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"output_dir": "x", "epochs": 2, "learning_rat": 0.1}')
    with pytest.raises(ValueError, match=r"settings.json: unknown field\(s\) learning_rat for Settings"):
        read_settings(Settings, path)
    path.write_text('{"epochs": 2}')
    with pytest.raises(ValueError, match=r"missing field\(s\) output_dir"):
        read_settings(Settings, path)
    path.write_text('{"epochs": 2,\n oops}')
    with pytest.raises(ValueError, match="settings.json, line 2"):
        read_settings(Settings, path)


def test_launch_commands():
    auto1 = launch_command("m", "s.json")
    assert auto1[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" not in auto1
    assert auto1[-4:] == ["-m", "m", "--settings", "s.json"]
    auto2 = launch_command("m", "s.json", num_processes=2)
    assert "--multi_gpu" in auto2 and auto2[auto2.index("--num_processes") + 1] == "2"
    ds = launch_command("m", "s.json", 8, "bf16", deepspeed_config="configs/deepspeed/zero3.json")
    assert "--use_deepspeed" in ds and "--multi_gpu" not in ds and "bf16" in ds
    assert launch_command("m", "s.json", 2, distributed="torchrun")[1:5] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert launch_command("m", "s.json", distributed="none")[1:] == ["-m", "m", "--settings", "s.json"]
    for bad in ({"distributed": "mpi"}, {"mixed_precision": "fp8"}, {"num_processes": 0},
                {"distributed": "none", "num_processes": 2}):
        with pytest.raises(ValueError):
            launch_command("m", "s.json", **bad)


def test_launch_streams_output_to_notebook_and_log(tmp_path, module, capfd):
    settings = write_settings(S(output_dir=tmp_path / "ckpt"), tmp_path / "settings.json")
    log = launch("toytrain", settings, log_path=tmp_path / "logs" / "train.log", distributed="none", env=module)
    assert "rank 0 of 1 writes to ckpt" in capfd.readouterr().out
    assert "rank 0 of 1 writes to ckpt" in log.read_text()


def test_launch_failure_raises_with_the_log_tail(tmp_path, module):
    settings = write_settings(S(output_dir=tmp_path / "ckpt", fail=True), tmp_path / "settings.json")
    with pytest.raises(LaunchError) as error:
        launch("toytrain", settings, log_path=tmp_path / "train.log", distributed="none", env=module)
    message = str(error.value)
    assert "exited with code 3" in message and "about to fail" in message and "train.log" in message


def test_accelerate_multi_gpu_gives_two_real_processes_on_cpu(tmp_path, module):
    # method-facts: `--cpu --num_processes 2` silently runs one process; --multi_gpu (gloo) runs two.
    settings = write_settings(S(output_dir=tmp_path / "ckpt"), tmp_path / "settings.json")
    log = launch("toytrain", settings, num_processes=2, log_path=tmp_path / "train.log", env=module)
    text = log.read_text()
    assert "rank 0 of 2" in text and "rank 1 of 2" in text


def test_cpu_runs_use_every_core_unless_told(monkeypatch):
    # accelerate would pin a CPU run to one thread when OMP_NUM_THREADS is unset.
    monkeypatch.setattr("morelib.launch._has_cuda", lambda: False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    command = launch_command("m", "s.json", num_processes=2)
    assert command[command.index("--num_cpu_threads_per_process") + 1] == "4"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    command = launch_command("m", "s.json")
    assert command[command.index("--num_cpu_threads_per_process") + 1] == "1"
    monkeypatch.setattr("morelib.launch._has_cuda", lambda: True)
    assert "--num_cpu_threads_per_process" not in launch_command("m", "s.json")
