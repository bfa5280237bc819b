"""Build notebooks programmatically: nbformat v4, no outputs, a tagged parameters cell.

Each ``tools/notebooks/NN_name.py`` script describes its notebook as a list of cells and
calls :func:`make_notebook`, so notebooks are generated, reviewed as code and never carry
stale outputs.

    make_notebook([
        ("md", "# 00 Prepare\\nWhat this step does ..."),
        ("params", 'profile = "toy"\\nrun_dir = "runs/toy"\\nseed = 0'),
        ("code", "from morelib import toy"),
    ], "notebooks/00_prepare.ipynb")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import nbformat

CELL_KINDS = ("md", "code", "params")
KERNEL_NAME = "morelib"


def _cell(kind: str, source: str) -> nbformat.NotebookNode:
    source = source.strip("\n")
    if kind == "md":
        return nbformat.v4.new_markdown_cell(source)
    if kind == "code":
        return nbformat.v4.new_code_cell(source)
    if kind == "params":
        # papermill finds the cell by this tag and injects the profile's values after it.
        return nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})
    raise ValueError(f"unknown cell kind {kind!r}; expected one of {CELL_KINDS}")


def make_notebook(cells: Iterable[tuple[str, str]], path: str | Path) -> Path:
    """Write ``cells`` (pairs of kind and source) as an output-free v4 notebook at ``path``.

    Exactly one ``"params"`` cell is required and it must be the first code cell, which is
    what the chain runner and papermill expect.
    """
    cells = list(cells)
    kinds = [kind for kind, _ in cells]
    if kinds.count("params") != 1:
        raise ValueError(f"{path}: need exactly one 'params' cell, got {kinds.count('params')}")
    first_code = next(kind for kind in kinds if kind in ("code", "params"))
    if first_code != "params":
        raise ValueError(f"{path}: the 'params' cell must be the first code cell")

    nb = nbformat.v4.new_notebook()
    nb.cells = [_cell(kind, source) for kind, source in cells]
    # Deterministic ids keep regenerated notebooks diff-free.
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:02d}"
    nb.metadata = {
        "kernelspec": {"name": KERNEL_NAME, "display_name": "Python (morelib)", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def notebook_path(stem: str) -> Path:
    """``notebooks/<stem>.ipynb`` in the repository (this file lives in tools/notebooks/)."""
    return Path(__file__).resolve().parents[2] / "notebooks" / f"{stem}.ipynb"


if __name__ == "__main__":  # pragma: no cover - tiny convenience
    print(__doc__, file=sys.stderr)
