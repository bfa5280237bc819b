"""Launch training as a subprocess (``accelerate launch`` or ``torchrun``) with streamed logs.

A notebook writes its training settings (a dataclass) to JSON, then calls :func:`launch`,
which runs ``python -m <module> --settings <file>`` under the chosen launcher. Every line the
processes print is shown in the notebook and appended to a log file; a failure raises
:class:`LaunchError` with the log's last lines.

Launchers (``distributed``):

* ``"none"``: one plain process, no launcher (the simplest thing to debug).
* ``"auto"``: ``accelerate launch``; with more than one process it adds ``--multi_gpu``,
  which is also what gives a real multi-process (gloo) run on CPU: ``--cpu --num_processes 2``
  silently runs a single process.
* ``"multi_gpu"``: ``accelerate launch --multi_gpu`` always.
* ``"torchrun"``: ``torchrun --standalone --nproc_per_node N``.

A training module reads its settings with :func:`settings_from_argv`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from collections import deque
from pathlib import Path
from typing import Any, Sequence, TypeVar

DISTRIBUTED = ("auto", "none", "multi_gpu", "torchrun")
MIXED_PRECISION = ("no", "bf16", "fp16")
T = TypeVar("T")


class LaunchError(RuntimeError):
    """The launched training exited non-zero; the message carries the log's tail."""


def write_settings(settings: Any, path: str | os.PathLike) -> Path:
    """Write a settings dataclass as JSON (paths become strings, tuples lists)."""
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"write_settings expects a dataclass instance, got {type(settings).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"__class__": type(settings).__name__, **dataclasses.asdict(settings)}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def read_settings(cls: type[T], path: str | os.PathLike) -> T:
    """Read a settings dataclass written by :func:`write_settings`.

    Unknown or missing fields are errors naming the field and the file. Fields annotated as
    ``Path`` or ``tuple`` get their type back; nested dataclasses are rebuilt.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: not valid JSON: {error.msg}") from None
    return _build(cls, data, str(path))


def _build(cls: type[T], data: dict, where: str) -> T:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    data = {key: value for key, value in data.items() if key != "__class__"}
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    missing = [
        name for name, field in fields.items()
        if name not in data and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints.get(name), value, f"{where}: field {name}") for name, value in data.items()}
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Give JSON values back the types JSON cannot carry (Path, tuple, nested dataclasses)."""
    if value is None or hint is None:
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", ())) else (hint,)
    for option in options:
        origin = typing.get_origin(option) or option
        if option is Path and isinstance(value, str):
            return Path(value)
        if origin is tuple and isinstance(value, list):
            return tuple(value)
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return _build(option, value, where)
    return value


def settings_from_argv(cls: type[T], argv: Sequence[str] | None = None) -> T:
    """In a launched training module: parse ``--settings FILE`` and read ``cls`` from it."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", required=True, type=Path, help="JSON written by write_settings")
    args, _ = parser.parse_known_args(argv)
    return read_settings(cls, args.settings)


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
    if distributed not in DISTRIBUTED:
        raise ValueError(f"distributed={distributed!r}: expected one of {DISTRIBUTED}")
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
        command += ["--use_deepspeed", "--deepspeed_config_file", str(deepspeed_config)]
    elif distributed == "multi_gpu" or num_processes > 1:
        command += ["--multi_gpu"]
    return command + target


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
) -> Path | None:
    """Run ``module`` with ``--settings settings_path`` under a launcher; stream its output.

    Each output line is printed (so it shows in the notebook) and appended to ``log_path``.
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
    try:
        if log_file:
            log_file.write("$ " + " ".join(command) + "\n")
        print("$ " + " ".join(command), flush=True)
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=child_env, cwd=repo_root(), errors="replace",
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
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
            f"{module} exited with code {returncode}{where}\nlast {len(tail)} lines:\n" + "\n".join(tail)
        )
    return log_path
