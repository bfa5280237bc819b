"""Launch a child process (training under ``accelerate launch`` or ``torchrun``, inference) with streamed logs.

One protocol for every child: the parent writes a settings object, and what else the child needs
to know (the request), to one JSON file (:func:`write_settings`), then calls :func:`launch`,
which runs ``python -m <module> --settings <file>`` under the chosen launcher; the child reads the
file back with :func:`settings_from_argv` (or :func:`read_request`).
Every line the processes print goes to a log file in the run directory; the notebook shows only
the command, and the lines that start with ``[`` (the stages' own short progress lines) unless
``echo`` asks for everything. A failure raises :class:`LaunchError` with the log's last lines.

Launchers (``distributed``, one of ``morelib.settings.LAUNCHERS``):

* ``"none"``: one plain process, no launcher (the simplest thing to debug).
* ``"auto"``: ``accelerate launch``; with more than one process it adds ``--multi_gpu``,
  which is also what gives a real multi-process (gloo) run on CPU: ``--cpu --num_processes 2``
  silently runs a single process.
* ``"multi_gpu"``: ``accelerate launch --multi_gpu`` always.
* ``"torchrun"``: ``torchrun --standalone --nproc_per_node N``.

A training module reads its settings with :func:`settings_from_argv`; the inference child
(``morelib.inference``) reads its settings and its request with :func:`read_request`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Sequence

MIXED_PRECISION = ("no", "bf16", "fp16")


class LaunchError(RuntimeError):
    """The launched process exited non-zero; the message carries the log's tail."""

    def __init__(self, message: str, returncode: int | None = None, tail: Sequence[str] = ()):
        super().__init__(message)
        self.returncode = returncode
        self.tail = list(tail)


def write_settings(settings: Any, path: str | os.PathLike, request: dict[str, Any] | None = None) -> Path:
    """Write the values a settings object was built from (``morelib.config``) as JSON, and the request.

    The launched process rebuilds the same object from them, so the profile is read once, by the
    notebook, and the run directory records exactly what each training run was given. ``request``
    (plain JSON values) is what a child needs besides its settings, e.g. which samples to predict.
    """
    from morelib.config import settings_values
    from morelib.files import write_json

    section, values = settings_values(settings)
    data = {"section": section, "values": values}
    if request is not None:
        data["request"] = request
    return write_json(path, data)


def read_request(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """The settings object and the request written by :func:`write_settings` (``{}`` without one);
    errors name the file and the field."""
    from morelib.config import ConfigError, build_settings
    from morelib.files import FileFormatError, read_json

    data = read_json(path)
    if not isinstance(data, dict) or not {"section", "values"} <= set(data) <= {"section", "values", "request"}:
        raise FileFormatError(f"{path}: expected an object with 'section' and 'values' (and optionally 'request')")
    request = data.get("request", {})
    if not isinstance(request, dict):
        raise FileFormatError(f"{path}: field 'request': expected an object")
    try:
        return build_settings(data["section"], data["values"]), request
    except ConfigError as error:
        raise FileFormatError(f"{path}: {error}") from None


def read_settings(path: str | os.PathLike):
    """The settings object written by :func:`write_settings`; errors name the file and the field."""
    return read_request(path)[0]


def settings_path_from_argv(argv: Sequence[str] | None = None) -> Path:
    """In a launched module: the ``--settings FILE`` its parent passed."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", required=True, type=Path, help="JSON written by write_settings")
    args, _ = parser.parse_known_args(argv)
    return args.settings


def settings_from_argv(argv: Sequence[str] | None = None):
    """In a launched training module: parse ``--settings FILE`` and rebuild the settings from it."""
    return read_settings(settings_path_from_argv(argv))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def launch_command(
    module: str,
    settings_path: str | os.PathLike,
    num_processes: int = 1,
    mixed_precision: str = "no",
    deepspeed_config: str | os.PathLike | None = None,
    distributed: str = "auto",
    accelerate_config: str | os.PathLike | None = None,
) -> list[str]:
    """The command line :func:`launch` runs (useful to print, or to run by hand on a server)."""
    from morelib.settings import LAUNCHERS  # the one list of launchers, the settings' choices

    if distributed not in LAUNCHERS:
        raise ValueError(f"distributed={distributed!r}: expected one of {LAUNCHERS}")
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision={mixed_precision!r}: expected one of {MIXED_PRECISION}")
    if num_processes < 1:
        raise ValueError(f"num_processes={num_processes}: need at least 1")
    target = ["-m", module, "--settings", str(settings_path)]
    if distributed == "none":
        if num_processes != 1 or deepspeed_config:
            raise ValueError("distributed='none' runs one plain process: no num_processes > 1, no DeepSpeed")
        return [sys.executable, *target]
    if distributed == "torchrun":
        if deepspeed_config:
            raise ValueError("DeepSpeed configs are passed through accelerate: use distributed='auto'")
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={num_processes}", *target]
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", str(accelerate_config)]
    command += ["--num_processes", str(num_processes), "--num_machines", "1",
                "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if not _has_cuda():
        # accelerate pins each CPU process to OMP_NUM_THREADS, or to 1 thread when it is unset.
        threads = os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // num_processes)
        command += ["--num_cpu_threads_per_process", str(threads)]
    if deepspeed_config:
        from morelib.layout import resolve_path

        if accelerate_config and _is_deepspeed_yaml(accelerate_config):
            # accelerate refuses a DeepSpeed JSON beside a config file's own DeepSpeed settings.
            raise ValueError(f"{accelerate_config} already configures DeepSpeed: give it or "
                             f"deepspeed_config={deepspeed_config}, not both")
        # Absolute, because accelerate reads it relative to the current directory; the precision
        # travels as --mixed_precision (accelerate refuses it from a config file beside this JSON).
        command += ["--use_deepspeed", "--deepspeed_config_file", str(resolve_path(deepspeed_config))]
    elif distributed == "multi_gpu" or num_processes > 1:
        command += ["--multi_gpu"]
    return command + target


def _is_deepspeed_yaml(path: str | os.PathLike) -> bool:
    import yaml

    from morelib.layout import resolve_path

    config = yaml.safe_load(resolve_path(path).read_text()) or {}
    return config.get("distributed_type") == "DEEPSPEED"


def launch(
    module: str,
    settings_path: str | os.PathLike,
    num_processes: int = 1,
    mixed_precision: str = "no",
    deepspeed_config: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    distributed: str = "auto",
    accelerate_config: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    tail_lines: int = 40,
    echo: bool = False,
) -> Path | None:
    """Run ``module`` with ``--settings settings_path`` under a launcher; log its output.

    Each output line, and the command itself, is appended to ``log_path``; only the stage's own
    progress lines (``[<module's last name>] ...`` or ``[<last name> <model>] ...``, e.g. ``[sft]``,
    ``[sft stage1]``) are also printed, and with
    ``echo`` every line is.
    Without ``log_path`` the command and every line are printed.
    Returns ``log_path``. Raises :class:`LaunchError` with the last ``tail_lines`` lines when
    the command exits non-zero.
    """
    command = launch_command(module, settings_path, num_processes, mixed_precision,
                             deepspeed_config, distributed, accelerate_config)
    from morelib.config import repo_root

    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # The launched module must import morelib even when the package is not installed.
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root()), child_env.get("PYTHONPATH")]))
    log_file = None
    if log_path is not None:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a", encoding="utf-8")
    tail: deque[str] = deque(maxlen=tail_lines)
    # The stage's own lines carry its tag ("[sft] ...", "[grpo] ...", progress lines "[sft stage1] step
    # 12/300 ..."); libraries' lines may start with "[" too ("[transformers] The tokenizer has new
    # PAD/BOS/EOS tokens ..."): those stay in the log.
    stage = module.rsplit('.', 1)[-1]
    own_tags = (f"[{stage}]", f"[{stage} ")
    try:
        if log_file:  # the command goes to the log, where a reader rerunning it by hand looks
            log_file.write("$ " + " ".join(command) + "\n")
        else:
            print("$ " + " ".join(command), flush=True)
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=child_env, cwd=repo_root(), errors="replace",
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                if echo or line.startswith(own_tags) or log_file is None:
                    print(line, end="", flush=True)
                tail.append(line.rstrip("\n"))
                if log_file:
                    log_file.write(line)
                    log_file.flush()
            returncode = process.wait()
    finally:
        if log_file:
            log_file.close()
    if returncode != 0:
        where = f"; full log: {log_path}" if log_path else ""
        raise LaunchError(
            f"{module} exited with code {returncode}{where}\nlast {len(tail)} lines:\n" + "\n".join(tail),
            returncode, tail)
    return log_path


def train_in_subprocess(module: str, settings, settings_path: str | os.PathLike | None = None,
                        log_path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> bool:
    """Train one model with ``module`` under the launcher its settings name, unless it is finished.

    ``settings`` is an ``SFTSettings`` or ``GRPOSettings``: its ``model_dir`` (skipped when finished,
    with a warning when it was trained with other settings: ``training.skip_finished``),
    ``num_processes``, ``distributed``, ``deepspeed_config`` and ``bf16`` choose the run. The settings
    file and the log go into the model's folder (``layout.ModelFolder``) unless given.
    Returns whether a training process ran.
    """
    from morelib.layout import ModelFolder
    from morelib.training import skip_finished

    if skip_finished(settings.model_dir, settings, tag=module.rsplit(".", 1)[-1]):
        return False
    folder = ModelFolder(settings.model_dir)
    settings_path = folder.settings if settings_path is None else settings_path
    log_path = folder.train_log if log_path is None else log_path
    launch(module, write_settings(settings, settings_path), num_processes=settings.num_processes,
           mixed_precision="bf16" if settings.bf16 else "no", deepspeed_config=settings.deepspeed_config,
           log_path=log_path, distributed=settings.distributed, env=env)
    return True


def train_side_by_side(module: str, runs: Sequence) -> list[str]:
    """Train every settings object in ``runs`` with :func:`train_in_subprocess`, ``side_by_side`` at a time.

    ``side_by_side`` is the first run's (one section's value for all). With 1, the runs go one
    after another and the first failure stops them, as a plain loop would. With N > 1 (CPU only),
    N one-process runs train at once, each with ``cores // N`` threads: the toy's SFT runs then
    take 0.70 x the time of two-thread runs in turn (its GRPO runs gain nothing;
    ``benchmarks/bench_side_by_side.py``). After a failure no new run starts, the running ones
    finish, and the failure is raised, so nothing already done is lost.
    Returns the names (``model_name`` or ``variant_run``) of the runs that trained.
    """
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    runs = list(runs)
    at_once = min(runs[0].side_by_side, len(runs)) if runs else 1
    if at_once <= 1:
        return [_run_name(settings) for settings in runs if train_in_subprocess(module, settings)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {"OMP_NUM_THREADS": str(max(1, cores // at_once))}
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        futures = [pool.submit(train_in_subprocess, module, settings, env=env) for settings in runs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(future.exception() is not None for future in done):
            for future in futures:
                future.cancel()  # only runs that have not started; the running ones finish
    errors = [future.exception() for future in futures if not future.cancelled() and future.exception() is not None]
    if errors:
        raise errors[0]
    return [_run_name(settings) for settings, future in zip(runs, futures) if future.result()]


def _run_name(settings) -> str:
    return getattr(settings, "variant_run", None) or getattr(settings, "model_name", None) or str(settings.model_dir)
