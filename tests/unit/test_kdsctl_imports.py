"""kdsctl's modules import one way, import no daemon, and import at their top.

The checks read each kdsctl module's source with ``ast``: every import counts, at module
level, in a function or under ``if TYPE_CHECKING``. One check also imports kdsctl.cli in a
fresh interpreter, so a daemon reached through kds is caught too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kdsctl"
DAEMONS = {"globalcp", "zonecp"}


def module_name(path: Path) -> str:
    return "kdsctl" if path.name == "__init__.py" else f"kdsctl.{path.stem}"


MODULES = {module_name(p): p for p in sorted(PACKAGE.glob("*.py"))}


def imported(tree: ast.Module) -> Iterator[str]:
    """Every module name an import statement anywhere in ``tree`` names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "kdsctl uses absolute imports"
            assert node.module is not None
            yield node.module
            # `from kdsctl import status` imports the module kdsctl.status.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def import_graph() -> dict[str, set[str]]:
    """kdsctl module -> the kdsctl modules it imports (itself left out)."""
    return {
        module: {name for name in imported(parse(module)) if name in MODULES} - {module}
        for module in MODULES
    }


def find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as [a, b, ..., a], or [] when it has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return []


def test_kdsctl_has_no_import_cycle() -> None:
    """No kdsctl module imports one that imports it back, directly or through others."""
    cycle = find_cycle(import_graph())
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def test_the_import_graph_is_not_blind() -> None:
    """The graph sees cli's imports of the command modules, and a cycle is found."""
    graph = import_graph()
    assert {"kdsctl.resources", "kdsctl.status", "kdsctl.tokens"} <= graph["kdsctl.cli"]
    assert "kdsctl.client" in graph["kdsctl.status"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_kdsctl_module_imports_a_daemon() -> None:
    """kdsctl talks to the daemons over HTTP only: no module of it imports globalcp or zonecp."""
    offenders = {
        module: sorted(name for name in imported(parse(module)) if name.split(".")[0] in DAEMONS)
        for module in MODULES
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_importing_kdsctl_loads_no_daemon() -> None:
    """Not even through kds: importing kdsctl.cli in a fresh interpreter loads no daemon."""
    probe = (
        f"import json, sys, kdsctl.cli; daemons = {sorted(DAEMONS)!r}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in daemons)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_module_level_imports_come_first() -> None:
    """A module's top-level imports precede its other statements (none at the bottom)."""
    late: dict[str, list[int]] = {}
    for module in MODULES:
        body = parse(module).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        seen_code = False
        for node in body:
            is_import = isinstance(node, ast.Import | ast.ImportFrom) or (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"
            )
            if not is_import:
                seen_code = True
            elif seen_code:
                late.setdefault(module, []).append(node.lineno)
    assert late == {}
