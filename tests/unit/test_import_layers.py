"""Imports run the way the data flows: no cycle between the parts of the package.

Each subpackage (``assemble``, ``mapping``, ``ledger``, ...) and each top-level module (``db``,
``errors``, ``roles``, ...) is one node; an import from one into another is an edge. A cycle
would mean two stages that cannot be understood, tested or replaced one without the other,
as ``assemble`` and ``mapping`` once were. Read from the source (``ast``), so an import inside
a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import cdc_claims

PACKAGE = Path(cdc_claims.__file__).parent


def _node(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = _node(".".join(("cdc_claims", *path.relative_to(PACKAGE).with_suffix("").parts)))
        for target in _imports(path):
            if target.startswith("cdc_claims.") and _node(target) != source:
                top = target.split(".")[1]
                if (PACKAGE / top).is_dir() or (PACKAGE / f"{top}.py").is_file():
                    graph.setdefault(source, set()).add(top)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "assemble" in graph["mapping"]  # the mapping applies to what assemble read
    assert "db" in graph["ledger"]


def test_no_cycle_between_subpackages_and_modules() -> None:
    assert _cycle(_graph()) is None


def test_the_reader_side_needs_nothing_from_the_mapping_or_the_write_side() -> None:
    graph = _graph()
    assert not graph.get("assemble", set()) & {"mapping", "ledger", "writeback", "pipeline", "roles"}
    assert "writeback" not in graph.get("ledger", set())


def test_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


#: The stages in the order data flows through them, lowest first: a part may import its own
#: layer and any lower one, never a higher one. The foundation (errors, settings, the database
#: seam, the lifecycle table...) is shared by all; the composition root sits on top.
LAYERS: list[set[str]] = [
    {"errors", "settings", "log", "lru", "failpoints"},
    {"metrics", "lifecycle", "health", "db", "observability", "tls"},
    {"capture", "settle"},
    {"assemble"},
    {"mapping"},
    {"claim", "reply"},
    {"submit", "payer", "ledger", "writeback"},  # payer: what openIMIS knows, read before a POST
    {"pipeline"},
    {"desk"},  # the claims desk web app: reads the ledger and billing rows, acts through its port
    {"roles", "commands", "actions", "backfill", "cli", "__main__"},
]


def _layer(node: str) -> int:
    return next((i for i, names in enumerate(LAYERS) if node in names), -1)


def test_every_part_of_the_package_has_a_layer() -> None:
    graph = _graph()
    parts = set(graph) | {t for targets in graph.values() for t in targets}
    assert sorted(p for p in parts if _layer(p) < 0) == []


def test_no_import_runs_against_the_data_flow() -> None:
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(source) >= 0
    )
    assert upward == []


def test_the_product_imports_no_dev_tooling() -> None:
    dev = sorted(
        f"{path.relative_to(PACKAGE)}: {target}"
        for path in PACKAGE.rglob("*.py")
        for target in _imports(path)
        if target.split(".")[0] in {"cdc_dev", "tests", "bench", "conftest"}
    )
    assert dev == []
