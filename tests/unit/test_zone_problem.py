"""A zone tells global why it is failing: a full disk under its store reaches global's zone
status (and stays while the zone is offline), is bounded and escaped there, and clears once
batches apply again."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from globalcp.hub import Hub
from globalcp.zones import ERROR_CHARS, ZoneTracker
from kds.errors import StoreDamaged, StoreError, StoreFull
from kds.model import Kind, Resource
from kds.protocol.limits import PROBLEM_CHARS, check_problem
from kds.store.sqlite import ZoneEngine
from tests.unit.inprocess import running_pair, wait_until
from zonecp.client import store_problem
from zonecp.status import status_document

T0 = "2026-11-30T00:00:00.000Z"


async def _cap_writers(zone: Any, pages: int | None) -> None:
    """_cap on both connections that write a zone's store: the writer thread's, and the
    event loop's (small batches are applied there)."""
    await zone.store._threads.write(lambda: _cap(zone.engine, pages))
    _cap(zone.engine, pages)


def _cap(engine: ZoneEngine, pages: int | None) -> None:
    """Limit the store file to its current size (None: lift the limit), on this thread's
    connections: SQLite then fails every write that needs a page more with SQLITE_FULL, as a
    full disk does."""
    for conn in engine.db.thread_conns():
        now = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages or now if pages is not None else 1 << 30}")


async def test_a_full_zone_disk_reaches_global_and_clears_when_space_returns(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        zone = pair.start_zone("zone-a")
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head, what="sync")
        await _cap_writers(zone, 0)
        big = base64.b64encode(b"x" * 200_000)
        await pair.store.put(Resource(Kind.SECRET, "big", mesh="default", data=big), T0)

        def problem() -> str:
            view = pair.tracker.zones["zone-a"]
            return view.problem

        shown = await wait_until(problem, what="the zone's problem on global")
        assert shown.startswith("disk full: the zone's disk is full: ")
        assert "free space on that disk" in shown
        state = pair.tracker.zones["zone-a"]
        assert state.last_error == f"zone reports: {shown}"
        view = await pair.tracker.view("zone-a")
        assert view is not None
        assert view.summary()["problem"]["message"] == shown
        # The zone's own status says it too, and it keeps saying it on every redial: the
        # error is counted once however often the zone reports it.
        assert zone.client.status.problem == shown
        doc = status_document("zone-a", zone.client.status, await zone.store.counts())
        assert doc["problem"]["message"] == shown
        await wait_until(lambda: zone.client.status.connections >= 3, what="redials")
        assert state.errors == 1 and state.problem == shown
        # Space returns: the next batch applies and the problem is over, on both sides.
        await _cap_writers(zone, None)
        await wait_until(lambda: not problem(), what="the problem cleared")
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        assert zone.client.status.problem == ""
        assert view.summary()["problem"] is None
        assert "data" not in state.last_error  # names and causes, never a value


def test_store_failures_name_their_cause() -> None:
    assert store_problem(StoreFull("the zone's disk is full: x")).startswith("disk full: ")
    assert store_problem(StoreDamaged("row damaged", "k")).startswith("store damaged: ")
    assert store_problem(StoreError("cannot open")).startswith("store error: ")
    assert store_problem(ValueError("secret-value")) == "cannot apply a batch: ValueError"


def test_a_reported_problem_is_bounded() -> None:
    assert check_problem("x" * PROBLEM_CHARS) is None
    problem = check_problem("x" * (PROBLEM_CHARS + 1))
    assert problem is not None and problem.field == "status.problem"
    assert "x" * 10 not in str(problem)  # named, never echoed


@pytest.fixture
def tracker(tmp_path: Path) -> ZoneTracker:
    return ZoneTracker(None, Hub(0, 0, 10), clock=lambda: 100.0)  # type: ignore[arg-type]


def test_global_keeps_a_problem_escaped_bounded_and_counted_once(tracker: ZoneTracker) -> None:
    handle = tracker.connected(
        "zone-a",
        stream_id="s1",
        instance_id="zone-a-1",
        zone_version="t",
        protocol_version=1,
        store_backend="sqlite",
        resumed_revision=0,
    )
    hostile = "disk full\x1b[2J\nall zones healthy" + "y" * 2000
    assert handle.problem(hostile)
    state = tracker.zones["zone-a"]
    assert "\x1b" not in state.problem and "\n" not in state.problem
    assert "\\x1b" in state.problem
    assert len(state.problem) < ERROR_CHARS + 40
    assert state.errors == 1 and state.last_error.startswith("zone reports: disk full")
    assert not handle.problem(hostile)  # the same report again: nothing changes
    assert state.errors == 1
    handle.disconnected("connection lost")
    assert state.problem  # still shown while the zone is offline
    again = tracker.connected(
        "zone-a",
        stream_id="s2",
        instance_id="zone-a-1",
        zone_version="t",
        protocol_version=1,
        store_backend="sqlite",
        resumed_revision=0,
    )
    assert again.problem("")
    assert state.problem == "" and state.problem_at == 0.0
    assert state.last_error.startswith("zone reports: disk full")  # history stays
