"""The benchmark harness's small run (scripts/bench --quick) produces well-formed results.

Figures are never asserted (timing tests flake on a shared machine); the shape is: every
scenario ran against kds and etcd, the JSON, Markdown and PNG were written, and the targets
table names every target. Under CI a missing etcd fails the test (tests/conftest.py turns the
skip into a failure); .ci/run installs it with scripts/setup-bench.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_quick_harness_run_writes_results_for_every_scenario(tmp_path: Path) -> None:
    """bench --quick: propagation, bulk (kds and etcd), resume, footprint, anti-entropy and
    the component tools, in all outputs."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed: run scripts/setup-bench")
    pytest.importorskip("matplotlib")
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((tmp_path / "benchmarks.json").read_text())
    assert {p["kds"]["zones"] for p in res["propagation"]} == set(res["plan"]["prop_zones"])
    for row in res["propagation"]:
        # kds over TLS with zone tokens (as in production), kds in plaintext, etcd.
        assert row["kds"]["tls"] is True and row["kds_plain"]["tls"] is False
        for side in ("kds", "kds_plain", "etcd"):
            assert row[side]["writes"] == res["plan"]["writes"]
            assert row[side]["p50_ms"] <= row[side]["p99_ms"] <= row[side]["max_ms"]
            assert 0 < row[side]["answer_p50_ms"] <= row[side]["answer_p99_ms"]
        # The zone counts run again with each zone, and each etcd watcher, in its own process.
        spread = row["kds"]["zones"] in res["plan"]["spread_zones"]
        assert ("kds_spread" in row) is spread and ("etcd_spread" in row) is spread
        if spread:
            for side in ("kds_spread", "etcd_spread"):
                assert row[side]["writes"] == res["plan"]["writes"]
                assert row[side]["p50_ms"] <= row[side]["p99_ms"] <= row[side]["max_ms"]
    for row in res["bulk"]:
        assert row["kds"]["tls"] is True and row["kds_plain"]["tls"] is False
        for side in ("kds", "kds_plain", "etcd"):
            assert row[side]["secrets"] == res["plan"]["bulk_n"] and row[side]["per_s"] > 0
        assert row["kds"]["kdsctl_cpu_s"] > 0 and row["kds"]["global_cpu_s"] > 0
    resume = res["resume"]
    assert resume["changed"] == res["plan"]["resume_total"] // 100
    assert resume["wire_bytes_to_zone"] > 0 and resume["changed_resource_bytes"] > 0
    foot = res["footprint"]
    assert foot["idle_zones"] == res["plan"]["idle_zones"]
    assert foot["global_rss_mb_idle_zones"] > 0 and foot["zone_store_mb"] > 0
    assert (
        foot["storm_zones"] == res["plan"]["storm_zones"] and foot["global_rss_mb_storm_peak"] > 0
    )
    ae = res["anti_entropy"]
    assert ae["secrets"] == res["plan"]["ae_total"] and ae["equal"]["result"] == "equal"
    assert ae["one_damaged"]["result"] == "repair" and ae["one_damaged"]["after"] == "equal"
    assert len(ae["one_damaged"]["repaired"]) == 1 and ae["one_damaged"]["repair_bytes"] > 0
    comps = {c["name"]: c for c in res["components"]}
    assert set(comps) == {
        "write_cost",
        "digest_cost",
        "tree_cost",
        "kdsctl_calls",
        "reconnect_memory",
    }
    for c in comps.values():  # each tool's own table, with the command that made it
        assert c["command"].startswith(f"bench/{c['name']}.py ") and "|---|" in c["output"]
    md = (tmp_path / "benchmarks.md").read_text()
    for c in comps.values():
        assert f"`{c['command']}`" in md and c["output"] in md
    for heading in (
        "## Targets",
        "## 1 and 5.",
        "## 2 and 5.",
        "## 3. Resume",
        "## 4. Footprint",
        "## 6. Anti-entropy",
        "## 7. Components",
    ):
        assert heading in md
    assert "shared 2-core machine" in md
    assert (tmp_path / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| kds plaintext p99 |" in md and "kdsctl CPU s" in md
    assert "from sending it to hearing the answer" in md
    assert "each etcd watcher, in a process of its own" in md
