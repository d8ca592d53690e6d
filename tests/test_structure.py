"""The package's import graph has no cycle: no module imports, directly or through others, a module that
imports it back; and no sub-package imports one above it in the layering docs/layout.md describes. Imports
inside functions count too: a lazy import hides a cycle or an upward edge, it does not remove it."""

import ast
from pathlib import Path

from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tests.conftest import REPO

PACKAGE = REPO / "siamese"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import name`` counts the submodule when
    ``name`` is one, else the package)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    names = sorted(graph)
    index = {n: i for i, n in enumerate(names)}
    edges = [(index[a], index[b]) for a, targets in graph.items() for b in targets]
    rows, cols = zip(*edges, strict=True) if edges else ((), ())
    matrix = coo_matrix(([1] * len(rows), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(matrix, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for name, label in zip(names, labels, strict=True):
        groups.setdefault(label, []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def test_the_checker_sees_a_cycle_through_a_third_module():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_imports_itself_back():
    graph = import_graph()
    assert "siamese.cli" in graph and "siamese.data.readers" in graph["siamese.data"] | {"siamese.data.readers"}
    assert cycles(graph) == []


LAYERS = ("runtime", "data", "models", "options", "config", "settings", "training", "evaluation", "inference",
          "segmentation", "robustness", "workflows", "diagnostics", "dedup", "cli", "__main__", "siamese")
"""Bottom to top: each layer (a sub-package, or one of the modules ``options``, ``config``, ``settings``, ``cli``
and ``__main__``) imports only from its own layer and those before it; ``siamese`` is the package root, whose
public API reaches down into any of them."""

KNOWN_UPWARD: dict[tuple[str, str], str] = {}
"""Upward imports still to remove, each with why it is there; the test fails when one disappears, so the list
only shrinks."""


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]], layers: tuple[str, ...]) -> set[tuple[str, str]]:
    rank = {name: i for i, name in enumerate(layers)}
    return {(a, b) for a, targets in graph.items() for b in targets if rank[layer(b)] > rank[layer(a)]}


def test_the_checker_sees_an_import_from_a_higher_layer():
    graph = {"p.low.a": {"p.high.b", "p.low.c"}, "p.low.c": set(), "p.high.b": {"p.low.c"}}
    assert upward_imports(graph, ("low", "high")) == {("p.low.a", "p.high.b")}
    assert upward_imports(graph, ("high", "low")) == {("p.high.b", "p.low.c")}


def test_every_sub_package_has_its_place_in_the_layers():
    assert {layer(module) for module in import_graph()} <= set(LAYERS)


def test_no_sub_package_imports_one_above_it():
    found = upward_imports(import_graph(), LAYERS)
    assert found - set(KNOWN_UPWARD) == set(), "imports from a higher layer (see docs/layout.md)"
    assert set(KNOWN_UPWARD) - found == set(), "gone: take it off KNOWN_UPWARD"
