"""Profiles, the run directory and the run's record.

A profile is ``configs/<name>.yaml``: a ``common:`` section whose keys are injected into
every notebook that declares them (``profile``, ``run_dir``, ``seed``, ``data_dir``, ...),
and one section per notebook, named by the notebook's stem, holding only names that the
notebook's ``parameters`` cell declares. A key a notebook does not declare is an error.

String values may contain ``{run_dir}`` (replaced by the resolved run directory) and
``{repo_root}``, so a toy profile can say ``data_dir: "{run_dir}/data"`` and still follow
``--run-dir``. Relative paths are resolved against the repository root, never the cwd.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import yaml

COMMON = "common"
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "openai")


class ConfigError(ValueError):
    """A profile or an override that does not fit the notebooks."""


def repo_root() -> Path:
    """The repository root: the parent of the ``morelib`` package."""
    return Path(__file__).resolve().parent.parent


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path; a relative one is taken relative to the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (repo_root() / path).resolve()


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """The run directory as an absolute path (relative to the repository root)."""
    return resolve_path(run_dir)


@dataclass
class Profile:
    """A loaded profile: where it came from, its common values and its notebook sections."""

    name: str
    path: Path
    common: dict[str, Any]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return resolve_run_dir(self.common["run_dir"])

    def as_dict(self) -> dict[str, Any]:
        """The resolved profile as plain data (what ``run_info.json`` records)."""
        return {COMMON: copy.deepcopy(self.common), **copy.deepcopy(self.sections)}


def profile_path(profile: str | os.PathLike) -> Path:
    """``configs/<name>.yaml`` for a bare name, else the given file."""
    text = str(profile)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = resolve_path(text)
    else:
        path = repo_root() / "configs" / f"{text}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (repo_root() / "configs").glob("*.yaml"))
        raise ConfigError(f"profile {text!r}: no file {path} (known profiles: {', '.join(known)})")
    return path


def parse_override(text: str) -> tuple[str | None, str, Any]:
    """``"03_sft.epochs=2"`` -> ``("03_sft", "epochs", 2)``; ``"seed=1"`` -> ``(None, "seed", 1)``.

    The value is read as YAML, so numbers, booleans, lists and ``null`` keep their type.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE or NOTEBOOK.KEY=VALUE")
    key, raw = text.split("=", 1)
    section, _, name = key.strip().rpartition(".")
    if not name:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {error}") from None
    return (section or None), name, value


def load_profile(
    profile: str | os.PathLike,
    overrides: Iterable[str] = (),
    run_dir: str | os.PathLike | None = None,
) -> Profile:
    """Load a profile, apply ``--set`` overrides and ``--run-dir``, and resolve placeholders.

    ``run_dir`` in the result is absolute; ``{run_dir}`` and ``{repo_root}`` are substituted
    in every string value.
    """
    path = profile_path(profile)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for section, values in raw.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of parameter names")
    common = dict(raw.get(COMMON) or {})
    sections = {str(name): dict(values or {}) for name, values in raw.items() if name != COMMON}

    for override in overrides:
        section, name, value = parse_override(override)
        if section is None or section == COMMON:
            common[name] = value
        else:
            sections.setdefault(section, {})[name] = value
    if run_dir is not None:
        common["run_dir"] = str(run_dir)
    for required in ("profile", "run_dir", "seed"):
        if required not in common:
            raise ConfigError(f"{path}: section 'common' lacks {required!r}")

    resolved_run_dir = resolve_run_dir(common["run_dir"])
    common["run_dir"] = str(resolved_run_dir)
    substitutions = {"{run_dir}": str(resolved_run_dir), "{repo_root}": str(repo_root())}
    common = _substitute(common, substitutions)
    sections = {name: _substitute(values, substitutions) for name, values in sections.items()}
    return Profile(name=str(common["profile"]), path=path, common=common, sections=sections)


def _substitute(value: Any, substitutions: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, replacement in substitutions.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, dict):
        return {key: _substitute(item, substitutions) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, substitutions) for item in value]
    return value


def declared_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """Names assigned in the notebook's ``parameters`` cell, with their default values.

    Defaults that are not literals are returned as their source text.
    """
    import nbformat

    path = Path(notebook)
    nb = nbformat.read(path, as_version=4)
    cells = [cell for cell in nb.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ConfigError(f"{path}: no cell tagged 'parameters'")
    source = "\n".join(cell.source for cell in cells)
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ConfigError(f"{path}: parameters cell, line {error.lineno}: {error.msg}") from None
    declared: dict[str, Any] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    declared[target.id] = ast.literal_eval(value) if value is not None else None
                except ValueError:
                    declared[target.id] = ast.get_source_segment(source, value)
    return declared


def notebook_parameters(profile: Profile | str, notebook: str | os.PathLike) -> dict[str, Any]:
    """The values papermill injects into ``notebook`` for ``profile``.

    ``notebook`` is a path or a stem under ``notebooks/``. Common keys go in only where the
    notebook declares them; every key of the notebook's own section must be declared.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    path = Path(notebook)
    if path.suffix != ".ipynb":
        path = repo_root() / "notebooks" / f"{path.name}.ipynb"
    declared = declared_parameters(path)
    section = profile.sections.get(path.stem, {})
    unknown = [key for key in section if key not in declared]
    if unknown:
        raise ConfigError(
            f"{profile.path}: section {path.stem!r} sets {', '.join(map(repr, unknown))}, "
            f"which notebook {path} does not declare in its parameters cell "
            f"(declared: {', '.join(declared) or 'nothing'})"
        )
    values = {key: value for key, value in profile.common.items() if key in declared}
    values.update(section)
    return values


def validate_profile(profile: Profile, notebooks: Iterable[Path]) -> None:
    """Fail fast: every section names an existing notebook and only its declared parameters."""
    notebooks = list(notebooks)
    stems = {path.stem for path in notebooks}
    orphans = [name for name in profile.sections if name not in stems]
    if orphans:
        raise ConfigError(
            f"{profile.path}: section(s) {', '.join(map(repr, orphans))} name no notebook "
            f"(notebooks: {', '.join(sorted(stems))})"
        )
    for path in notebooks:
        notebook_parameters(profile, path)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices) in one place."""
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # numpy comes with torch; tolerate its absence in slim tools
        pass
    import torch

    torch.manual_seed(seed)  # also seeds every CUDA device


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
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/run_info.json``: resolved config, versions, seed, hardware, git commit."""
    run_dir = resolve_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile.name,
        "profile_file": str(profile.path),
        "seed": profile.common.get("seed"),
        "config": config if config is not None else profile.as_dict(),
        "versions": {"python": sys.version.split()[0], **library_versions()},
        "hardware": hardware(),
        "git": git_commit(),
        **(extra or {}),
    }
    path = run_dir / "run_info.json"
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")
    return path
