"""Zone status history is bounded in total, not only per zone and series: the history of a
zone not seen for the retention time is dropped, and the whole is capped (oldest first), on
both backends."""

from __future__ import annotations

from pathlib import Path

from globalcp.history import (
    KEEP,
    PENDING_MAX,
    PENDING_PER_ZONE,
    PRUNE_EVERY,
    RETAIN_S,
    ZoneHistory,
)
from kds.store import GlobalStore, ZoneEvent
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore
from tests.unit.test_store_conformance import gstore, stores

__all__ = ["gstore", "stores"]  # the fixtures, used by name


def _ev(zone: str, t: float, kind: str = "event") -> ZoneEvent:
    return ZoneEvent(zone, kind, t, '{"type": "connected"}')


async def test_zones_not_seen_for_the_retention_time_lose_their_history(
    gstore: GlobalStore,
) -> None:
    await gstore.add_zone_events([_ev("gone", 100.0), _ev("gone", 200.0, "lag")], 1000)
    await gstore.add_zone_events([_ev("alive", 100.0), _ev("alive", 900.0, "lag")], 1000)
    dropped = await gstore.prune_zone_events(seen_since=500.0, total=1000)
    assert dropped == 2
    assert await gstore.zone_events("gone", "event") == []
    assert await gstore.zone_events("gone", "lag") == []
    # A zone seen since keeps all of its history, old entries included.
    assert [e.time for e in await gstore.zone_events("alive", "event")] == [100.0]
    assert [e.time for e in await gstore.zone_events("alive", "lag")] == [900.0]


async def test_the_total_is_capped_oldest_first(gstore: GlobalStore) -> None:
    for i in range(30):
        await gstore.add_zone_events([_ev(f"z{i % 3}", 1000.0 + i)], 1000)
    assert await gstore.prune_zone_events(seen_since=0.0, total=10) == 20
    kept = []
    for z in ("z0", "z1", "z2"):
        kept += [e.time for e in await gstore.zone_events(z, "event")]
    assert sorted(kept) == [1000.0 + i for i in range(20, 30)]
    assert await gstore.prune_zone_events(seen_since=0.0, total=10) == 0


async def test_global_prunes_at_its_first_flush_then_once_an_hour(tmp_path: Path) -> None:
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "g.db"))
    t = [1_800_000_000.0]
    history = ZoneHistory(store, clock=lambda: t[0])
    try:
        await store.add_zone_events([_ev("gone", t[0] - RETAIN_S - 1)], KEEP)
        history.event("alive", "connected", mode="resume")
        await history.flush()
        assert await store.zone_events("gone", "event") == []
        await store.add_zone_events([_ev("gone2", t[0] - RETAIN_S - 1)], KEEP)
        t[0] += PRUNE_EVERY / 2
        await history.flush()
        assert len(await store.zone_events("gone2", "event")) == 1  # not yet due
        t[0] += PRUNE_EVERY / 2
        await history.flush()
        assert await store.zone_events("gone2", "event") == []
        assert len(await store.zone_events("alive", "event")) == 1
    finally:
        store.close()


async def test_one_zone_flooding_events_never_pushes_another_s_out(tmp_path: Path) -> None:
    """Between two flushes one zone may have PENDING_PER_ZONE events waiting, its newer ones
    dropped and counted: a zone reconnecting as fast as it can pushed another zone's
    unsaved "disconnected" out of the shared list before."""
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "global.db"))
    try:
        history = ZoneHistory(store, clock=lambda: 1000.0)
        history.event("quiet", "disconnected", reason="connection lost")
        for i in range(PENDING_MAX + 10):
            history.event("noisy", "connected", instance=f"i-{i}")
        assert history.dropped == PENDING_MAX + 10 - PENDING_PER_ZONE
        await history.flush()
        saved = await store.zone_events("quiet", "event")
        assert len(saved) == 1 and "disconnected" in saved[0].data
        assert len(await store.zone_events("noisy", "event")) == PENDING_PER_ZONE
        history.event("noisy", "disconnected")  # saved: the zone's count starts again
        await history.flush()
        assert len(await store.zone_events("noisy", "event")) == PENDING_PER_ZONE + 1
    finally:
        store.close()
