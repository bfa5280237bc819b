"""Profiles: YAML files that give every setting its value, turned into the settings objects.

A profile is ``configs/<name>.yaml``. Its sections are the classes of ``morelib.settings``:
``common`` (run directory, seed, data, base model, image resolution), ``inference`` (decoding,
shared by every backend) and one section per notebook, named by the notebook's stem. ``common``
values go into every section whose class has a field of the same name.

    from morelib.config import load_settings
    grpo = load_settings("05_grpo", profile="toy", overrides=["gamma=0.25"])

A key that no field of its section's class declares is an error that names where it came from
(the profile file or the ``--set``), the section and the key. String values may contain
``{run_dir}`` and ``{repo_root}``; relative paths are resolved against the repository root.
Overrides are ``KEY=VALUE`` or ``SECTION.KEY=VALUE`` with a YAML value; a bare key goes to
``common`` when ``common`` has it, else to the notebook's own section.
"""

from __future__ import annotations

import difflib
import json
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from morelib.layout import RunLayout, repo_root, resolve_path

COMMON = "common"

__all__ = ["ConfigError", "Profile", "load_profile", "load_settings", "build_settings", "with_changes",
           "repo_root", "resolve_path", "seed_everything"]


class ConfigError(ValueError):
    """A profile or an override that does not fit the settings classes."""


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """The run directory as an absolute path (relative to the repository root)."""
    return resolve_path(run_dir)


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
    """``"05_grpo.gamma=0.25"`` -> ``("05_grpo", "gamma", 0.25)``; ``"seed=1"`` -> ``(None, "seed", 1)``.

    The value is read as YAML, so numbers, booleans, lists and ``null`` keep their type.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE or SECTION.KEY=VALUE")
    key, raw = text.split("=", 1)
    section, _, name = key.strip().rpartition(".")
    if not name:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {_yaml_problem(error)}") from None
    return (section or None), name, value


def _yaml_where(error: yaml.YAMLError) -> str:
    """``:LINE:COLUMN`` of a YAML error (1-based), or nothing."""
    mark = getattr(error, "problem_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def _yaml_problem(error: yaml.YAMLError) -> str:
    """The YAML error in one line: what was expected and what was found (PyYAML's is several lines)."""
    parts = [getattr(error, "context", None), getattr(error, "problem", None)]
    text = ", ".join(p for p in parts if p) or str(error)
    return " ".join(text.split())


def _sections():
    from morelib.settings import SECTIONS

    return SECTIONS


def _fields(section: str) -> set[str]:
    from morelib.settings import field_names

    return field_names(_sections()[section])


def _unknown_key(origin: str, section: str, key: str, bare: bool = False) -> ConfigError:
    close = difflib.get_close_matches(key, sorted(_fields(section)), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if bare and not close:
        # A bare key went to common (or the notebook's section): point to the sections that have it.
        names = {other for name in _sections() for other in _fields(name)}
        meant = key if key in names else next(iter(difflib.get_close_matches(key, sorted(names), n=1)), None)
        owners = [f"{name}.{meant}" for name in _sections() if meant in _fields(name)]
        if owners:
            hint = f" (did you mean {' or '.join(repr(q) for q in owners[:3])}?)"
    return ConfigError(f"{origin + ': ' if origin else ''}section {section!r}: unknown key {key!r}{hint}")


def _check_key(origin: str, section: str, key: str, bare: bool = False) -> None:
    """A key the section's class declares and the profile may set (derived keys are the code's)."""
    from morelib.settings import DERIVED

    if key not in _fields(section):
        raise _unknown_key(origin, section, key, bare)
    if key in DERIVED.get(section, ()):
        raise ConfigError(f"{origin}: section {section!r}: {key!r} is derived by morelib.settings and cannot be set")


@dataclass
class Profile:
    """A loaded profile: its values per section, and where each value came from (for errors)."""

    name: str
    path: Path
    sections: dict[str, dict[str, Any]]
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    # (origin, section, key) of keys not checked yet: a training section's, checked when it is built
    unchecked: tuple[tuple[str, str, str], ...] = ()

    @property
    def common(self) -> dict[str, Any]:
        return self.sections[COMMON]

    @property
    def run_dir(self) -> Path:
        return resolve_run_dir(self.common["run_dir"])

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    def origin(self, section: str, key: str) -> str:
        return self.origins.get((section, key), str(self.path))

    def values(self, section: str) -> dict[str, Any]:
        """The values a section's class is built from: the common ones it has a field for, then its own."""
        if section not in _sections():
            raise ConfigError(f"{self.path}: no section {section!r} (sections: {', '.join(_sections())})")
        for origin, where, key in self.unchecked:
            if where == section:
                _check_key(origin, where, key)
        names = _fields(section)
        merged = {k: v for k, v in self.common.items() if k in names}
        merged.update(self.sections.get(section, {}))
        return merged

    def settings(self, section: str, **changes: Any):
        """The settings object of ``section``, with ``changes`` applied (e.g. ``variant="raw"``)."""
        values = self.values(section)
        try:
            return build_settings(section, {**values, **changes})
        except ConfigError as error:
            # A value refused by the class ("field: ...") is blamed on the --set that gave it, if one did.
            text = str(error).removeprefix(f"section {section!r}: ")
            key = text.split(":", 1)[0]
            if key in changes:  # the calling code's change, not the profile's
                raise
            if key not in values:  # a message from deeper down (TRL's own checks) names no key
                culprit = self._overridden_key_in(section, text)
                if culprit is not None:
                    key, error = culprit, f"section {section!r}: {culprit}: {text}"
            origin = self.origins.get((section, key), self.origins.get((COMMON, key), str(self.path)))
            raise ConfigError(f"{origin}: {error}") from None

    def _overridden_key_in(self, section: str, message: str) -> str | None:
        """The key of a ``--set`` for ``section`` whose value the message quotes, if there is one."""
        values = self.values(section)
        for (where, key), origin in self.origins.items():
            if where in (section, COMMON) and key in values and origin.startswith("--set"):
                value = values[key]
                if value is not None and str(value) and str(value) in message:
                    return key
        return None

    def as_dict(self) -> dict[str, Any]:
        """The resolved profile as plain data (what ``run_info.json`` records)."""
        return json.loads(json.dumps(self.sections, default=str))

    def with_values(self, values: Mapping[str, Any], origin: str) -> "Profile":
        """A copy with ``{"SECTION.KEY": value}`` set as they are (no YAML text in between), each key
        checked as a ``--set``'s is; errors name ``origin``."""
        sections = {name: dict(section_values) for name, section_values in self.sections.items()}
        origins = dict(self.origins)
        for dotted, value in values.items():
            section, _, key = dotted.rpartition(".")
            if section not in sections:
                raise ConfigError(f"{origin}: {dotted!r}: unknown section {section!r}")
            _check_key(origin, section, key)
            sections[section][key] = value
            origins[(section, key)] = origin
        return replace(self, sections=sections, origins=origins)

    def validate(self) -> None:
        """Build every section's settings: fail fast, before any notebook runs."""
        for section in _sections():
            self.settings(section)


EXTENDS = "extends"  # top-level key of a profile that starts from another profile's values


def _extended_path(parent: Any, path: Path) -> Path:
    """The profile file ``extends:`` names: a bare name is a sibling ``<name>.yaml``, else a path
    relative to the extending file."""
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: '{EXTENDS}' must name a profile, got {parent!r}")
    named = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
    if not named.is_file():
        raise ConfigError(f"{path}: '{EXTENDS}: {parent}': no file {named}")
    return named.resolve()


def _read_profile(path: Path, chain: tuple[Path, ...] = (), defer: Callable[[str], bool] = lambda section: False,
                  unchecked: list[tuple[str, str, str]] | None = None,
                  ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], str]]:
    """A profile file's values per section, with those of the profile it extends underneath, and
    the file each value came from (the extending file's when it is not recorded). The keys of a
    section for which ``defer`` is true go to ``unchecked`` instead of being checked."""
    sections_spec = _sections()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}{_yaml_where(error)}: not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    sections: dict[str, dict[str, Any]] = {name: {} for name in sections_spec}
    origins: dict[tuple[str, str], str] = {}
    if EXTENDS in raw:
        parent = _extended_path(raw.pop(EXTENDS), path)
        if parent in chain or parent == path.resolve():
            loop = " -> ".join(str(p) for p in (*chain, path.resolve(), parent))
            raise ConfigError(f"{path}: '{EXTENDS}' makes a loop: {loop}")
        base, base_origins = _read_profile(parent, (*chain, path.resolve()), defer, unchecked)
        for name, values in base.items():
            sections[name].update(values)
            origins.update({(name, key): base_origins.get((name, key), str(parent)) for key in values})
    for name, values in raw.items():
        name = str(name)
        if name not in sections_spec:
            raise ConfigError(f"{path}: unknown section {name!r} (sections: {', '.join(sections_spec)})")
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{path}: section {name!r} must be a mapping of keys to values")
        for key, value in (values or {}).items():
            if defer(name) and unchecked is not None:
                unchecked.append((str(path), name, str(key)))
            else:
                _check_key(str(path), name, key)
            sections[name][key] = value
            origins.pop((name, key), None)  # this file's value: errors name this file
    return sections, origins


def load_profile(profile: str | os.PathLike = "toy", overrides: Iterable[str] = (),
                 run_dir: str | os.PathLike | None = None, default_section: str | None = None,
                 derive: Callable[[Profile], Mapping[str, Any]] | None = None) -> Profile:
    """Load a profile, apply overrides and ``run_dir``, resolve placeholders and check every key.

    A profile may start from another (``extends: toy``) and hold only what differs.
    ``default_section`` is where a bare override key goes when ``common`` has no such field (a
    notebook passes its own section). A notebook's load (``default_section`` given) checks the keys
    of another training section (``03_sft``, ``05_grpo``) when that section is built, not here,
    unless TRL is imported already: a notebook that trains nothing never imports TRL (about 4.5 s).
    ``morelib.run`` and ``--check`` load with no ``default_section``, so every key is checked
    before the first notebook runs. ``derive`` computes values the profile leaves to the code
    from the loaded profile (``{"SECTION.KEY": value}``); they are set as they are: notebooks 04 to
    06 pass ``morelib.preflight.engine_lengths`` or ``inference_lengths``, which derive the vLLM
    context lengths.
    """
    sections_spec = _sections()
    path = profile_path(profile)

    def defer(section: str) -> bool:
        return default_section is not None and section != default_section and not sections_spec.is_imported(section)

    unchecked: list[tuple[str, str, str]] = []
    sections, origins = _read_profile(path, defer=defer, unchecked=unchecked)

    common_fields = _fields(COMMON)
    for text in overrides:
        section, key, value = parse_override(text)
        if section is None:
            section = COMMON if key in common_fields or default_section is None else default_section
        if section not in sections_spec:
            raise ConfigError(f"--set {text!r}: unknown section {section!r} (sections: {', '.join(sections_spec)})")
        if defer(section):
            unchecked.append((f"--set {text!r}", section, key))
        else:
            _check_key(f"--set {text!r}", section, key, bare=text.split("=", 1)[0].strip() == key)
        sections[section][key] = value
        origins[(section, key)] = f"--set {text!r}"
    if run_dir is not None:
        sections[COMMON]["run_dir"] = str(run_dir)
    for required in ("profile", "run_dir"):
        if required not in sections[COMMON]:
            raise ConfigError(f"{path}: section 'common' lacks {required!r}")

    resolved_run_dir = str(resolve_run_dir(sections[COMMON]["run_dir"]))
    substitutions = {"{run_dir}": resolved_run_dir, "{repo_root}": str(repo_root())}
    sections = {name: _substitute(values, substitutions) for name, values in sections.items()}
    sections[COMMON]["run_dir"] = resolved_run_dir
    loaded = Profile(name=str(sections[COMMON]["profile"]), path=path, sections=sections, origins=origins,
                     unchecked=tuple(unchecked))
    if derive is not None:
        loaded = loaded.with_values(derive(loaded), f"derived by {derive.__module__}.{derive.__qualname__}")
    return loaded


def build_settings(section: str, values: dict[str, Any]):
    """The settings object of ``section`` from plain values; remembers them for :func:`with_changes`."""
    from morelib.settings import DERIVED

    if section not in _sections():
        raise ConfigError(f"unknown section {section!r} (sections: {', '.join(_sections())})")
    cls = _sections()[section]
    names = _fields(section)
    for key in values:
        if key not in names:
            raise _unknown_key("", section, key)
        if key in DERIVED.get(section, ()):
            raise ConfigError(f"section {section!r}: {key!r} is derived by morelib.settings and cannot be set")
    values = {key: _as_declared_number(section, cls, key, value) for key, value in values.items()}
    for key, value in values.items():
        _check_type(section, cls, key, value)
    try:
        settings = cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"section {section!r}: {error}") from None
    settings.__dict__["_section"] = section
    settings.__dict__["_values"] = dict(values)
    return settings


def _number_types(cls: type, key: str) -> tuple[type, ...]:
    """The number types a field's annotation admits (float before int: ``1e-4`` is a float)."""
    import types
    import typing

    hint = typing.get_type_hints(cls).get(key)
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    return tuple(t for t in (float, int) if t in options)


def _as_declared_number(section: str, cls: type, key: str, value: Any) -> Any:
    """A string given to a number field, read as that number.

    YAML reads ``1e-4`` (no dot in the mantissa) as a string; TRL would then fail deep inside
    the optimizer. Other strings for a number field are an error that names the key.
    """
    if not isinstance(value, str):
        return value
    wanted = _number_types(cls, key)
    if not wanted:
        return value
    for kind in wanted:
        try:
            return kind(value)
        except ValueError:
            continue
    raise ConfigError(f"section {section!r}: {key}: must be a number, got {value!r}")


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type, for the types a profile can give (YAML values).

    A bool is only a YAML boolean (``"false"`` is a string, and truthy); a list is never a string
    (``models: stage1`` would be looped over letter by letter). Types this check does not know
    (enums, classes) are left to the settings class.
    """
    import enum
    import types
    import typing

    origin = typing.get_origin(hint)
    if hint is Any or hint is None:
        return True
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    if hint is list or origin is list:
        items = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not items or all(_fits(v, items[0]) for v in value))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, (str, hint))
    return True


def _type_name(hint: Any) -> str:
    import types
    import typing

    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             type(None): "null", list: "a list"}
    if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(option) for option in typing.get_args(hint)))
    if typing.get_origin(hint) is list:
        items = typing.get_args(hint)
        return f"a list of {_type_name(items[0]).removeprefix('a ').removeprefix('an ')}s" if items else "a list"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _check_type(section: str, cls: type, key: str, value: Any) -> None:
    import typing

    hint = typing.get_type_hints(cls).get(key)
    if not _fits(value, hint):
        raise ConfigError(f"section {section!r}: {key}: must be {_type_name(hint)}, got {value!r}")


def settings_values(settings) -> tuple[str, dict[str, Any]]:
    """The section and the values a settings object was built from (what a subprocess rebuilds it from)."""
    try:
        return settings.__dict__["_section"], dict(settings.__dict__["_values"])
    except KeyError:
        raise ValueError(f"{type(settings).__name__} was not built by morelib.config.build_settings") from None


def with_changes(settings, **changes: Any):
    """A copy of ``settings`` with some values changed (``dataclasses.replace`` breaks TRL's derived fields)."""
    section, values = settings_values(settings)
    return build_settings(section, {**values, **changes})


def load_settings(section: str, profile: str | os.PathLike = "toy", overrides: Iterable[str] = (),
                  run_dir: str | os.PathLike | None = None, **changes: Any):
    """The settings of one section: ``load_settings("05_grpo", "toy", ["gamma=0.25"])``.

    This is what every notebook and command line calls. Bare override keys go to ``common`` when it
    has them, else to ``section``.
    """
    loaded = load_profile(profile, overrides, run_dir, default_section=section)
    return loaded.settings(section, **changes)


def describe(settings, keys: Iterable[str]):
    """A small table of chosen settings: value and documented meaning (what a notebook shows its reader)."""
    import pandas as pd

    from morelib.settings import help_text

    rows = [{"setting": key, "value": getattr(settings, key), "meaning": help_text(type(settings), key)}
            for key in keys]
    return pd.DataFrame(rows).set_index("setting")


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


