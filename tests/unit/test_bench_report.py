"""bench.report draws and links only what a run measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report

pytest.importorskip("matplotlib")


def _results(**parts: Any) -> dict[str, Any]:
    return {
        "started": "2026-11-30T00:00:00+00:00",
        "finished": "2026-11-30T00:01:00+00:00",
        "machine": {"cpus": 2, "python": "3.11", "etcd": "etcd 3.4", "note": ""},
        "plan": {"bulk_n": 300, "repeats": 1},
        "propagation": [],
        "bulk": [],
        **parts,
    }


def _bulk_row(tls_s: float, plain_s: float) -> dict[str, Any]:
    kds = {"zones": 2, "secrets": 300, "apply_s": 0.2, "all_zones_s": tls_s, "per_s": 1000}
    return {
        "repeat": 1,
        "kds": {**kds, "tls": True, "kdsctl_cpu_s": 0.3, "global_cpu_s": 0.2},
        "kds_plain": {**kds, "tls": False, "all_zones_s": plain_s},
        "etcd": {"zones": 2, "secrets": 300, "apply_s": 0.01, "all_zones_s": 0.02, "per_s": 9e3},
    }


def test_a_bulk_only_run_plots_bulk_and_reports_tls_plaintext_and_cpu(tmp_path: Path) -> None:
    report.write(_results(bulk=[_bulk_row(0.5, 0.4)]), tmp_path)
    md = (tmp_path / "benchmarks.md").read_text()
    assert "](benchmarks.png)" in md
    assert "| 2 | 0.5 (0.2) | 1000 | 0.4 | 0.3 | 0.2 | 0.02 |" in md
    assert "| 10,000 secrets to 10 zones <= 3 s | not measured in this run | - |" in md
    assert (tmp_path / "benchmarks.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_without_propagation_or_bulk_draws_no_plot(tmp_path: Path) -> None:
    (tmp_path / "benchmarks.png").write_bytes(b"old plot")  # a previous run's
    report.write(_results(), tmp_path)
    assert not (tmp_path / "benchmarks.png").exists()
    assert "benchmarks.png" not in (tmp_path / "benchmarks.md").read_text()


def _prop_side(p99: float, server_cpu: float | None, member_cpu: float) -> dict[str, Any]:
    side: dict[str, Any] = {
        "zones": 10,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "from_send_p50_ms": p99,
        "from_send_p99_ms": p99 * 2,
    }
    if server_cpu is not None:
        side["server_cpu_ms_per_write"] = server_cpu
        side["member_cpu_ms_per_write"] = member_cpu
    return side


def test_cpu_per_write_is_reported_with_each_sides_total_for_all_its_members(
    tmp_path: Path,
) -> None:
    row = {
        "repeat": 1,
        "kds": _prop_side(4.0, 4.5, 0.7),
        "etcd": _prop_side(1.0, 1.5, 0.25),
    }
    report.write(_results(propagation=[row]), tmp_path)
    md = (tmp_path / "benchmarks.md").read_text()
    # kds: 4.5 + 10 x 0.7 = 11.5; etcd: 1.5 + 10 x 0.25 = 4.0; 11.5 / 4.0 = 2.875; the
    # harness's own CPU is not recorded in this row
    assert "| 10 | 4.5 | 0.7 | 11.5 | 1.5 | 0.25 | 4.0 | 2.88 | - | - |" in md


def test_the_harness_own_cpu_per_write_is_reported_beside_both_sides(tmp_path: Path) -> None:
    row = {"repeat": 1, "kds": _prop_side(4.0, 4.5, 0.7), "etcd": _prop_side(1.0, 1.5, 0.25)}
    row["kds"]["harness_cpu_ms_per_write"] = 0.9
    row["etcd"]["harness_cpu_ms_per_write"] = 0.8
    report.write(_results(propagation=[row]), tmp_path)
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| harness, kds | harness, etcd |" in md
    assert "| 10 | 4.5 | 0.7 | 11.5 | 1.5 | 0.25 | 4.0 | 2.88 | 0.9 | 0.8 |" in md


def test_a_run_recorded_before_cpu_per_write_reports_no_cpu_table(tmp_path: Path) -> None:
    row = {"repeat": 1, "kds": _prop_side(4.0, None, 0), "etcd": _prop_side(1.0, None, 0)}
    report.write(_results(propagation=[row]), tmp_path)
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| 10 |" in md  # the latency tables are there
    assert "kds in all x etcd" not in md


def test_the_overall_peak_is_never_below_a_peak_sampled_during_the_scenario() -> None:
    # The kernel's high-water mark can lag the resident size: read after the storm, it was
    # once below what the sampler saw during it.
    foot = {
        "global_peak_rss_mb": 144.3,
        "global_rss_mb_storm_peak": 144.6,
        "global_rss_mb_idle_connect_peak": 142.7,
    }
    fixed = report._with_overall_peak({"footprint": foot})
    assert fixed["footprint"]["global_peak_rss_mb"] == 144.6
    assert foot["global_peak_rss_mb"] == 144.3  # the recorded results are left as they are
    higher = report._with_overall_peak({"footprint": {**foot, "global_peak_rss_mb": 150.1}})
    assert higher["footprint"]["global_peak_rss_mb"] == 150.1
