"""Imports run one way. docs/architecture.md ("Import levels") puts every module of ``morelib`` at
one level; a module imports only modules of its own level or below (at the top of the file or
inside a function alike), and no chain of imports comes back to where it started."""

import ast
import re

from morelib.layout import repo_root

ROOT = repo_root()
DOC = ROOT / "docs" / "architecture.md"


def documented_levels(text: str) -> dict[str, int]:
    """``{module: level}`` from the rows of the table under the "Import levels" heading: the level's
    number in the first cell, the modules in backticks in the last."""
    section = text.split("## Import levels", 1)[1].split("\n## ", 1)[0]
    levels: dict[str, int] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        for name in re.findall(r"`([a-z_]+)`", cells[-1]):
            assert name not in levels, f"{DOC.name}: {name} is on two levels"
            levels[name] = int(cells[0])
    return levels


def imports_of(source: str) -> set[str]:
    """The ``morelib`` modules a source imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "morelib":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("morelib."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("morelib."))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in (ROOT / "morelib").glob("*.py") if path.stem != "__init__"}
    return {name: imports_of(path.read_text()) & set(modules) - {name} for name, path in modules.items()}


def violations(graph: dict[str, set[str]], levels: dict[str, int]) -> list[str]:
    found = [f"{name}: not on any level of {DOC.name}" for name in sorted(set(graph) - set(levels))]
    found += [f"{name}: on a level of {DOC.name} but no module" for name in sorted(set(levels) - set(graph))]
    for name, imported in sorted(graph.items()):
        for other in sorted(imported):
            if name in levels and other in levels and levels[other] > levels[name]:
                found.append(f"{name} (level {levels[name]}) imports {other} (level {levels[other]})")
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One chain of imports that comes back to its start, or None."""
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for other in sorted(graph.get(name, ())):
            if state.get(other) == "open":
                return path[path.index(other):] + [other] if other in path else [name, other]
            if other not in state and (found := visit(other, path + [other])):
                return found
        state[name] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_every_module_is_on_a_level_and_imports_only_its_level_or_below():
    assert violations(import_graph(), documented_levels(DOC.read_text())) == []


def test_no_chain_of_imports_comes_back():
    assert cycle(import_graph()) is None


def test_the_checks_catch_an_upward_import_and_a_cycle():
    levels = {"files": 1, "settings": 2, "report": 5}
    assert violations({"files": {"report"}, "settings": {"files"}, "report": set()}, levels) == [
        "files (level 1) imports report (level 5)"]
    assert violations({"files": set(), "settings": set(), "report": set(), "new": set()}, levels) == [
        f"new: not on any level of {DOC.name}"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert imports_of("def f():\n    from morelib.report import table1\n    from morelib import cases\n") == {
        "report", "cases"}
