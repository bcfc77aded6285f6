"""The fault suite on the PostgreSQL topology, short: two globals and two zones (one of two
instances) on a throwaway PostgreSQL server, writes through both globals, while global
instances, the zone's leader and PostgreSQL itself are killed (tests/faults/pg_runner.py),
judged by the same history checker. scripts/faults --postgres runs it for longer."""

from __future__ import annotations

from pathlib import Path

from tests.faults.pg_runner import PgFaultRun
from tests.pgserver import find_bindir


def test_a_seeded_run_on_postgresql_breaks_no_guarantee(tmp_path: Path) -> None:
    assert find_bindir() is not None, "PostgreSQL's server is not installed: scripts/setup-postgres"
    summary = PgFaultRun(tmp_path, seed=20261130, duration=25).run()
    assert summary.violations == [], summary.text()
    # No daemon died by itself (a PostgreSQL crash is reported and waited out, not fatal).
    assert summary.unexpected_exits == 0, summary.text()
    h = summary.history
    assert summary.acknowledged >= 30, summary.text()
    assert {o.target for o in h.ops} >= {"global", "zz", "zy"}, summary.text()
    # The topology's own faults did happen: a global instance, the zone's leader, PostgreSQL.
    assert {"kill-global", "kill-zone-leader", "kill-postgres"} <= set(summary.faults), (
        summary.text()
    )
    assert h.global_leaves and all(h.zone_leaves.values())
