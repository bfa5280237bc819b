"""Run provenance: what ``run_info.json`` records of each invocation, so a result can be traced to
what made it (resolved profile, overrides, library versions, hardware, git commit, seed)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from morelib.config import Profile
from morelib.layout import RunLayout, repo_root

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "openai")


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict[str, Any]:
    """CPU count, RAM and the visible GPUs."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "ram_gb": None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "gpus": [],
    }
    try:
        info["ram_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    return info


def git_commit() -> dict[str, Any]:
    """The checked-out commit and whether the tree has uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def write_run_info(run_dir: str | os.PathLike, profile: Profile, config: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None, notebooks: Iterable[str] = (),
                   overrides: Iterable[str] = ()) -> Path:
    """Write ``run_dir/run_info.json``: resolved config, versions, seed, hardware, git commit.

    The top level describes the latest invocation. ``notebooks`` maps each notebook ever run
    into this directory to the record of the invocation that ran it last (config, overrides,
    commit, versions), so a chain resumed with other settings keeps what each step ran with.
    """
    from morelib.files import FileFormatError, read_json, write_json

    layout = RunLayout(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    record = {
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile.name,
        "profile_file": str(profile.path),
        "overrides": list(overrides),
        "seed": profile.common.get("seed"),
        "config": config if config is not None else profile.as_dict(),
        "versions": {"python": sys.version.split()[0], **library_versions()},
        "hardware": hardware(),
        "git": git_commit(),
    }
    try:
        previous = read_json(layout.run_info) if layout.run_info.is_file() else {}
    except FileFormatError:
        previous = {}  # a broken record is replaced, not a reason to stop a run
    kept = previous.get("notebooks") if isinstance(previous, dict) else None
    by_notebook = dict(kept) if isinstance(kept, dict) else {}
    for stem in notebooks:
        by_notebook[stem] = record
    return write_json(layout.run_info, {**record, **(extra or {}), "notebooks": dict(sorted(by_notebook.items()))})
