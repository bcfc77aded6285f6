"""A zone's history read while a flush is writing it: every event is served exactly once,
whether it is still waiting, being written, or saved (the API reads while global flushes)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from globalcp.history import ZoneHistory
from kds.store import ZoneEvent
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore


class GatedStore(SqliteGlobalStore):
    """Holds each write of history until the test opens the gate."""

    def __init__(self, engine: GlobalEngine) -> None:
        super().__init__(engine)
        self.writing = asyncio.Event()
        self.gate = asyncio.Event()

    async def add_zone_events(self, events: Sequence[ZoneEvent], keep: int) -> None:
        self.writing.set()
        await self.gate.wait()
        await super().add_zone_events(events, keep)


async def test_an_event_being_written_is_read_once(tmp_path: Path) -> None:
    store = GatedStore(GlobalEngine(tmp_path / "g.db"))
    t = [1_800_000_000.0]
    history = ZoneHistory(store, clock=lambda: t[0])
    try:
        history.event("zone-a", "connected", mode="resume")
        history.lag_sample("zone-a", 0, 0.0)
        flush = asyncio.create_task(history.flush())
        await store.writing.wait()  # the flush has taken the events and not saved them yet
        during = await history.read("zone-a", 10, 0.0)
        assert [e["type"] for e in during["events"]] == ["connected"]
        assert len(during["lag"]) == 1
        store.gate.set()
        await flush
        t[0] += 1
        history.event("zone-a", "disconnected", reason="stopped")
        after = await history.read("zone-a", 10, 0.0)
        assert [e["type"] for e in after["events"]] == ["connected", "disconnected"]
        assert len(after["lag"]) == 1
    finally:
        store.close()
