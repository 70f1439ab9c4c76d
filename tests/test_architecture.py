"""The shape of the package: the import contracts of pyproject.toml ([tool.importlinter]) hold, and no module
imports itself through others (a circle hidden by a lazy import is still a circle)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "digitrec"


def test_import_contracts_are_kept():
    # In a process of its own: import-linter's command configures logging, which disables every logger that
    # exists (the server's among them) for the tests after it.
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--config",
                             str(SRC.parents[1] / "pyproject.toml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import circle among digitrec's modules (lazy imports included), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if not imported.startswith("digitrec"):
                continue
            if state.get(imported) == 1:
                return path[path.index(imported):] + [imported]
            if imported not in state and (found := visit(imported)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph.modules):
        if module.startswith("digitrec") and module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_circles():
    graph = grimp.build_graph("digitrec", cache_dir=None)
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for name in ("digitrec.a", "digitrec.b", "digitrec.c"):
        graph.add_module(name)
    graph.add_import(importer="digitrec.a", imported="digitrec.b")
    graph.add_import(importer="digitrec.b", imported="digitrec.c")
    assert _cycle(graph) is None
    graph.add_import(importer="digitrec.c", imported="digitrec.a")
    assert _cycle(graph) == ["digitrec.a", "digitrec.b", "digitrec.c", "digitrec.a"]


def _function_lengths() -> list[tuple[int, str]]:
    lengths = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name}"
                lengths.append((node.end_lineno - node.lineno + 1, name))
    return sorted(lengths, reverse=True)


# Functions allowed past the limit: declarative tables (the CLI's parser) rather than logic.
LONG_ALLOWED = {"_parser"}


def test_functions_fit_on_a_screen():
    too_long = [(n, name) for n, name in _function_lengths() if n > 60 and name.rsplit(" ", 1)[1] not in LONG_ALLOWED]
    assert not too_long, f"functions over 60 lines: {too_long}"
