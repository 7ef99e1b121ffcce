"""The package's imports run one way: no cycles, and the bottom layers import nothing above them."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "harness"

#: Modules at the bottom: they may import only each other and the standard/third-party libraries.
BOTTOM = ("harness.errors", "harness.registry", "harness.state", "harness.config", "harness.userfiles",
          "harness.safeyaml",
          "harness.telemetry.model", "harness.telemetry.codec", "harness.telemetry.encoder",
          "harness.telemetry.fbread", "harness.telemetry.shapes", "harness.telemetry.topic")
#: Modules at the top, which nothing below may import.
TOP = ("harness.cli", "harness.pytest_plugin", "harness.__main__")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only: they
    never run, so they cannot form an import cycle)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if id(n) not in skip]


def module_graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                # `from pkg import submodule` depends on the submodule, not on the package's own code
                targets = subs if len(subs) == len(node.names) else subs | {node.module}
                graph[name] |= {t for t in targets if t in modules and t != name}
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules and a.name != name}
    return {m: graph[m] for m in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(module_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_bottom_layers_import_only_each_other() -> None:
    graph = module_graph()
    wrong = {m: sorted(t for t in graph[m] if t not in BOTTOM and not t.startswith("harness.telemetry.generated"))
             for m in BOTTOM if m in graph}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_nothing_imports_the_top() -> None:
    graph = module_graph()
    wrong = [(m, t) for m, targets in graph.items() for t in targets
             if t.startswith(TOP) and not m.startswith(TOP)]
    assert wrong == []


#: Board kinds, and the only modules that may name them in a comparison: the kinds themselves.
BOARD_KIND_NAMES = {"qemu", "pyocd"}
KIND_MODULES = {"harness.board.pyocd_kind", "harness.emulation.board_kind"}


def kind_tests(tree: ast.AST) -> list[str]:
    """Comparisons of something's ``kind`` with a board kind's name (``board.kind == "qemu"``)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        names_kind = any((isinstance(s, ast.Attribute) and s.attr == "kind") or (isinstance(s, ast.Name)
                         and s.id == "kind") for s in sides)
        literals = {c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant)}
        if names_kind and literals & BOARD_KIND_NAMES:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_board_kind_tests_outside_the_kinds() -> None:
    wrong = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        if name in KIND_MODULES:
            continue
        found = kind_tests(ast.parse(path.read_text()))
        if found:
            wrong[name] = found
    assert wrong == {}


def test_the_kind_test_finder_finds_one() -> None:
    assert kind_tests(ast.parse('if board.kind != "qemu": pass')) == ['line 1: board.kind != \'qemu\'']
    assert kind_tests(ast.parse('x = kind in ("pyocd", "x")'))
    assert kind_tests(ast.parse('x = power.kind == "command"')) == []
