"""globalcp.zones: each zone's status as the stream reports it, saved and read back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from globalcp.hub import Hub
from globalcp.zones import ZoneState, ZoneTracker
from kds.errors import StoreUnavailable
from kds.model import Kind, Resource
from kds.store import WriteResult
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

NOW = "2026-11-29T00:00:00.000Z"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


class HubStore(SqliteGlobalStore):
    """Global's store, its commits published to the hub of the latest tracker made; the
    tests also drive its engine directly."""

    hub: Hub | None = None

    def __init__(self, engine: GlobalEngine):
        super().__init__(engine)
        self.engine = engine

    def publish(self, results: Sequence[WriteResult]) -> None:
        if self.hub is not None:
            self.hub.publish_many([r.record for r in results if r.record is not None])


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[HubStore]:
    made: list[HubStore] = []
    engine = GlobalEngine(tmp_path / "g.db", clock=clock, on_commit=lambda rs: made[0].publish(rs))
    s = HubStore(engine)
    made.append(s)
    yield s
    s.close()


def _tracker(
    store: HubStore, clock: Clock, seen: list[tuple[str, float]] | None = None
) -> ZoneTracker:
    hub = store.hub = Hub(store.engine.head(), store.engine.log_floor(), 100)
    return ZoneTracker(
        store,
        hub,
        clock=clock,
        observe_latency=(lambda z, s: seen.append((z, s))) if seen is not None else None,
    )


def _connect(t: ZoneTracker, stream: str = "s1", resumed: int | None = None):  # type: ignore[no-untyped-def]
    return t.connected(
        "zone-a",
        stream_id=stream,
        instance_id=f"zone-a-{stream}",
        zone_version="0.1.0",
        protocol_version=1,
        store_backend="sqlite",
        resumed_revision=resumed,
    )


async def test_a_stream_reports_sends_acks_and_latency(store: HubStore, clock: Clock) -> None:
    seen: list[tuple[str, float]] = []
    t = _tracker(store, clock, seen)
    clock.t -= 100
    store.engine.put(Resource(Kind.MESH, "default"), NOW)  # committed before the zone connected
    clock.t += 100
    h = _connect(t)
    h.batch_sent(1, {"Mesh": 1})
    h.batch_acked(1, 1, t.hub.commit_time(1))
    assert seen == []  # a catch-up is not a propagation latency
    clock.t += 1
    store.engine.put(Resource(Kind.SECRET, "x", mesh="default", data=b"v"), NOW)
    clock.t += 0.25
    h.batch_sent(2, {"Secret": 1})
    h.batch_acked(2, 2, store.engine.commit_time(2))
    assert len(seen) == 1 and seen[0][0] == "zone-a" and seen[0][1] == pytest.approx(0.25, abs=0.05)
    v = await t.view("zone-a")
    assert v is not None
    s = v.overview()
    assert s["status"] == "Online" and s["ackedRevision"] == 2 and s["lagRevisions"] == 0
    assert s["resources"]["Mesh"] == {"sent": 1, "acknowledged": 1, "rejected": 0}
    assert s["resources"]["Secret"] == {"sent": 1, "acknowledged": 1, "rejected": 0}
    assert s["totalUpdates"] == 2 and s["messagesSent"] == 2 and s["lastError"] is None


async def test_one_ack_covering_several_batches_counts_each_and_times_the_last(
    store: HubStore, clock: Clock
) -> None:
    seen: list[tuple[str, float]] = []
    t = _tracker(store, clock, seen)
    h = _connect(t, resumed=0)
    store.engine.put(Resource(Kind.MESH, "default"), NOW)
    for name in ("a", "b"):
        store.engine.put(Resource(Kind.SECRET, name, mesh="default", data=b"v"), NOW)
    clock.t += 0.5
    h.batch_sent(1, {"Mesh": 1})
    h.batch_sent(2, {"Secret": 1})
    h.batch_sent(3, {"Secret": 1})
    h.batches_acked([1, 2, 3], 3, store.engine.commit_time(3), held=0.2)
    assert len(seen) == 1 and seen[0][1] == pytest.approx(0.3, abs=0.05)  # less the hold
    v = await t.view("zone-a")
    assert v is not None
    s = v.overview()
    assert s["ackedRevision"] == 3 and s["totalUpdates"] == 3
    assert s["resources"]["Mesh"] == {"sent": 1, "acknowledged": 1, "rejected": 0}
    assert s["resources"]["Secret"] == {"sent": 2, "acknowledged": 2, "rejected": 0}


async def test_lag_in_revisions_and_seconds(store: HubStore, clock: Clock) -> None:
    t = _tracker(store, clock)
    h = _connect(t, resumed=0)
    store.engine.put(Resource(Kind.MESH, "m1"), NOW)
    clock.t += 5
    store.engine.put(Resource(Kind.MESH, "m2"), NOW)
    clock.t += 2
    v = await t.view("zone-a")
    assert v is not None and v.lag_revisions == 2 and v.lag_seconds == pytest.approx(7, abs=0.5)
    h.batch_sent(1, {"Mesh": 1})
    h.batch_acked(1, 1, None)
    v = await t.view("zone-a")
    assert v is not None and v.lag_revisions == 1 and v.lag_seconds == pytest.approx(2, abs=0.5)
    t.hub._cache.clear()  # the store's change log answers when the hub no longer knows
    v = await t.view("zone-a")
    assert v is not None and v.lag_seconds == pytest.approx(2, abs=0.5)


async def test_only_the_current_stream_writes_status(store: HubStore, clock: Clock) -> None:
    t = _tracker(store, clock)
    old = _connect(t, "s1")
    new = _connect(t, "s2")
    old.conflicts(["Secret:default/x"])
    old.rejected(Kind.SECRET, "Secret:default/x", "nope")
    old.disconnected("replaced")  # the old stream's end must not mark the zone Offline
    v = await t.view("zone-a")
    assert v is not None
    s = v.overview()
    assert s["status"] == "Online" and s["instanceId"] == "zone-a-s2"
    assert s["conflicts"] == [] and s["totalErrors"] == 0 and s["connections"] == 2
    new.disconnected("connection lost")
    v = await t.view("zone-a")
    assert v is not None and v.summary()["status"] == "Offline"
    assert v.summary()["disconnectReason"] == "connection lost"


async def test_rejections_and_refusals_are_errors(store: HubStore, clock: Clock) -> None:
    t = _tracker(store, clock)
    h = _connect(t)
    h.rejected(Kind.MESH, "Mesh:team", "secrets still live in it")
    t.refused("zone-a", "refused instance zone-a-x: already connected")
    t.refused("zone-new", "refused instance zone-new-1: protocol version 9")
    v = await t.view("zone-a")
    assert v is not None
    o = v.overview()
    assert o["totalErrors"] == 2 and o["resources"]["Mesh"]["rejected"] == 1
    assert o["lastError"]["message"] == "refused instance zone-a-x: already connected"
    assert o["status"] == "Online"  # a refused second instance leaves the live one alone
    new = await t.view("zone-new")
    assert new is not None and new.summary()["status"] == "Offline"
    assert new.summary()["connectedAt"] is None


async def test_status_is_saved_and_read_back_offline_after_a_restart(
    store: HubStore, clock: Clock
) -> None:
    t = _tracker(store, clock)
    h = _connect(t, resumed=0)
    h.batch_sent(1, {"Mesh": 2})
    h.batch_acked(1, 5, None)
    h.conflicts(["GlobalSecret:g"])
    clock.t += 3
    h.message_received()
    await t.flush()
    again = _tracker(store, clock)
    clock.t += 60
    await again.load()
    v = await again.view("zone-a")
    assert v is not None
    s = v.overview()
    assert s["status"] == "Offline" and s["disconnectReason"] == "global stopped"
    assert s["ackedRevision"] == 5 and s["resources"]["Mesh"]["acknowledged"] == 2
    assert s["conflicts"] == ["GlobalSecret:g"]
    assert v.state.disconnected_at == 1_800_000_003.0  # its last message, not the restart
    last = (await again.history.read("zone-a", 10, 0.0))["events"][-1]
    assert last == {
        "type": "disconnected",
        "reason": "global stopped",
        "time": "2027-01-15T08:00:03.000Z",
    }


def test_saved_state_from_another_version_loads() -> None:
    text = json.dumps({"online": True, "acked_revision": 3, "future_field": 1, "sent": {}})
    s = ZoneState.from_json("z", text)
    assert s.name == "z" and s.acked_revision == 3 and s.sent["Secret"] == 0
    assert ZoneState.from_json("z", "not json").acked_revision == 0


async def test_instances_sharing_a_store_see_each_others_zones_and_a_lapsed_claim(
    store: HubStore, clock: Clock
) -> None:
    """Two trackers on one store (two global instances): the one without the zone's stream
    shows it Online at the other instance, renewals keep it so, and once the holder stops
    renewing for a lease the zone shows Offline naming the silent instance; a restarted
    instance leaves another's live zone alone."""
    hub = store.hub = Hub(store.engine.head(), store.engine.log_floor(), 100)
    a = ZoneTracker(store, hub, clock=clock, instance_id="global-a", lease=10.0)
    b = ZoneTracker(store, hub, clock=clock, instance_id="global-b", lease=10.0)
    _connect(a)
    await a.flush()
    (view,) = await b.views()
    assert view.state.online and view.summary()["globalInstance"] == "global-a"
    for _ in range(4):  # a renews its claim while it runs: b keeps seeing the zone Online
        clock.t += 4
        for s in a.claims.renew(a.zones.values()) if a.claims else []:
            a.mark(s)
        await a.flush()
        (view,) = await b.views()
        assert view.state.online
    restarted = ZoneTracker(store, hub, clock=clock, instance_id="global-c", lease=10.0)
    await restarted.load()
    assert restarted.zones["zone-a"].online  # another live instance's zone: not "stopped"
    clock.t += 11  # a stops renewing (killed)
    (view,) = await b.views()
    assert not view.state.online
    assert "global-a stopped renewing" in view.summary()["disconnectReason"]


async def test_history_records_the_zone_timeline_and_survives_a_restart(
    store: HubStore, clock: Clock
) -> None:
    t = _tracker(store, clock)
    h = _connect(t)
    clock.t += 1
    h.conflicts(["Secret:default/a", "Secret:default/b"])
    clock.t += 1
    h.conflicts(["Secret:default/b"])
    t.token_refused("zone-a", "PERMISSION_DENIED", "zone token t1 has been revoked", 2)
    t.token_refused("zone-unknown", "UNAUTHENTICATED", "bad signature", 0)  # not a known zone
    clock.t += 1
    h.disconnected("connection lost \x1b[31m")
    await t.flush()
    again = _tracker(store, clock)
    await again.load()
    got = await again.history.read("zone-a", 100, 0.0)
    events = got["events"]
    assert [e["type"] for e in events] == [
        "connected",
        "conflicts",
        "conflicts",
        "token-refused",
        "disconnected",
    ]
    assert events[0]["mode"] == "snapshot" and events[0]["instance"] == "zone-a-s1"
    assert events[1]["started"] == ["Secret:default/a", "Secret:default/b"]
    assert events[2]["ended"] == ["Secret:default/a"] and events[2]["count"] == 1
    assert events[3]["code"] == "PERMISSION_DENIED" and events[3]["more"] == 2
    assert events[4]["reason"] == "connection lost \\x1b[31m"  # escaped, as the status keeps it
    assert events[0]["time"] == "2027-01-15T08:00:00.000Z"
    # A lag sample when a zone connects or disconnects, taken at the next flush.
    assert [s["revisions"] for s in got["lag"]] == [0]
    assert (await again.history.read("zone-unknown", 100, 0.0))["events"] == []


async def test_history_is_bounded_per_zone_and_series(store: HubStore, clock: Clock) -> None:
    t = _tracker(store, clock)
    t.history.keep = 5
    h = _connect(t)
    for i in range(20):
        t.token_refused("zone-a", "UNAUTHENTICATED", "x" * 10_000, i)  # a flood of refusals
        h.conflicts([f"Secret:default/c{i}"])
    await t.flush()
    got = await t.history.read("zone-a", 100, 0.0)
    kinds = [e["type"] for e in got["events"]]
    # Each series keeps its newest five: the flood of refusals cannot push out the others.
    assert kinds.count("token-refused") == 5 and kinds.count("conflicts") == 5
    assert all(len(e["reason"]) < 600 for e in got["events"] if e["type"] == "token-refused")
    names = ["Secret:default/many-" + "x" * 200 + str(i) for i in range(100)]
    clock.t += 1
    h.conflicts(names)
    await t.flush()
    last = (await t.history.read("zone-a", 1, 0.0))["events"][0]
    assert last["startedCount"] == 100 and len(last["started"]) == 5  # 1,200 characters
    # The longest names a key can have, starting and ending in one change: still listed.
    longest = [f"GlobalSecret:{'n' * 250}{i:03d}" for i in range(20)]
    h.conflicts(longest[:10])
    clock.t += 1
    h.conflicts(longest[10:])
    await t.flush()
    last = (await t.history.read("zone-a", 1, 0.0))["events"][0]
    assert last["started"] == longest[10:14] and last["ended"] == longest[:4]
    assert last["startedCount"] == last["endedCount"] == 10
    rows = await store.zone_events("zone-a", "event", 0.0, 1000)
    assert all(len(r.data.encode()) <= 4096 for r in rows)
    assert all("truncated" not in r.data for r in rows)


async def test_a_claim_the_store_does_not_renew_ends_its_stream_before_it_lapses(
    store: HubStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance whose renewals cannot be saved (cut off from the store) gives up the
    zone's stream within the margin before the saved claim lapses, once, and refuses new
    streams (cut_off) until a save works again; while saves work it never does."""
    hub = store.hub = Hub(store.engine.head(), store.engine.log_floor(), 100)
    a = ZoneTracker(store, hub, clock=clock, instance_id="global-a", lease=10.0)
    assert a.claims is not None
    _connect(a)
    await a.flush()
    for _ in range(5):  # renewed and saved: never lapsing
        clock.t += 4
        for s in a.claims.renew(a.zones.values()):
            a.mark(s)
        await a.flush()
        assert a.claims.lapsing(a.zones) == [] and not a.claims.cut_off
    saved_until = a.zones["zone-a"].lease_until

    async def unreachable(batch: object) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(store, "save_zone_statuses", unreachable)
    clock.t = saved_until - 4.5
    for s in a.claims.renew(a.zones.values()):  # renewed in memory, the save fails
        a.mark(s)
    await a.flush()
    assert a.zones["zone-a"].lease_until > saved_until  # not what the store holds
    clock.t = saved_until - 1.5
    assert a.claims.lapsing(a.zones) == []
    clock.t = saved_until - 1.0  # the margin: end it before another instance may take it
    assert a.claims.lapsing(a.zones) == ["zone-a"] and a.claims.cut_off
    assert a.claims.lapsing(a.zones) == []  # once
    monkeypatch.undo()
    a.mark(a.zones["zone-a"])
    await a.flush()
    assert not a.claims.cut_off


async def test_the_lease_watch_ends_the_streams_it_cannot_renew(
    store: HubStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = store.hub = Hub(store.engine.head(), store.engine.log_floor(), 100)
    a = ZoneTracker(store, hub, clock=clock, instance_id="global-a", lease=2.0)
    _connect(a)  # never saved: its first lease is its deadline
    ended: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def end_stream(zone: str, reason: str) -> bool:
        ended.put_nowait((zone, reason))
        return True

    watch = asyncio.create_task(a.run_lease_watch(end_stream))
    try:
        clock.t += 1.9
        zone, reason = await asyncio.wait_for(ended.get(), 5)
        assert zone == "zone-a" and "global-a cannot renew its claim" in reason
    finally:
        watch.cancel()


async def test_a_store_away_while_sampling_lag_never_ends_the_flusher(
    store: HubStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flusher is a root task (its failure stops global): a store that cannot answer
    the lag sample's reads costs that sample only; the statuses are still saved."""
    hub = store.hub = Hub(store.engine.head(), store.engine.log_floor(), 100)
    a = ZoneTracker(store, hub, clock=clock, instance_id="global-a", lease=10.0)
    _connect(a)

    async def away() -> dict[str, str]:
        raise StoreUnavailable("PostgreSQL at test is unreachable")

    monkeypatch.setattr(store, "zone_statuses", away)
    await a.flush()
    monkeypatch.undo()
    assert json.loads((await store.zone_statuses())["zone-a"])["online"]


async def test_the_flusher_stops_when_cancelled_as_it_is_woken(
    store: HubStore, clock: Clock
) -> None:
    """Cancelled in the same turn of the loop as something urgent wakes it, the flusher ends.
    Around asyncio.wait_for, Python 3.11 swallowed that cancellation and the flusher went on
    for ever, holding a daemon's stop for its whole grace."""
    tracker = _tracker(store, clock)
    for _ in range(20):
        task = asyncio.create_task(tracker.run_flusher())
        await asyncio.sleep(0.01)  # waiting for something urgent
        tracker._urgent.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert task in done and task.cancelled()


def test_a_zones_refusals_are_saved_with_its_status_and_taken_on_from_it() -> None:
    """Another global instance on the store shows what the holder saved; an instance taking
    the zone's stream (or restarted) starts from the saved refusals, so the zone applying a
    change ends a refusal it did not hear of itself."""
    from globalcp.zone_state import REFUSED_SHOWN, ZoneStatusView
    from kds.model import Key
    from kds.protocol.refusals import Refusals

    refusals: Refusals[Key] = Refusals()
    keys = [Key(Kind.SECRET, "m", f"s{i}") for i in range(REFUSED_SHOWN + 5)]
    refusals.record((k, f"reason {k.name}") for k in keys)
    refusals.record([(Key(Kind.MESH, "", "m1"), "zone-local secrets live in it")])
    state = ZoneState(name="z")
    assert state.keep_refusals(refusals.latest(REFUSED_SHOWN), len(refusals))
    assert not state.keep_refusals(refusals.latest(REFUSED_SHOWN), len(refusals))  # unchanged
    back = ZoneState.from_json("z", state.to_json())
    assert back.refused_count == REFUSED_SHOWN + 6 and len(back.refused) == REFUSED_SHOWN
    assert back.refused_keys()[-1] == (Key(Kind.MESH, "", "m1"), "zone-local secrets live in it")
    view = ZoneStatusView(back, 10, 0.0).overview()
    assert view["refused"][-1] == {"key": "Mesh:m1", "reason": "zone-local secrets live in it"}
    assert view["refusedCount"] == REFUSED_SHOWN + 6

    # A saved form not of that shape (a damaged row, another version's) is dropped whole.
    for bad in ([["Secret", "m", "s"]], [["Nope", "", "x", "r"]], "x", [[1, 2, 3, 4]]):
        raw = json.loads(state.to_json())
        raw["refused"] = bad
        assert ZoneState.from_json("z", json.dumps(raw)).refused == []
    raw = json.loads(state.to_json())
    raw["refused_count"] = "many"
    assert ZoneState.from_json("z", json.dumps(raw)).refused_count == 0
