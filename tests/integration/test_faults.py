"""The fault suite, short: a seeded run of random operations and faults against real
daemons (tests/faults/runner.py), judged by the history checker (tests/faults/checker.py,
whose own tests plant each violation: tests/unit/test_fault_checker.py). scripts/faults
runs it for longer, with any seed."""

from __future__ import annotations

from pathlib import Path

from tests.faults.runner import FaultRun


def test_a_seeded_run_with_faults_breaks_no_guarantee(tmp_path: Path) -> None:
    summary = FaultRun(tmp_path, seed=20261130, duration=20).run()
    assert summary.violations == [], summary.text()
    h = summary.history
    # The run did what it claims: operations on both sides, faults of several kinds, and a
    # history with something in it to check.
    assert summary.acknowledged >= 40, summary.text()
    assert {o.target for o in h.ops} >= {"global", "zone-1", "zone-2"}, summary.text()
    assert len(summary.faults) >= 4 and sum(summary.faults.values()) >= 8, summary.text()
    # Crashes at chosen points did happen, and disks were filled.
    assert sum(summary.crashes.values()) >= 2, summary.text()
    assert {"disk-full-zone", "disk-full-global"} & set(summary.faults), summary.text()
    assert len(h.observations) >= 10 and sum(1 for a in h.applied if not a.start) >= 20
    assert h.global_leaves and all(h.zone_leaves.values())
