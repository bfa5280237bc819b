"""Launching a training module as a subprocess: settings files, command lines, streaming, errors."""

import json
import os
from pathlib import Path

import pytest

from morelib.launch import LaunchError, launch, launch_command, read_settings, settings_from_argv, write_settings


# A "training module": reports its rank and world size, then fails if asked to. It reads its own
# small settings file; launch() only hands it `--settings FILE`.
MODULE = '''
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--settings", required=True)
s = json.load(open(parser.parse_known_args()[0].settings))
rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
if world != "1":
    import torch.distributed as dist
    dist.init_process_group("gloo")
    world = str(dist.get_world_size())
    dist.destroy_process_group()
print("a trainer's chatter that only the log file keeps", flush=True)
print("[transformers] The tokenizer has new PAD/BOS/EOS tokens (a library's warning)", flush=True)
print(f"[toytrain] rank {rank} of {world} writes to {os.path.basename(s['output_dir'])}", flush=True)
print("[toytrain stage1] step 1/2 (50%): loss 0.5, 0.10 s/step, 0s left", flush=True)
print("[toytrainer] another module's line", flush=True)
if s.get("fail"):
    print("about to fail", file=sys.stderr, flush=True)
    sys.exit(3)
'''


def toy_settings(path: Path, **values) -> Path:
    path.write_text(json.dumps({key: str(value) if isinstance(value, Path) else value for key, value in values.items()}))
    return path


@pytest.fixture
def module(tmp_path):
    (tmp_path / "toytrain.py").write_text(MODULE)
    return {"PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}


def test_settings_round_trip_through_the_settings_file(tmp_path):
    """The launched process rebuilds exactly the object the notebook built, changes included."""
    from morelib.config import load_settings, with_changes

    settings = with_changes(load_settings("05_grpo", "toy", ["gamma=0.25"], run_dir=tmp_path / "run"),
                            variant="raw", reward_weights=[1.0, 0.5, 2.0])
    path = write_settings(settings, tmp_path / "s" / "settings.json")
    assert read_settings(path) == settings
    # Arguments a launcher adds of its own are left alone.
    back = settings_from_argv(["--settings", str(path), "--local-rank=0"])
    assert back == settings and (back.variant, back.gamma, back.generation_batch_size) == ("raw", 0.25, 8)


def test_a_bad_settings_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"section": "03_sft", "values": {"learning_rat": 0.1}}')
    with pytest.raises(ValueError, match=r"settings\.json: .*section '03_sft': unknown key 'learning_rat' "
                                         r"\(did you mean 'learning_rate'\?\)"):
        read_settings(path)
    path.write_text('{"section": "09_nothing", "values": {}}')
    with pytest.raises(ValueError, match=r"settings\.json: .*'09_nothing'"):
        read_settings(path)
    path.write_text('{"section": "03_sft",\n oops}')
    with pytest.raises(ValueError, match=r"settings\.json:2: not valid JSON"):
        read_settings(path)
    with pytest.raises(SystemExit):
        settings_from_argv([])  # --settings is required


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


def test_launch_shows_progress_lines_and_logs_everything(tmp_path, module, capfd):
    settings = toy_settings(tmp_path / "settings.json", output_dir=tmp_path / "ckpt")
    log = launch("toytrain", settings, log_path=tmp_path / "logs" / "train.log", distributed="none", env=module)
    shown = capfd.readouterr().out
    assert "[toytrain] rank 0 of 1 writes to ckpt" in shown and "chatter" not in shown
    assert "[toytrain stage1] step 1/2" in shown  # a model's progress line (morelib.training.progress_printer)
    assert "[toytrainer]" not in shown
    assert "$ " not in shown and "toytrain --settings" not in shown  # the command is in the log, not on screen
    assert "[transformers]" not in shown and "[transformers]" in log.read_text()  # a library's line, not the stage's
    assert "rank 0 of 1 writes to ckpt" in log.read_text() and "chatter" in log.read_text()
    assert log.read_text().startswith("$ ") and "toytrain --settings" in log.read_text()


def test_launch_failure_raises_with_the_log_tail(tmp_path, module):
    settings = toy_settings(tmp_path / "settings.json", output_dir=tmp_path / "ckpt", fail=True)
    with pytest.raises(LaunchError) as error:
        launch("toytrain", settings, log_path=tmp_path / "train.log", distributed="none", env=module)
    message = str(error.value)
    assert "exited with code 3" in message and "about to fail" in message and "train.log" in message


def test_accelerate_multi_gpu_gives_two_real_processes_on_cpu(tmp_path, module):
    # `--cpu --num_processes 2` silently runs one process; --multi_gpu (gloo) runs two
    # (docs/paper-notes.md, "Two CPU processes need --multi_gpu").
    settings = toy_settings(tmp_path / "settings.json", output_dir=tmp_path / "ckpt")
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


# ----------------------------------------------------------------------------- accelerate configs

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def accelerate_launch_env(argv, cwd, monkeypatch):
    """What ``accelerate launch ARGV`` run in ``cwd`` hands its processes: accelerate's own parsing,
    validation and environment; then the DeepSpeed plugin its processes build from that environment."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    monkeypatch.chdir(cwd)
    for name in [n for n in os.environ if n.startswith("ACCELERATE_")]:
        monkeypatch.delenv(name)
    args = launch_command_parser().parse_args([*argv, "train.py"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if not args.use_deepspeed:
        return args, None
    # The same field list accelerate's launch_command builds before starting DeepSpeed processes.
    fields = list(defaults.deepspeed_config) if defaults else []
    fields += ["mixed_precision"] if mixed_precision_from_config else []
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    for name, value in env.items():
        if name.startswith("ACCELERATE_"):
            monkeypatch.setenv(name, value)
    return args, DeepSpeedPlugin()


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_work_by_hand_from_any_directory(config, tmp_path, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    assert isinstance(load_config_from_file(str(config)), ClusterConfig)
    args, plugin = accelerate_launch_env(["--config_file", str(config)], tmp_path, monkeypatch)
    assert args.mixed_precision == "bf16" and args.num_processes >= 1
    if "deepspeed" not in config.name:
        assert plugin is None
        return
    # The inline settings must say what morelib.launch's DeepSpeed JSON of the same stage says.
    json_file = REPO / "configs" / "deepspeed" / f"{config.stem.split('_')[-1]}.json"
    reference = json.loads(json_file.read_text())["zero_optimization"]
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == reference["stage"]
    assert plugin.zero3_init_flag == (reference["stage"] == 3)
    if reference["stage"] == 3:
        assert plugin.zero3_save_16bit_model == reference["stage3_gather_16bit_weights_on_model_save"]
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_launch_passes_deepspeed_json_that_accelerate_accepts_from_any_directory(stage, tmp_path, monkeypatch):
    command = launch_command("m", "s.json", 8, "bf16", deepspeed_config=f"configs/deepspeed/{stage}.json")
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    json_path = Path(command[command.index("--deepspeed_config_file") + 1])
    assert json_path.is_absolute() and json_path == REPO / "configs" / "deepspeed" / f"{stage}.json"
    args, plugin = accelerate_launch_env(command[3:-4], tmp_path, monkeypatch)
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == int(stage[-1])
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_launch_refuses_two_deepspeed_configs():
    with pytest.raises(ValueError, match="already configures DeepSpeed"):
        launch_command("m", "s.json", 8, "bf16", deepspeed_config="configs/deepspeed/zero3.json",
                       accelerate_config="configs/accelerate/deepspeed_zero3.yaml")


def test_train_in_subprocess_skips_a_finished_model_and_launches_the_rest(tmp_path, monkeypatch):
    from morelib.config import load_settings
    from morelib.launch import train_in_subprocess

    calls = []
    monkeypatch.setattr("morelib.launch.launch", lambda module, path, **options: calls.append((module, path, options)))
    settings = load_settings("03_sft", "toy", run_dir=tmp_path / "run")
    assert train_in_subprocess("morelib.sft", settings, tmp_path / "s.json", tmp_path / "train.log")
    [(module, path, options)] = calls
    assert module == "morelib.sft" and read_settings(path) == settings
    assert options == {"num_processes": 1, "mixed_precision": "no", "deepspeed_config": None,
                       "log_path": tmp_path / "train.log", "distributed": "none", "env": None}  # the toy profile's launcher
    settings.model_dir.mkdir(parents=True)
    (settings.model_dir / "done.json").write_text("{}")
    assert not train_in_subprocess("morelib.sft", settings, tmp_path / "s.json", tmp_path / "train.log")
    assert len(calls) == 1


def test_side_by_side_trains_n_at_once_each_with_its_share_of_the_cores(tmp_path, monkeypatch):
    import threading
    import time

    from morelib.config import load_settings, with_changes
    from morelib.launch import LaunchError, train_side_by_side

    running, most, started, lock = [0], [0], [], threading.Lock()

    def fake_train(module, settings, env=None):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            started.append((settings.model_name, env))
        time.sleep(0.3 if settings.model_name == "a" else 0.05)
        with lock:
            running[0] -= 1
        if settings.model_name == "b":
            raise LaunchError("b failed")
        return settings.model_name != "c"  # c was finished before: nothing to train

    monkeypatch.setattr("morelib.launch.train_in_subprocess", fake_train)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    base = load_settings("03_sft", "toy", run_dir=tmp_path / "run")
    assert base.side_by_side == 2 and base.distributed == "none"
    runs = [with_changes(base, model_name=name) for name in "acde"]
    assert train_side_by_side("morelib.sft", runs) == ["a", "d", "e"]
    assert most[0] == 2 and sorted(name for name, _ in started) == list("acde")
    assert {env["OMP_NUM_THREADS"] for _, env in started} == {"2"}  # 4 cores, 2 runs at once

    # A failure: the running run finishes, no queued run starts, and the failure comes last.
    started.clear()
    failing = [with_changes(base, model_name=name) for name in "abcdef"]
    with pytest.raises(LaunchError, match="b failed"):
        train_side_by_side("morelib.sft", failing)
    names = [name for name, _ in started]
    assert set(names[:2]) == {"a", "b"} and "f" not in names and running[0] == 0

    # One at a time: the caller's environment, and the first failure stops the rest, as a loop would.
    started.clear(), most.__setitem__(0, 0)
    one_at_a_time = [with_changes(run, side_by_side=1) for run in failing]
    with pytest.raises(LaunchError, match="b failed"):
        train_side_by_side("morelib.sft", one_at_a_time)
    assert most[0] == 1 and started == [("a", None), ("b", None)]
