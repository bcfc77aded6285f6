"""The benchmark scripts still run (its figures are not asserted: timing tests flake)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _tool(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run bench/<script> with ``args``, its output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_propagation_benchmark_runs_and_prints_a_table() -> None:
    """bench/propagation.py with 1 zone and 20 writes prints one row of figures."""
    r = _tool("propagation.py", "--zones", "1", "--writes", "20")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1 and "| 20 |" in rows[0], r.stdout


def test_reconnect_memory_benchmark_runs() -> None:
    """bench/reconnect_memory.py opens and abandons streams against a real global and reports."""
    r = _tool("reconnect_memory.py", "--streams", "100", "--every", "50", "--secrets", "5")
    assert r.returncode == 0, r.stderr
    assert "| 100 |" in r.stdout and "MiB per 1,000 streams" in r.stdout, r.stdout


def test_digest_cost_benchmark_runs() -> None:
    """bench/digest_cost.py times a zone's apply with and without row digests, and the
    start-up check, and prints the table."""
    r = _tool("digest_cost.py", "--secrets", "200", "--rows", "500")
    assert r.returncode == 0, r.stderr
    assert "| start-up check of 500 rows |" in r.stdout, r.stdout


def test_tree_cost_benchmark_runs() -> None:
    """bench/tree_cost.py times global's full tree read and bringing a held tree forward,
    and prints the table."""
    r = _tool("tree_cost.py", "--secrets", "300", "--writes", "1", "20", "--repeats", "1")
    assert r.returncode == 0, r.stderr
    assert "| read every row (301 leaves) |" in r.stdout, r.stdout
    assert "| bring the held tree forward by 20 writes |" in r.stdout, r.stdout


def test_write_cost_benchmark_runs() -> None:
    """bench/write_cost.py times one write on global and its batch on a zone, by store size,
    and prints the table."""
    r = _tool(
        "write_cost.py", "--meshes", "1", "20", "--secrets", "50", "--writes", "5", "--repeats", "1"
    )
    assert r.returncode == 0, r.stderr
    assert "| 20 | 50 |" in r.stdout, r.stdout


def test_kdsctl_calls_benchmark_runs() -> None:
    """bench/kdsctl_calls.py starts a global, times kdsctl calls against it and prints medians."""
    r = _tool("kdsctl_calls.py", "--calls", "2")
    assert r.returncode == 0, r.stderr
    assert "| kdsctl get secrets |" in r.stdout and "| kdsctl --version |" in r.stdout, r.stdout


def test_postgres_benchmark_runs_and_writes_its_table(tmp_path: Path) -> None:
    """bench/postgres.py with one repeat and 20 writes: SQLite and PostgreSQL side by side,
    two globals, a zone of two instances, one failover of each, and its Markdown table."""
    r = subprocess.run(
        [sys.executable, "-m", "bench.postgres", "--repeats", "1", "--writes", "20",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    table = (tmp_path / "benchmarks-postgres.md").read_text()
    assert "zone leader SIGKILLed" in table and "two globals written at once" in table, table


def test_anti_entropy_benchmark_runs() -> None:
    """bench/anti_entropy.py checks an equal store, then finds and repairs one damaged
    secret (exit 0 only if the repair left the stores equal), and prints the table."""
    r = _tool("anti_entropy.py", "--secrets", "500")
    assert r.returncode == 0, r.stderr
    assert "| equal stores: check | equal | 1 |" in r.stdout, r.stdout
    assert "repair ['Secret default/s250'], then equal" in r.stdout, r.stdout
