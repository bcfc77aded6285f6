"""Anti-entropy end to end (a real global and zone in one process, tests/unit/inprocess.py):
damage below the zone's recorded revision (a damaged row, a lost row, a stale row, a row
global deleted) is found by the hash-tree check and repaired through the normal apply path;
zone-local resources and conflicts are never touched; both sides say what was repaired."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from globalcp.checks import GlobalTrees
from kds.model import Key, Kind, Resource, stays_on_global
from kds.store.results import ORIGIN_GLOBAL
from kds.store.sqlite import ZoneEngine
from kds.store.sqlite._db import COLS
from tests.unit.inprocess import Pair, ZoneRun, running_pair, wait_until
from zonecp import check_answers
from zonecp.check_answers import REUSE_S
from zonecp.client import ZoneClient

T0 = "2026-11-30T00:00:00.000Z"


def _secret(name: str, data: bytes, **kw: object) -> Resource:
    return Resource(Kind.SECRET, name, mesh="default", data=data, **kw)  # type: ignore[arg-type]


def _write_row(engine: ZoneEngine, r: Resource) -> None:
    """Write a synced row behind the store's back, with a matching digest (as a restored
    old copy of the file would hold it)."""
    conn = engine.db.conn()
    conn.execute(
        f"INSERT OR REPLACE INTO resources ({COLS}, sync_gen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        engine.sealer.row_values(r, ORIGIN_GLOBAL, None, 0),
    )


def _damage(engine: ZoneEngine, name: str) -> None:
    conn = engine.db.conn()
    conn.execute(
        "UPDATE resources SET data=X'00' WHERE name=? AND origin='global'", (name,)
    )  # the digest no longer matches: a damaged row


def _drop(engine: ZoneEngine, name: str) -> None:
    engine.db.conn().execute("DELETE FROM resources WHERE name=? AND origin='global'", (name,))


async def _synced(pair: Pair, zone: ZoneRun) -> dict[Key, bytes]:
    """The zone's synced view equals global's: {key: data}."""
    g = [(k, d) for k, d in (await pair.store.sync_leaves()).leaves if not stays_on_global(k)]
    z = await zone.store.sync_leaves()
    return {} if sorted(g) != sorted(z.leaves) else dict(g)


async def test_damage_below_the_recorded_revision_is_found_and_repaired(tmp_path: Path) -> None:
    async with running_pair(tmp_path, anti_entropy_interval=0.2) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        # Kuma's system GlobalSecrets stay on global: never a leaf, never repaired onto a zone.
        await pair.store.put(Resource(Kind.GLOBAL_SECRET, "admin-user-token", data=b"x"), T0)
        for i in range(300):
            await pair.store.put(_secret(f"s{i}", b"value-%d" % i), T0)
        zone = pair.start_zone("zone-a")
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        state = await wait_until(lambda: pair.tracker.zones["zone-a"].last_check, what="check")
        assert state["result"] == "equal" and state["repairedCount"] == 0
        # The check is over: the zone lets go of its tree once a next check could not use it.
        await wait_until(lambda: zone.client.answers.held is None, timeout=REUSE_S + 5)
        # The zone's own resources: one of its own, one shadowing a synced copy (a conflict).
        await zone.store.put(_secret("mine", b"zone-local"), T0)
        await zone.store.put(Resource(Kind.GLOBAL_SECRET, "shared", data=b"local"), T0)
        await pair.store.put(Resource(Kind.GLOBAL_SECRET, "shared", data=b"global"), T0)
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        await wait_until(lambda: zone.client.status.conflicts, what="the conflict")

        s7 = await pair.store.get(Key(Kind.SECRET, "default", "s7"))
        assert s7 is not None
        stale = _secret("s7", b"older", version=1, creation_time=T0, modification_time=T0)
        gone = _secret(
            "deleted-on-global", b"back", version=2, creation_time=T0, modification_time=T0
        )

        def harm() -> None:
            _damage(zone.engine, "s3")
            _drop(zone.engine, "s150")
            _write_row(zone.engine, stale)
            _write_row(zone.engine, gone)

        checks_before = sum(pair.tracker.zones["zone-a"].checks.values())
        await zone.store._threads.write(harm)
        assert not await _synced(pair, zone)
        state = await wait_until(
            lambda: pair.tracker.zones["zone-a"].last_repair, what="a repairing check"
        )
        assert state["result"] == "repair"
        assert sorted(state["repaired"]) == sorted(
            [
                "Secret default/s3",
                "Secret default/s150",
                "Secret default/s7",
                "Secret default/deleted-on-global",
            ]
        )
        assert state["repairedCount"] == 4 and state["differed"]
        assert sum(pair.tracker.zones["zone-a"].checks.values()) > checks_before
        await wait_until(lambda: zone.client.status.repaired >= 4, what="repaired on the zone")
        leaves = await wait_until_async(lambda: _synced(pair, zone))
        assert Key(Kind.SECRET, "default", "s7") in leaves
        row = await zone.store.get(Key(Kind.SECRET, "default", "s7"))
        assert row is not None and row.resource.data == s7.resource.data
        assert await zone.store.get(Key(Kind.SECRET, "default", "deleted-on-global")) is None
        assert await zone.store.get(Key(Kind.GLOBAL_SECRET, "", "admin-user-token")) is None
        # Zone-local resources and the conflict are as they were.
        mine = await zone.store.get(Key(Kind.SECRET, "default", "mine"))
        assert mine is not None and mine.resource.data == b"zone-local"
        shared = await zone.store.get(Key(Kind.GLOBAL_SECRET, "", "shared"))
        assert shared is not None and shared.resource.data == b"local" and shared.shadows_synced
        st = zone.client.status
        assert st.repaired >= 4 and "Secret default/s3" in " ".join(st.last_repaired)
        assert st.applied_revision == pair.hub.head  # a repair records no revision
        # The next check verifies the repair: equal again.
        await wait_until(
            lambda: pair.tracker.zones["zone-a"].last_check["result"] == "equal",
            what="an equal check after the repair",
        )
        overview = (await pair.tracker.view("zone-a")).overview()  # type: ignore[union-attr]
        assert overview["antiEntropy"]["repaired"] == 4
        assert overview["antiEntropy"]["lastRepair"]["repairedCount"] == 4
        assert "value-" not in str(overview)  # keys only, never values


async def wait_until_async(pred, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def test_a_stream_that_began_with_a_snapshot_checks_one_interval_later() -> None:
    """A resumed stream is checked as soon as the zone caught up (the damage anti-entropy looks
    for lies below the resume point); one that began with a snapshot has just replaced every
    synced resource, so its first check waits one interval."""
    from globalcp.checks import ZoneChecks

    now = [100.0]
    resumed = ZoneChecks(None, 300.0, lambda: now[0])  # type: ignore[arg-type]
    fresh = ZoneChecks(None, 300.0, lambda: now[0], after_snapshot=True)  # type: ignore[arg-type]
    assert resumed.due() and not fresh.due()
    now[0] += 299.0
    assert not fresh.due()
    now[0] += 1.0
    assert fresh.due()


async def _zone_of_twenty(pair: Pair) -> ZoneRun:
    """Global with a mesh and 20 secrets, and a zone connecting to it."""
    await pair.store.put(Resource(Kind.MESH, "default"), T0)
    for i in range(20):
        await pair.store.put(_secret(f"s{i}", b"value-%d" % i), T0)
    return pair.start_zone("zone-a")


async def test_a_zone_slow_to_answer_a_check_does_not_take_global_for_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zone that takes longer than its silence limit to build its tree (a big store) and
    then reads late (a busy process) still finds global's heartbeats waiting: the check
    completes and the stream stays up, where it used to end as "global went silent" the
    moment the zone listened again, and the zone was checked again on its next stream."""
    late = False

    class BusyProcess:
        """The stream as a busy zone process reads it: the read after a long answer is
        delivered 0.2 s late (within the silence limit, counted from when the zone listens)."""

        def __init__(self, call: Any):
            self._call = call

        def __getattr__(self, name: str) -> Any:
            return getattr(self._call, name)

        async def read(self) -> Any:
            nonlocal late
            if late:
                late = False
                await asyncio.sleep(0.2)
            return await self._call.read()

    real_converse = ZoneClient._converse

    async def converse(self: ZoneClient, call: Any, waits: Any) -> bool:
        return await real_converse(self, BusyProcess(call), waits)

    monkeypatch.setattr(ZoneClient, "_converse", converse)
    monkeypatch.setattr(check_answers, "REUSE_S", 0.0)  # every check reads its tree: slowly
    async with running_pair(tmp_path, heartbeat_interval=0.1, anti_entropy_interval=0.3) as pair:
        zone = await _zone_of_twenty(pair)
        real = zone.store.sync_leaves_into
        slow = 0

        async def slow_leaves(take: Any) -> Any:
            nonlocal slow, late
            slow += 1
            await asyncio.sleep(1.0)  # over three times the 0.3 s silence limit
            late = True
            return await real(take)

        zone.store.sync_leaves_into = slow_leaves  # type: ignore[method-assign]
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        await wait_until(lambda: slow >= 3, timeout=20, what="three slow answers")
        state = await wait_until(lambda: pair.tracker.zones["zone-a"].last_check, what="check")
        assert state["result"] == "equal"
        assert zone.client.session.connections == 1, "the zone reconnected"


async def test_global_heartbeats_while_it_builds_its_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Global's tree of a big store can take longer than a zone's silence limit to build (a
    busy machine, many zones connecting): the stream waiting for it keeps sending heartbeats,
    so the zone is not lost and checked again on a new stream."""
    real_build = GlobalTrees._build
    builds = 0

    async def slow_build(self: GlobalTrees) -> Any:
        nonlocal builds
        builds += 1
        await asyncio.sleep(1.0)  # over three times the 0.3 s silence limit
        return await real_build(self)

    monkeypatch.setattr(GlobalTrees, "_build", slow_build)
    async with running_pair(tmp_path, heartbeat_interval=0.1, anti_entropy_interval=0.3) as pair:
        zone = await _zone_of_twenty(pair)
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        state = await wait_until(lambda: pair.tracker.zones["zone-a"].last_check, what="check")
        assert state["result"] == "equal" and builds == 1
        assert zone.client.session.connections == 1, "the zone reconnected"


async def test_a_zone_whose_own_loop_stalled_does_not_take_global_for_silent(
    tmp_path: Path,
) -> None:
    """A pause of the zone's own process (a garbage collection, a starved CPU, a paused VM)
    longer than the silence limit is not global's silence: global's heartbeats wait, unread,
    and the zone reads them before it judges, instead of dropping a healthy stream."""
    # Heartbeats every 0.25 s: a silence limit of 0.75 s. Here global shares the stalled
    # loop, so its heartbeats are sent only once the stall ends (a real global's would be
    # waiting already): the margins leave a loaded machine time to carry them.
    async with running_pair(tmp_path, heartbeat_interval=0.25) as pair:
        zone = await _zone_of_twenty(pair)
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        for _ in range(2):
            time.sleep(1.0)  # the loop (zone's and, here, global's) stalls past the limit
            await asyncio.sleep(1.0)  # heartbeats flow again between the stalls
        assert zone.client.session.connections == 1, "the zone reconnected"


async def test_a_refusal_going_on_is_reported_once_and_ends_when_its_reason_does(
    tmp_path: Path,
) -> None:
    """A zone keeps a Mesh global deleted while zone-local secrets live in it. Each check
    finds that copy and sends the delete again; the zone refuses it again. That is logged and
    counted as an error once on each side, not at every check, and a check is not repeated at
    once after a repair refused whole. Once the zone's secret is gone, the next check's
    repair applies."""
    from structlog.testing import capture_logs

    temp = Key(Kind.MESH, "", "temp")
    async with running_pair(tmp_path, anti_entropy_interval=0.5) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        await pair.store.put(Resource(Kind.MESH, "temp"), T0)
        zone = pair.start_zone("zone-a")
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        await zone.store.put(Resource(Kind.SECRET, "local", mesh="temp", data=b"v"), T0)
        with capture_logs() as logs:
            await pair.store.delete(temp)
            await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
            state = pair.tracker.zones["zone-a"]
            await wait_until(lambda: state.errors == 1, what="the refusal reported")
            # When each of the next four checks ends: one an interval (0.5 s), not three at
            # once after a repair refused whole.
            ended: list[float] = []
            seen = sum(state.checks.values())
            deadline = time.monotonic() + 30.0
            while len(ended) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                if (n := sum(state.checks.values())) > seen:
                    ended += [time.monotonic()] * (n - seen)
                    seen = n
        gaps = [b - a for a, b in itertools.pairwise(ended)]
        assert len(ended) == 4 and min(gaps) > 0.3, gaps
        row = await zone.store.get(temp)
        assert row is not None  # still kept: its secret lives in it
        assert state.errors == 1 and state.rejected["Mesh"] > 1
        warned = [e for e in logs if e["log_level"] == "warning" and "reject" in e["event"]]
        assert len(warned) == 2, warned  # one line on global, one on the zone
        quiet = [e for e in logs if e["event"].startswith(("still refusing", "zone still"))]
        assert quiet and all(e["log_level"] == "info" for e in quiet)
        zone_errors = zone.client.status.last_error_at
        assert zone_errors  # the first refusal

        # The zone's secret goes: the next check's repair deletes the Mesh there.
        await zone.store.delete(Key(Kind.SECRET, "temp", "local"))
        await wait_until_async(lambda: _gone(zone, temp))
        assert zone.client.status.last_error_at == zone_errors  # no error since the first


async def _gone(zone: ZoneRun, key: Key) -> bool:
    return await zone.store.get(key) is None


async def test_the_zones_own_mesh_keeps_the_synced_secrets_its_mtls_uses(tmp_path: Path) -> None:
    """A zone's own Mesh "zm" (kept in place of global's, a name conflict) uses global's
    copies of c and k as its CA. Global replacing c with what is no certificate is refused,
    and a new CA (cert and key together) is taken, so that Mesh keeps a valid CA. Global
    deleting them is refused, so that Mesh never names a Secret the zone lacks; once the
    zone's Mesh stops using them, a check's repair deletes them."""
    import datetime as dt

    from kds.ca import CaOptions, generate_ca

    ca = generate_ca("zm", "ca-1", CaOptions(key_type="ECDSA"), dt.datetime.now(dt.UTC))
    mtls = {
        "enabledBackend": "ca-1",
        "backends": [
            {
                "name": "ca-1",
                "type": "provided",
                "conf": {"cert": {"secret": "c"}, "key": {"secret": "k"}},
            }
        ],
    }
    cert, key = Key(Kind.SECRET, "zm", "c"), Key(Kind.SECRET, "zm", "k")
    async with running_pair(tmp_path, anti_entropy_interval=0.4) as pair:
        zone = pair.start_zone("zone-a")
        await zone.store.put(Resource(Kind.MESH, "zm"), T0)
        await pair.store.put(Resource(Kind.MESH, "zm"), T0)
        await pair.store.put(Resource(Kind.SECRET, "c", mesh="zm", data=ca.cert_pem), T0)
        await pair.store.put(Resource(Kind.SECRET, "k", mesh="zm", data=ca.key_pem), T0)
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        await zone.store.put(Resource(Kind.MESH, "zm", spec={"mtls": mtls}), T0)
        await pair.store.put(Resource(Kind.SECRET, "c", mesh="zm", data=b"no cert"), T0)
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        row = await zone.store.get(cert)
        assert row is not None and row.resource.data == ca.cert_pem  # refused: c stays
        new = generate_ca("zm", "ca-1", CaOptions(key_type="ECDSA"), dt.datetime.now(dt.UTC))
        await pair.store.put_many(
            [
                Resource(Kind.SECRET, "c", mesh="zm", data=new.cert_pem),
                Resource(Kind.SECRET, "k", mesh="zm", data=new.key_pem),
            ],
            T0,
        )
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        row = await zone.store.get(cert)
        assert row is not None and row.resource.data == new.cert_pem  # a valid CA: applied
        await pair.store.delete(cert)
        await pair.store.delete(key)
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        for k in (cert, key):
            row = await zone.store.get(k)
            assert row is not None and row.origin == ORIGIN_GLOBAL  # global's copy, kept
        assert pair.tracker.zones["zone-a"].rejected["Secret"] >= 3
        # Its Mesh no longer uses them: the next check's repair deletes them here too.
        await zone.store.put(Resource(Kind.MESH, "zm"), T0)
        await wait_until_async(lambda: _gone(zone, cert))
        await wait_until_async(lambda: _gone(zone, key))


class _Rows:
    """A global store of ``n`` secrets of ``size`` bytes each (GlobalStore.get only)."""

    def __init__(self, n: int, size: int):
        from kds.store.results import ORIGIN_GLOBAL, Row

        self.rows = {
            Key(Kind.SECRET, "m", f"s{i}"): Row(
                Resource(Kind.SECRET, f"s{i}", mesh="m", data=b"x" * size, version=3),
                ORIGIN_GLOBAL,
            )
            for i in range(n)
        }

    async def get(self, key: Key) -> object:
        return self.rows.get(key)


async def test_a_repair_reads_and_sends_at_most_a_window_of_puts() -> None:
    """A zone answering "I hold nothing" has global repair every key of a check (up to
    1,000): the puts stop once their changes reach REPAIR_BYTES, the rest deferred to the
    next check, so a stream never holds 1,000 large secrets for a zone."""
    from globalcp.checks import REPAIR_BYTES
    from kds.protocol.anti_entropy import Outcome

    rows = _Rows(100, 100_000)
    from globalcp.checks import ZoneChecks

    checks = ZoneChecks(rows, 300.0, lambda: 0.0)  # type: ignore[arg-type]
    gone = Key(Kind.SECRET, "m", "only-on-the-zone")
    out = Outcome(1, 5, "repair", puts=sorted(rows.rows, key=str), deletes=[gone])
    records = await checks.repairs(out)
    puts = [r for r in records if not r.deleted]
    assert 0 < sum(len(r.change) for r in puts) < REPAIR_BYTES + 100_100
    assert len(puts) == 11 and out.deferred == 100 - 11
    assert [r.key for r in records if r.deleted] == [gone]  # deletes cost next to nothing
