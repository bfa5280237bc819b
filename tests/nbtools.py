"""Small notebooks for tests, written the way notebooks/NN_*.py are: jupytext percent text.

    make_notebook([("md", "# demo"), ("params", "seed = 0"), ("code", "print(seed)")], path)

writes ``path`` (an output-free .ipynb with the ``morelib`` kernelspec); the ``params`` cell
carries the ``parameters`` tag that papermill and the profile check look for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import jupytext

HEADER = """\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python (morelib)
#     language: python
#     name: morelib
# ---
"""
MARKERS = {"md": "# %% [markdown]", "code": "# %%", "params": '# %% tags=["parameters"]'}


def percent_text(cells: Iterable[tuple[str, str]]) -> str:
    """The percent-format text of ``cells`` (pairs of kind and source)."""
    parts = [HEADER]
    for kind, source in cells:
        if kind not in MARKERS:
            raise ValueError(f"unknown cell kind {kind!r}; expected one of {tuple(MARKERS)}")
        source = source.strip("\n")
        if kind == "md":
            source = "\n".join(f"# {line}".rstrip() for line in source.splitlines())
        parts.append(f"{MARKERS[kind]}\n{source}\n")
    return "\n".join(parts)


def make_notebook(cells: Iterable[tuple[str, str]], path: str | Path) -> Path:
    """Write ``cells`` as an .ipynb at ``path`` through jupytext; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.reads(percent_text(cells), fmt="py:percent"), path)
    return path
