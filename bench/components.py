"""Scenario 7 of the harness: the component benchmarks, each its own tool, run in the same
harness run so that every figure the report (and the README) quotes comes from one run.

Each tool prints a Markdown table; the harness keeps its output verbatim, with the command
that made it and how long it took. A tool that fails fails the run: a report never silently
lacks a table.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT

# (name, what it measures, arguments for the full run, arguments for the quick run)
COMPONENTS: list[tuple[str, str, list[str], list[str]]] = [
    (
        "write_cost",
        "One write's store cost (CPU), by what the store already holds",
        ["--meshes", "1", "1000", "--secrets", "0", "50000", "--writes", "300"],
        ["--meshes", "1", "20", "--secrets", "0", "200", "--writes", "10", "--repeats", "1"],
    ),
    (
        "digest_cost",
        "A zone's row digests: one large apply with and without them, and the start-up check "
        "of every row",
        ["--secrets", "10000", "--rows", "100000"],
        ["--secrets", "200", "--rows", "500"],
    ),
    (
        "tree_cost",
        "Global's anti-entropy tree: reading every row, and bringing it forward by the writes "
        "since",
        ["--secrets", "100000", "--writes", "1", "100", "1000", "10000"],
        ["--secrets", "2000", "--writes", "1", "100", "--repeats", "1"],
    ),
    (
        "kdsctl_calls",
        "kdsctl's own cost per call against a local global",
        ["--calls", "20"],
        ["--calls", "2"],
    ),
    (
        "reconnect_memory",
        "Global's resident memory over many abandoned zone streams",
        ["--streams", "3000"],
        ["--streams", "100", "--every", "50"],
    ),
]


def run_all(quick: bool, log: Any = None) -> list[dict[str, Any]]:
    """Run every component tool once; their outputs, in order."""
    out = []
    for name, what, full, small in COMPONENTS:
        chosen = small if quick else full
        args = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *chosen]
        if log is not None:
            log(f"component: {name}")
        started = time.monotonic()
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"bench/{name}.py failed ({r.returncode}): {r.stderr[-2000:]}")
        out.append(
            {
                "name": name,
                "what": what,
                "command": " ".join([f"bench/{name}.py", *chosen]),
                "seconds": round(time.monotonic() - started, 1),
                "output": r.stdout.strip(),
            }
        )
    return out
