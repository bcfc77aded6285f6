"""Rows and change-log entries of a resource kind this version does not know, as a newer
instance sharing the store writes them (kds.store._kinds): every read skips them, on every
backend; they are never sent to a zone, never listed or counted; the log keeps its
revisions whole; each kind is logged once, cut and escaped; the store and the daemon go on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from globalcp.hub import Hub
from globalcp.snapshot_plan import zone_bound
from kds.crypto import DataCipher, key_id
from kds.model import Kind, Resource
from kds.protocol.records import next_chain
from kds.store import GlobalStore, PgTarget, ResourceStore, ZoneStore, _kinds, open_global_store
from kds.store._rows import (
    COLS,
    DIGEST,
    LOG_COLS,
    UPSERT_RESOURCE,
    get_meta,
    log_digest,
    row_digest,
    set_meta,
)
from kds.store._sealing import aad
from tests.pgserver import shared_server
from tests.unit.inprocess import running_pair, wait_until
from tests.unit.store_backends import BACKENDS, GSID, MESH, T0, StoreFactory, inc_put, mk
from tests.unit.test_store_conformance import apply, dbatch

FOREIGN = "MeshTrafficPermission"
VALUE = b"value-of-a-newer-kind"
SKIPPED = "resources of a kind this version does not know are skipped"


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first report of each kind (they are once per process)."""
    monkeypatch.setattr(_kinds, "_reported", set())


@pytest.fixture(params=sorted(BACKENDS))
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield BACKENDS[request.param](tmp_path)


def _secret(name: str) -> Resource:
    return Resource(Kind.SECRET, name, mesh="default", data=b"v-" + name.encode())


async def plant(
    store: ResourceStore, kind: str = FOREIGN, name: str = "p1", origin: str = "global"
) -> int:
    """Write what a newer instance would, in one transaction: a row of ``kind`` and, on a
    global store, its change-log entry at the next revision (the head moved to it)."""
    engine: Any = store._engine  # type: ignore[attr-defined]
    logged = engine.role == "global"

    def write() -> int:
        with engine.db.write() as conn:
            rev = int(get_meta(conn, "head", "0")) + 1 if logged else 7
            change = b"\x0a\x05newer" + name.encode()
            # Sealed as the store seals (plaintext without a key), as a newer instance would.
            sealer, where = engine.sealer, (kind, "default", name, origin)
            data, kid = sealer.seal(VALUE, aad("data", *where))
            wire = sealer.seal(change, aad("wire", *where))[0] if logged else None
            row = (
                kind,
                "default",
                name,
                origin,
                data,
                "{}",
                '{"rules": []}',
                T0,
                T0,
                rev,
                kid,
                wire,
            )
            conn.execute(UPSERT_RESOURCE, (*row, row_digest(row), 0))
            if logged:
                chain = next_chain(bytes.fromhex(get_meta(conn, "chain")), change)
                logged_change = sealer.seal(change, aad("changelog", str(rev), "", "", ""))[0]
                entry = (rev, kind, "default", name, False, logged_change, chain, 1.5, kid)
                conn.execute(
                    f"INSERT INTO changelog ({LOG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (*entry, log_digest(entry)),
                )
                set_meta(conn, "head", rev)
                set_meta(conn, "chain", chain.hex())
            return rev

    result: int = await store._threads.write(write)  # type: ignore[attr-defined]
    return result


def _skips(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == SKIPPED]


async def test_every_read_of_a_global_store_skips_it(factory: StoreFactory) -> None:
    g = factory.global_store("g")
    try:
        await g.put(mk(MESH), T0)
        await g.put(_secret("s1"), T0)
        before = await g.head()
        with capture_logs() as logs:
            rev = await plant(g)
            await g.put(_secret("s2"), T0)
            head = await g.head()
            for kind in Kind:  # what the API lists and counts
                rows = await g.list_rows(kind)
                assert all(r.resource.kind is kind for r in rows)
            assert len(await g.list_rows(Kind.SECRET, "default")) == 2
            counts = await g.counts()
            assert set(counts) == {str(k) for k in Kind} and counts["Secret"]["global"] == 2
            assert await g.conflicts() == []
            snap = await g.snapshot()
            assert snap.revision == head and len(snap.changes) == 3
            assert all(c.key.name != "p1" for c in snap.changes)
            leaves = await g.sync_leaves()
            assert sorted(str(k) for k, _ in leaves.leaves) == [
                "Mesh default",
                "Secret default/s1",
                "Secret default/s2",
            ]
            # The log: whole (every revision there, the chain at each), the entry marked.
            records = await g.changes_after(before, head)
            assert [r.revision for r in records] == list(range(before + 1, head + 1))
            [foreign] = [r for r in records if r.foreign]
            assert foreign.revision == rev and foreign.foreign == FOREIGN
            assert foreign.chain == await g.chain_at(rev)
            assert [str(r.key) for r in zone_bound(records)] == ["Secret default/s2"]
            # Anti-entropy: a whole read instead of the keys since (as before), never a loop.
            assert await g.sync_leaves_since(before, 10) is None
            assert await g.sync_leaves_since(head, 10) is not None
        assert [e["kind"] for e in _skips(logs)] == [FOREIGN]  # once, however many reads
        assert _skips(logs)[0]["log_level"] == "warning"
        assert not [e for e in logs if e["log_level"] == "error" or "damaged" in e["event"]]
    finally:
        g.close()
    with capture_logs() as logs:  # opened again: its start-up checks find nothing damaged
        again = factory.global_store("g")
        again.close()
    assert not [e for e in logs if e["log_level"] in ("error", "warning")]


async def test_every_read_of_a_zone_store_skips_it(factory: StoreFactory) -> None:
    """A zone store shared with a newer instance of the zone: a synced row and a zone-local
    one of that kind (a name conflict, as this version would call it) are skipped, and a
    snapshot from global leaves them for the version that knows them."""
    z: ZoneStore = factory.zone_store("z")
    try:
        await apply(z, dbatch([inc_put(mk(MESH), 1)], 1), GSID, T0)
        with capture_logs() as logs:
            await plant(z, origin="global")
            await plant(z, origin="zone")
            assert await z.conflicts() == []
            counts = await z.counts()
            assert counts["Mesh"]["global"] == 1 and set(counts) == {str(k) for k in Kind}
            assert [str(k) for k, _ in (await z.sync_leaves()).leaves] == ["Mesh default"]
            assert await z.list_rows(Kind.SECRET) == []
            snapshot = dbatch([inc_put(mk(MESH), 2)], 2, snapshot=True, from_revision=0)
            result = await z.apply_batch(snapshot, GSID, T0)
            assert not result.rejected
        assert [e["kind"] for e in _skips(logs)] == [FOREIGN]
        engine: Any = z._engine  # type: ignore[attr-defined]

        def left() -> list[Any]:
            with engine.db.read() as conn:
                cur = conn.execute("SELECT origin FROM resources WHERE kind=?", (FOREIGN,))
                return sorted(r[0] for r in cur)

        assert await z._threads.read(left) == ["global", "zone"]  # type: ignore[attr-defined]
    finally:
        z.close()


async def test_a_new_first_key_seals_its_values_again(factory: StoreFactory) -> None:
    """Re-sealing at start covers rows and log entries of a kind this version does not
    know, so the old key can be retired after one start with the new key first, whichever
    instance of a shared store makes that start."""
    old, new = os.urandom(32), os.urandom(32)
    g = factory.global_store("g", cipher=DataCipher([old]))
    try:
        await g.put(mk(MESH), T0)
        await plant(g)
    finally:
        g.close()
    factory.global_store("g", cipher=DataCipher([new, old])).close()  # the start that re-seals
    g = factory.global_store("g", cipher=DataCipher([new]))  # refused if anything kept `old`
    try:
        engine: Any = g._engine  # type: ignore[attr-defined]

        def planted() -> tuple[Any, ...]:
            with engine.db.read() as conn:
                cur = conn.execute(f"SELECT {COLS} FROM resources WHERE kind=?", (FOREIGN,))
                return tuple(cur.fetchone())

        r = await g._threads.read(planted)  # type: ignore[attr-defined]
        assert r[10] == key_id(new) and row_digest(r[:DIGEST]) == bytes(r[DIGEST])
        where = aad("data", *r[:4])
        assert engine.sealer.open(bytes(r[4]), r[10], where) == VALUE
        change = engine.sealer.open(bytes(r[11]), r[10], aad("wire", *r[:4]))
        assert change.startswith(b"\x0a\x05newer")
        assert [r.foreign for r in await g.changes_after(1, 2)] == [FOREIGN]
    finally:
        g.close()


async def test_the_kind_is_logged_once_cut_and_escaped(factory: StoreFactory) -> None:
    g = factory.global_store("g")
    try:
        await g.put(mk(MESH), T0)
        odd = "Mesh\x1b[2J\u202eTraffic" + "x" * 300
        with capture_logs() as logs:
            await plant(g, kind=odd, name="a")
            await plant(g, kind=odd, name="b")
            await plant(g, kind="Other", name="c")
            for _ in range(3):
                await g.snapshot()
                await g.counts()
        kinds = [e["kind"] for e in _skips(logs)]
        assert len(kinds) == 2 and kinds[1] == "Other"
        assert kinds[0].startswith("Mesh\\x1b[2J\\u202eTraffic") and "\x1b" not in kinds[0]
        assert kinds[0].endswith("more characters]") and len(kinds[0]) < 120
    finally:
        g.close()


async def test_a_global_never_sends_it_to_zones(tmp_path: Path) -> None:
    """A zone resuming through the entry from the hub's cache, one resuming through it from
    the store's change log, and one taking a snapshot all get every other change and never
    the foreign one; the anti-entropy checks find their trees equal to global's."""
    async with running_pair(tmp_path, anti_entropy_interval=0.2) as pair:
        await pair.store.put(mk(MESH), T0)
        await pair.store.put(_secret("s1"), T0)
        for name in ("zone-a", "zone-c"):
            z = pair.start_zone(name)
            await wait_until(lambda z=z: z.client.status.applied_revision == pair.hub.head)
            await pair.stop_zone(name)
        before = pair.hub.head
        with capture_logs() as logs:
            await plant(pair.store)
            # As global's follower (globalcp.peers) publishes another instance's commits.
            pair.hub.publish_many(await pair.store.changes_after(before, await pair.store.head()))
            await pair.store.put(_secret("s2"), T0)
            assert pair.hub.head == before + 2  # moved over the foreign entry
            cached = pair.start_zone("zone-c")
            await wait_until(lambda: cached.client.status.applied_revision == pair.hub.head)
            pair.hub._cache.clear()  # the next range comes from the store's change log
            logged = pair.start_zone("zone-a")
            snapshot = pair.start_zone("zone-b")
            for z in (logged, snapshot):
                await wait_until(lambda z=z: z.client.status.applied_revision == pair.hub.head)
            for name in ("zone-a", "zone-b", "zone-c"):
                await wait_until(
                    lambda name=name: (
                        (pair.tracker.zones[name].last_check or {}).get("result") == "equal"
                    ),
                    what=f"an equal check of {name}",
                )
        assert [z.client.status.sync_mode for z in (logged, snapshot, cached)] == [
            "resume",
            "snapshot",
            "resume",
        ]
        for z in (logged, snapshot, cached):
            names = sorted(r.resource.name for r in await z.store.list_rows(Kind.SECRET))
            assert names == ["s1", "s2"]
            assert z.client.status.rejected == {}  # nothing it could not read was sent
        assert [e["kind"] for e in _skips(logs)] == [FOREIGN]
        assert not [e for e in logs if e["log_level"] == "error"]


async def test_another_instances_entry_moves_this_ones_hub_past_it() -> None:
    """On PostgreSQL, an instance following another's commits (globalcp.peers) publishes
    the entry as a record of its revision only: the hub's head moves past it."""
    from globalcp.peers import Peers
    from kds.store.postgres import PgGlobalStore

    target = PgTarget(shared_server().url, "f" + uuid.uuid4().hex[:12])
    older: GlobalStore = open_global_store(target)
    newer: GlobalStore = open_global_store(target)
    try:
        await older.put(mk(MESH), T0)
        hub = Hub(await older.head(), await older.log_floor(), 100)
        rev = await plant(newer)
        await newer.put(_secret("s1"), T0)
        assert isinstance(older, PgGlobalStore)
        with capture_logs() as logs:
            await Peers(older, hub, None, lambda *a, **k: 0).catch_up()
        assert hub.head == rev + 1
        cached = hub.cached_range(rev - 1, rev + 1)
        assert cached is not None and [r.foreign for r in cached] == [FOREIGN, ""]
        assert [e["kind"] for e in _skips(logs)] == [FOREIGN]
    finally:
        older.close()
        newer.close()
