"""The notebooks are kept as pairs: NN_name.py (jupytext percent format, the reviewed source)
and NN_name.ipynb (what papermill executes). Both must hold the same cells, and the .ipynb
must carry no outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest


REPO_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(REPO_NOTEBOOKS.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted(REPO_NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
STEMS = sorted({path.stem for path in SOURCES + NOTEBOOKS})


def cells(notebook) -> list[tuple[str, str, bool]]:
    """(type, source, carries the parameters tag) for every cell."""
    return [
        (cell.cell_type, cell.source, "parameters" in cell.metadata.get("tags", []))
        for cell in notebook.cells
    ]


def test_the_chain_has_notebooks():
    assert len(STEMS) >= 8, STEMS


@pytest.mark.parametrize("stem", STEMS)
def test_every_notebook_has_both_halves_of_its_pair(stem):
    missing = [name for name in (f"{stem}.py", f"{stem}.ipynb") if not (REPO_NOTEBOOKS / name).is_file()]
    assert not missing, f"notebooks/{stem}: missing {missing}; run `make sync-notebooks`"


@pytest.mark.parametrize("stem", STEMS)
def test_the_pair_holds_the_same_cells(stem):
    source = jupytext.read(REPO_NOTEBOOKS / f"{stem}.py")
    notebook = jupytext.read(REPO_NOTEBOOKS / f"{stem}.ipynb")
    from_py, from_ipynb = cells(source), cells(notebook)
    assert len(from_py) == len(from_ipynb), f"{stem}: {len(from_py)} cells in .py, {len(from_ipynb)} in .ipynb"
    for index, (a, b) in enumerate(zip(from_py, from_ipynb)):
        assert a == b, f"{stem}: cell {index} differs between .py and .ipynb; run `make sync-notebooks`"


@pytest.mark.parametrize("stem", STEMS)
def test_the_pairing_and_kernel_are_declared(stem):
    for suffix in (".py", ".ipynb"):
        metadata = jupytext.read(REPO_NOTEBOOKS / f"{stem}{suffix}").metadata
        assert metadata["jupytext"]["formats"] == "ipynb,py:percent", f"{stem}{suffix}"
        assert metadata["kernelspec"]["name"] == "morelib", f"{stem}{suffix}"
    # The .py is percent text, not a light script.
    assert "# %%" in (REPO_NOTEBOOKS / f"{stem}.py").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_the_ipynb_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {index} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_cell_ids_are_stable(path):
    # Ids the sync keeps from one run to the next; duplicates would make nbformat rewrite them.
    ids = [cell.get("id") for cell in nbformat.read(path, as_version=4).cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: {ids}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_one_parameters_cell_and_it_is_the_first_code_cell(path):
    notebook_cells = cells(jupytext.read(path))
    tagged = [index for index, (_, _, is_parameters) in enumerate(notebook_cells) if is_parameters]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"
    first_code = next(index for index, (kind, _, _) in enumerate(notebook_cells) if kind == "code")
    assert tagged == [first_code], f"{path.name}: the parameters cell is not the first code cell"
    # papermill injects values after it, so it may hold plain assignments only.
    parameters = ast.parse(notebook_cells[first_code][1])
    assert all(isinstance(node, (ast.Assign, ast.AnnAssign)) for node in parameters.body), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_papermill_reads_every_parameter_and_its_help(path, caplog):
    # papermill gives up on a parameter line holding a second "=" (even inside its comment): it
    # logs a warning in every run and leaves the parameter out of `papermill --help-notebook`.
    import papermill

    with caplog.at_level("WARNING", logger="papermill"):
        parameters = papermill.inspect_notebook(str(path))
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("papermill")], path.name
    names = [node.targets[0].id for node in ast.parse(next(
        cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")).body]
    assert list(parameters) == names, path.name
    assert all(parameters[name]["help"] for name in names), f"{path.name}: a parameter without help"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_the_source_compiles_as_python(path):
    # Percent format is Python already, and so is the plain script jupytext exports from it.
    compile(path.read_text(), str(path), "exec")
    script = jupytext.writes(jupytext.read(path), fmt="py:light")
    compile(script, f"{path.name} (exported by jupytext)", "exec")
