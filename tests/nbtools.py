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


FIGURE_CALLS = ("plt.show()", "report.show_figure(", "display(Image(")


def figure_cells(notebook) -> list[tuple[int, dict]]:
    """The code cells that show a figure, by how notebooks show one (pyplot, a report figure, a PNG file)."""
    return [(i, cell) for i, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and any(call in cell.source for call in FIGURE_CALLS)]


def figures_not_rendered(notebook) -> list[str]:
    """What an executed notebook shows wrong: figure cells without a PNG output, outputs that are a
    matplotlib Figure's text form (``<Figure size ...>``). Empty when every figure renders."""
    problems = []
    for index, cell in figure_cells(notebook):
        kinds = {kind for out in cell.get("outputs", []) for kind in out.get("data", {})}
        if "image/png" not in kinds:
            problems.append(f"cell {index}: a figure cell without an image output")
    for index, cell in enumerate(notebook.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            # A rendered figure carries its text form beside the PNG; only the text alone is wrong.
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            if "<Figure size" in text and "image/png" not in out.get("data", {}):
                problems.append(f"cell {index}: a figure shown as text")
    return problems
