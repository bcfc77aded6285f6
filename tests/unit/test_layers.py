"""The import graph keeps its layers: no cycle, and every import points one way.

    kdsctl ──────────────┐
    globalcp   zonecp    │      (daemons never import each other; kdsctl imports neither)
        └────┬────┘      │
             kds  ◄──────┘      (the shared library imports no daemon and no kdsctl)

Read from the source with ast, so a cycle is caught even where Python would tolerate it
(an import at the bottom of a file, or inside a function). Imports under ``if
TYPE_CHECKING:`` count too: a type that needs an import cycle is a layering problem as well.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kds", "globalcp", "zonecp", "kdsctl")

# Who may import whom, by top-level package.
ALLOWED = {
    "kds": {"kds"},
    "globalcp": {"globalcp", "kds"},
    "zonecp": {"zonecp", "kds"},
    "kdsctl": {"kdsctl", "kds"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "_pb" in path.parts:
                continue  # generated protobuf code
            found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Project modules ``name`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import mod" imports the module pkg.mod when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]  # a name inside a module: the module
            if target and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(name, path, known)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_parent(a: str, b: str) -> bool:
    return b.startswith(a + ".")


def test_the_import_graph_has_no_cycle() -> None:
    """No set of project modules imports each other in a ring (a package's __init__
    re-exporting its own submodules is not a ring)."""
    graph = _graph()
    # A package importing its own submodules (re-exports) is how packages are built; the
    # submodule importing the package's __init__ back is the cycle that counts.
    pruned = {v: {w for w in ws if not _is_parent(v, w)} for v, ws in graph.items()}
    assert _cycles(pruned) == []


def test_each_package_imports_only_the_layers_below() -> None:
    """Daemons never import each other, kdsctl imports no daemon, kds imports none of them."""
    wrong = sorted(
        f"{v} imports {w}"
        for v, ws in _graph().items()
        for w in ws
        if w.split(".")[0] not in ALLOWED[v.split(".")[0]]
    )
    assert wrong == []


def test_the_checks_see_a_cycle_and_a_wrong_layer() -> None:
    """The checks are not blind: a ring is found, and so is a daemon importing another."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    assert "kds.wire" in graph["kds.protocol.records"]
    assert "globalcp.hub" in graph["globalcp.app"]


def test_importing_kdsctl_loads_no_daemon() -> None:
    """Not even through kds: importing kdsctl.cli in a fresh interpreter loads no daemon."""
    probe = (
        "import json, sys, kdsctl.cli; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('globalcp', 'zonecp'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_module_level_imports_come_first() -> None:
    """A module's top-level imports precede its other statements (none at the bottom, where
    they would hide a cycle from a reader)."""
    late: dict[str, list[int]] = {}
    for name, path in _modules().items():
        body = ast.parse(path.read_text()).body
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
                late.setdefault(name, []).append(node.lineno)
    assert late == {}


def test_no_module_is_over_500_lines() -> None:
    """Each module does one job a reader can hold at once (generated code and tests aside)."""
    bench = {_module_name(p): p for p in (ROOT / "bench").glob("*.py")}
    long = {
        name: n
        for name, path in {**_modules(), **bench}.items()
        if (n := len(path.read_text().splitlines())) > 500
    }
    assert long == {}


def test_no_module_waits_with_asyncio_wait_for() -> None:
    """On Python 3.11, asyncio.wait_for swallows a cancellation that comes in the same turn
    of the loop as the awaited thing completes, and a loop around it never ends (a status
    flusher held daemons' stops): asyncio.timeout instead (kds.runtime)."""
    found = {
        name: n for name, path in _modules().items() if (n := path.read_text().count("wait_for("))
    }
    assert found == {}
