"""The store interface (kds.store.interface), run against every backend (store_backends).

These tests use the GlobalStore / ZoneStore Protocol methods only: what every backend must
do, not how one does it (SQLite's own tests are test_store_sqlite.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kds._pb import sync_pb2 as pb
from kds.errors import Conflict, NotFound, ProtocolError, ReadOnlySynced
from kds.model import Key, Kind, Resource
from kds.protocol.applier import DecodedBatch, Incoming
from kds.store import (
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    GlobalStore,
    ResourceStore,
    SyncState,
    WriteResult,
    ZoneApplyResult,
    ZoneEvent,
    ZoneStore,
)
from kds.wire import key_from_pb, resource_from_pb
from tests.unit.store_backends import (
    BACKENDS,
    G1,
    G2,
    GSID,
    MESH,
    S1,
    T0,
    T1,
    StoreFactory,
    inc_put,
    mk,
)

T2 = "2024-01-01T00:00:02Z"

S2 = Key(Kind.SECRET, "default", "s2")
HERE = -1  # a batch's from_revision: wherever the zone is


class Stores:
    """The stores one test opens with one backend's factory; closed when the test ends."""

    def __init__(self, factory: StoreFactory):
        self._factory = factory
        self._open: list[ResourceStore] = []

    def global_store(self, name: str = "global", **options: Any) -> GlobalStore:
        store = self._factory.global_store(name, **options)
        self._open.append(store)
        return store

    def zone_store(self, name: str = "zone", **options: Any) -> ZoneStore:
        store = self._factory.zone_store(name, **options)
        self._open.append(store)
        return store

    def close(self, store: ResourceStore) -> None:
        self._open.remove(store)
        store.close()

    def close_all(self) -> None:
        while self._open:
            self.close(self._open[-1])


@pytest.fixture(params=sorted(BACKENDS))
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    s = Stores(BACKENDS[request.param](tmp_path))
    yield s
    s.close_all()


@pytest.fixture
def gstore(stores: Stores) -> GlobalStore:
    return stores.global_store()


@pytest.fixture
def zstore(stores: Stores) -> ZoneStore:
    return stores.zone_store()


def inc_del(key: Key, rev: int = 1) -> Incoming:
    return Incoming(rev, key)


def dbatch(
    changes: Iterable[Incoming],
    revision: int,
    *,
    snapshot: bool = False,
    final: bool = True,
    from_revision: int = HERE,
) -> DecodedBatch:
    return DecodedBatch(
        seq=1,
        from_revision=from_revision,
        revision=revision,
        snapshot=snapshot,
        final=final,
        head_revision=revision,
        changes=tuple(changes),
    )


async def test_a_zone_store_records_the_zone_it_serves(stores: Stores) -> None:
    """The first zone to start on a store is recorded; another is told whose store it is."""
    z = stores.zone_store("bound")
    assert await z.bind_zone("zone-a") == "zone-a"
    assert await z.bind_zone("zone-b") == "zone-a"
    stores.close(z)
    z = stores.zone_store("bound")
    assert await z.bind_zone("zone-b") == "zone-a"
    assert await z.bind_zone("zone-a") == "zone-a"


async def apply(zone: ZoneStore, batch: DecodedBatch, gsid: str, now: str) -> ZoneApplyResult:
    """zone.apply_batch, a batch made with from_revision=HERE starting where the zone is."""
    if batch.from_revision == HERE:
        batch = replace(batch, from_revision=(await zone.sync_state()).applied_revision)
    return await zone.apply_batch(batch, gsid, now)


# --------------------------------------------------------------------------- global role


async def test_global_put_get_list_delete(gstore: GlobalStore) -> None:
    """A global store puts, gets, lists and deletes resources of every kind."""
    await gstore.put(mk(MESH), T0)
    await gstore.put(mk(S1, b"one"), T0)
    await gstore.put(mk(S2, b"two"), T0)
    await gstore.put(mk(G1, b"g"), T0)
    row = await gstore.get(S1)
    assert row is not None
    assert row.origin == ORIGIN_GLOBAL and not row.shadows_synced
    assert row.resource.data == b"one"
    assert [r.resource.key for r in await gstore.list_rows(Kind.SECRET)] == [S1, S2]
    assert [r.resource.key for r in await gstore.list_rows(Kind.SECRET, "default")] == [S1, S2]
    assert await gstore.list_rows(Kind.SECRET, "other") == []
    assert [r.resource.key for r in await gstore.list_rows(Kind.MESH)] == [MESH]
    assert [r.resource.key for r in await gstore.list_rows(Kind.GLOBAL_SECRET)] == [G1]
    res = await gstore.delete(S1)
    assert res.changed and res.resource is None
    assert await gstore.get(S1) is None
    assert [r.resource.key for r in await gstore.list_rows(Kind.SECRET)] == [S2]


async def test_versions_page_names_keys_and_versions_as_page_does(gstore: GlobalStore) -> None:
    """The status page's read: the keys and versions page() returns, without their data."""
    await gstore.put(mk(MESH), T0)
    await gstore.put(mk(S2, b"two"), T0)
    await gstore.put(mk(S1, b"one"), T0)
    await gstore.put(mk(S1, b"one again"), T0)
    total, rows = await gstore.page(Kind.SECRET, None, 0, 1)
    assert await gstore.versions_page(Kind.SECRET, 1) == (
        total,
        [(r.resource.key, r.resource.version) for r in rows],
    )
    assert await gstore.versions_page(Kind.SECRET, 10) == (2, [(S1, 4), (S2, 2)])
    assert await gstore.versions_page(Kind.GLOBAL_SECRET, 10) == (0, [])


async def test_global_get_missing_is_none(gstore: GlobalStore) -> None:
    """get() of an absent key returns None."""
    assert await gstore.get(G1) is None


async def test_global_delete_missing_not_found(gstore: GlobalStore) -> None:
    """Deleting an absent key raises NotFound and writes nothing."""
    with pytest.raises(NotFound):
        await gstore.delete(G1)
    assert await gstore.head() == 0


async def test_revisions_increase_by_one_per_changed_write(gstore: GlobalStore) -> None:
    """Each changed write (put or delete) gets the next revision; version == revision."""
    assert await gstore.head() == 0
    r1 = await gstore.put(mk(MESH), T0)
    r2 = await gstore.put(mk(G1, b"a"), T0)
    r3 = await gstore.put(mk(G1, b"b"), T1)
    r4 = await gstore.delete(G1)
    revs = [r.record.revision for r in (r1, r2, r3, r4) if r.record]
    assert revs == [1, 2, 3, 4]
    assert await gstore.head() == 4
    assert r1.resource is not None and r1.resource.version == 1
    assert r3.resource is not None and r3.resource.version == 3
    row = await gstore.get(MESH)
    assert row is not None and row.resource.version == 1


async def test_unchanged_put_writes_nothing(gstore: GlobalStore) -> None:
    """A put with identical content returns changed=False, no record, and keeps the head."""
    await gstore.put(mk(G1, b"a", labels={"x": "y"}), T0)
    res = await gstore.put(mk(G1, b"a", labels={"x": "y"}), T1)
    assert not res.changed and res.record is None
    assert res.resource is not None
    assert res.resource.modification_time == T0 and res.resource.version == 1
    assert await gstore.head() == 1
    assert len(await gstore.changes_after(0, 100)) == 1


async def test_label_change_is_a_change(gstore: GlobalStore) -> None:
    """Changing only labels is a changed write."""
    await gstore.put(mk(G1, b"a"), T0)
    assert (await gstore.put(mk(G1, b"a", labels={"x": "y"}), T1)).changed
    assert await gstore.head() == 2


async def test_update_keeps_creation_time(gstore: GlobalStore) -> None:
    """An update keeps creation_time and sets modification_time to now."""
    await gstore.put(mk(G1, b"a"), T0)
    res = await gstore.put(mk(G1, b"b"), T2)
    assert res.resource is not None
    assert res.resource.creation_time == T0
    assert res.resource.modification_time == T2
    row = await gstore.get(G1)
    assert row is not None
    assert (row.resource.creation_time, row.resource.modification_time) == (T0, T2)


async def test_recreate_after_delete_gets_new_creation_time(gstore: GlobalStore) -> None:
    """A resource deleted and created again has a fresh creation_time."""
    await gstore.put(mk(G1), T0)
    await gstore.delete(G1)
    res = await gstore.put(mk(G1), T2)
    assert res.resource is not None and res.resource.creation_time == T2


async def test_put_ignores_caller_metadata(gstore: GlobalStore) -> None:
    """Times and version given by the caller are replaced by the store's own."""
    res = await gstore.put(mk(G1, creation_time="1999", modification_time="1999", version=99), T0)
    assert res.resource is not None
    assert (res.resource.creation_time, res.resource.version) == (T0, 1)


async def test_delete_mesh_with_secrets_conflict(gstore: GlobalStore) -> None:
    """Deleting a Mesh that still holds Secrets raises Conflict; after they go it succeeds."""
    await gstore.put(mk(MESH), T0)
    await gstore.put(mk(S1), T0)
    with pytest.raises(Conflict) as e:
        await gstore.delete(MESH)
    assert not isinstance(e.value, ReadOnlySynced)
    assert await gstore.get(MESH) is not None and await gstore.head() == 2
    await gstore.delete(S1)
    await gstore.delete(MESH)
    assert await gstore.get(MESH) is None


async def test_secret_in_missing_mesh_not_found(gstore: GlobalStore) -> None:
    """A Secret in a Mesh that does not exist raises NotFound and writes nothing."""
    with pytest.raises(NotFound):
        await gstore.put(mk(S1), T0)
    assert await gstore.head() == 0 and await gstore.get(S1) is None


async def test_global_secret_needs_no_mesh(gstore: GlobalStore) -> None:
    """A GlobalSecret is stored without any Mesh."""
    assert (await gstore.put(mk(G1), T0)).changed


async def test_write_record_matches_changelog(gstore: GlobalStore) -> None:
    """The record a write returns is what changes_after returns for that revision."""
    w = await gstore.put(mk(G1, b"secret"), T0)
    (rec,) = await gstore.changes_after(0, 1)
    assert w.record == rec
    assert rec.key == G1 and not rec.deleted


async def test_change_bytes_decode(gstore: GlobalStore) -> None:
    """Change bytes decode to kds.v1.Change: puts carry the stored resource, deletes the key."""
    await gstore.put(mk(MESH), T0)
    put = await gstore.put(mk(S1, b"\x00secret", labels={"a": "b"}), T1)
    await gstore.delete(S1)
    recs = await gstore.changes_after(0, 10)
    assert [(r.revision, r.key, r.deleted) for r in recs] == [
        (1, MESH, False),
        (2, S1, False),
        (3, S1, True),
    ]
    c2 = pb.Change.FromString(recs[1].change)
    assert c2.revision == 2 and c2.WhichOneof("op") == "put"
    assert resource_from_pb(c2.put) == put.resource
    c3 = pb.Change.FromString(recs[2].change)
    assert c3.revision == 3 and c3.WhichOneof("op") == "delete"
    assert key_from_pb(c3.delete) == S1


async def test_changes_after_range(gstore: GlobalStore) -> None:
    """changes_after(a, b) returns revisions a < r <= b in order."""
    for i in range(1, 8):
        await gstore.put(mk(G1, bytes([i])), T0)
    assert [r.revision for r in await gstore.changes_after(2, 5)] == [3, 4, 5]
    assert [r.revision for r in await gstore.changes_after(0, 100)] == list(range(1, 8))
    assert await gstore.changes_after(7, 7) == []
    assert await gstore.changes_after(5, 3) == []


async def test_changelog_bounded_and_floor_advances(stores: Stores) -> None:
    """The change log keeps log_size entries; log_floor rises so every change after it is kept."""
    s = stores.global_store("g", log_size=3)
    try:
        assert await s.log_floor() == 0
        for i in range(1, 4):
            await s.put(mk(G1, bytes([i])), T0)
        assert await s.log_floor() == 0
        assert [r.revision for r in await s.changes_after(0, 100)] == [1, 2, 3]
        for i in range(4, 11):
            await s.put(mk(G1, bytes([i])), T0)
            assert await s.log_floor() == i - 3
            assert [r.revision for r in await s.changes_after(0, 100)] == [i - 2, i - 1, i]
            # a zone at log_floor can resume: every change after it is there
            floor = await s.log_floor()
            assert [r.revision for r in await s.changes_after(floor, await s.head())] == list(
                range(floor + 1, await s.head() + 1)
            )
        assert await s.head() == 10
    finally:
        stores.close(s)


async def test_unchanged_put_does_not_advance_floor(stores: Stores) -> None:
    """Unchanged puts neither use revisions nor trim the log."""
    s = stores.global_store("g", log_size=2)
    try:
        await s.put(mk(G1), T0)
        for _ in range(5):
            await s.put(mk(G1), T1)
        assert (await s.head(), await s.log_floor()) == (1, 0)
    finally:
        stores.close(s)


async def test_snapshot(gstore: GlobalStore) -> None:
    """snapshot() returns every resource once, Meshes first, at the head revision."""
    await gstore.put(mk(G1), T0)  # 1
    await gstore.put(mk(MESH), T0)  # 2
    await gstore.put(mk(S1), T0)  # 3
    await gstore.put(mk(Key(Kind.MESH, "", "aaa")), T0)  # 4
    await gstore.put(mk(G2), T0)  # 5
    await gstore.delete(G2)  # 6
    await gstore.put(mk(G1, b"new"), T0)  # 7
    snap = await gstore.snapshot()
    assert snap.revision == 7 == await gstore.head()
    assert snap.store_id == gstore.store_id
    keys = [c.key for c in snap.changes]
    assert sorted(keys) == sorted([G1, MESH, S1, Key(Kind.MESH, "", "aaa")])
    assert [k.kind for k in keys[:2]] == [Kind.MESH, Kind.MESH]
    assert all(not c.deleted for c in snap.changes)
    for c in snap.changes:
        msg = pb.Change.FromString(c.change)
        assert msg.WhichOneof("op") == "put"
        r = resource_from_pb(msg.put)
        assert r.key == c.key and r.version == c.revision
        row = await gstore.get(c.key)
        assert row is not None and row.resource == r
    g1 = next(c for c in snap.changes if c.key == G1)
    assert g1.revision == 7


async def test_snapshot_empty(gstore: GlobalStore) -> None:
    """An empty global store snapshots as no changes at revision 0."""
    snap = await gstore.snapshot()
    assert (snap.revision, snap.changes) == (0, [])


async def test_snapshot_survives_log_trim(stores: Stores) -> None:
    """A snapshot carries resources whose change-log entries were trimmed long ago."""
    s = stores.global_store("g", log_size=1)
    try:
        await s.put(mk(MESH), T0)
        await s.put(mk(S1), T0)
        await s.put(mk(G1), T0)
        snap = await s.snapshot()
        assert [c.key for c in snap.changes] == [MESH, S1, G1]
    finally:
        stores.close(s)


async def test_reopen_keeps_everything(stores: Stores) -> None:
    """Closing and reopening a store keeps resources, head, log, floor and store_id."""
    s = stores.global_store("g", log_size=5)
    await s.put(mk(MESH), T0)
    await s.put(mk(S1, b"persist"), T1)
    for i in range(6):
        await s.put(mk(G1, bytes([i + 1])), T2)
    before = (
        s.store_id,
        await s.head(),
        await s.log_floor(),
        await s.changes_after(0, 100),
        await s.snapshot(),
    )
    stores.close(s)
    s2 = stores.global_store("g", log_size=5)
    try:
        after = (
            s2.store_id,
            await s2.head(),
            await s2.log_floor(),
            await s2.changes_after(0, 100),
            await s2.snapshot(),
        )
        assert after == before
        row = await s2.get(S1)
        assert row is not None and row.resource.data == b"persist"
        assert row.resource.creation_time == T1
        assert (await s2.put(mk(G2), T2)).record.revision == before[1] + 1  # type: ignore[union-attr]
    finally:
        stores.close(s2)


async def test_store_ids_differ(stores: Stores) -> None:
    """Two fresh stores get different store ids."""
    a = stores.global_store("a")
    b = stores.global_store("b")
    try:
        assert a.store_id and a.store_id != b.store_id
    finally:
        stores.close(a)
        stores.close(b)


async def test_global_counts(gstore: GlobalStore) -> None:
    """counts() on global reports every kind, all with origin global."""
    await gstore.put(mk(MESH), T0)
    await gstore.put(mk(S1), T0)
    await gstore.put(mk(S2), T0)
    assert await gstore.counts() == {
        "Mesh": {"global": 1, "zone": 0},
        "Secret": {"global": 2, "zone": 0},
        "GlobalSecret": {"global": 0, "zone": 0},
    }


async def test_history_chain_follows_every_change_and_the_log(stores: Stores) -> None:
    """Each change extends the chain by hashing its bytes; chain_at knows the head, every
    revision still in the log and the floor, and nothing older."""
    from kds.protocol.records import next_chain

    s = stores.global_store("g", log_size=3)
    try:
        chains = [b""]
        for i in range(6):
            rec = (await s.put(mk(G1, f"v{i}".encode()), T0)).record
            assert rec is not None
            assert rec.chain == next_chain(chains[-1], rec.change)
            chains.append(rec.chain)
        assert await s.head() == 6 and await s.log_floor() == 3
        assert [await s.chain_at(r) for r in range(7)] == [None, None, None, *chains[3:]]
        assert [r.chain for r in await s.changes_after(3, 6)] == chains[4:]
        assert (await s.snapshot()).chain == chains[6]
    finally:
        stores.close(s)


async def test_on_commit_gets_each_transactions_records_once(stores: Stores) -> None:
    """Global's commit hook is called once per transaction with its records in revision
    order, and not at all for a write that changed nothing."""
    calls: list[list[int]] = []
    gstore = stores.global_store(
        "hooked",
        on_commit=lambda results: calls.append([r.record.revision for r in results if r.record]),
    )
    await gstore.put_many([mk(MESH), mk(S1), mk(G1)], T0)
    await gstore.put(mk(G1), T1)  # unchanged
    await gstore.delete(G1)
    assert calls == [[1, 2, 3], [4]]


# --------------------------------------------------------------------------- zone role


async def test_zone_put_creates_zone_rows(zstore: ZoneStore) -> None:
    """API writes on a zone create origin zone rows with a local version."""
    w = await zstore.put(mk(MESH), T0)
    assert w.changed and w.record is None
    await zstore.put(mk(S1, b"a"), T0)
    w2 = await zstore.put(mk(S1, b"b"), T1)
    assert w2.resource is not None and w2.resource.version == 2
    assert w2.resource.creation_time == T0
    row = await zstore.get(S1)
    assert row is not None and row.origin == ORIGIN_ZONE and not row.shadows_synced
    assert (await zstore.counts())["Secret"] == {"global": 0, "zone": 1}


async def test_zone_put_secret_without_mesh_not_found(zstore: ZoneStore) -> None:
    """A zone-local Secret needs its Mesh on the zone."""
    with pytest.raises(NotFound):
        await zstore.put(mk(S1), T0)


async def test_zone_unchanged_put(zstore: ZoneStore) -> None:
    """An identical zone put is unchanged and keeps the version."""
    await zstore.put(mk(G1), T0)
    w = await zstore.put(mk(G1), T1)
    assert not w.changed and w.resource is not None and w.resource.version == 1


async def test_apply_batch_writes_synced_rows(zstore: ZoneStore) -> None:
    """apply_batch stores synced copies (origin global) as sent and records the revision."""
    r = await apply(zstore, dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1, b"x"), 2)], 2), GSID, T1)
    assert r.applied_revision == 2 and r.rejected == []
    row = await zstore.get(S1)
    assert row is not None and row.origin == ORIGIN_GLOBAL
    assert row.resource.data == b"x" and row.resource.version == 2
    assert row.resource.creation_time == T0
    st = await zstore.sync_state()
    assert (st.global_store_id, st.applied_revision, st.applied_at) == (GSID, 2, T1)


async def test_sync_state_initially_empty(zstore: ZoneStore) -> None:
    """A zone that never synced has no store id and revision 0."""
    st = await zstore.sync_state()
    assert (st.global_store_id, st.applied_revision) == ("", 0)


async def test_non_final_part_records_no_revision(zstore: ZoneStore) -> None:
    """A non-final part is applied but the recorded revision only moves on the final part."""
    await apply(zstore, dbatch([inc_put(mk(G1), 3)], 3), GSID, T0)
    r = await apply(zstore, dbatch([inc_put(mk(G2), 5)], 6, final=False), "other-store", T1)
    assert r.applied_revision == 3
    assert await zstore.get(G2) is not None
    st = await zstore.sync_state()
    assert (st.global_store_id, st.applied_revision, st.applied_at) == (GSID, 3, T0)
    r = await apply(zstore, dbatch([], 6), "other-store", T2)
    assert r.applied_revision == 6
    assert (await zstore.sync_state()).global_store_id == "other-store"


async def test_apply_batch_deletes(zstore: ZoneStore) -> None:
    """A synced delete removes the synced copy; deleting an absent key is fine."""
    await apply(zstore, dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    r = await apply(zstore, dbatch([inc_del(G1, 2), inc_del(G2, 2)], 2), GSID, T0)
    assert r.rejected == [] and r.applied_revision == 2
    assert await zstore.get(G1) is None


async def test_apply_batch_rejection_still_advances(zstore: ZoneStore) -> None:
    """A rejected change is reported and the rest applied; the revision advances."""
    r = await apply(zstore, dbatch([inc_put(mk(S1), 1), inc_put(mk(G1), 2)], 2), GSID, T0)
    assert [k for k, _ in r.rejected] == [S1]
    assert r.applied_revision == 2
    assert await zstore.get(S1) is None and await zstore.get(G1) is not None


async def test_apply_put_then_delete_same_key(zstore: ZoneStore) -> None:
    """An uncoalesced range that puts then deletes a key leaves it absent."""
    await apply(zstore, dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    await apply(zstore, dbatch([inc_put(mk(G1, b"new"), 2), inc_del(G1, 3)], 3), GSID, T0)
    assert await zstore.get(G1) is None
    await apply(zstore, dbatch([inc_put(mk(G2), 4), inc_del(G2, 5)], 5), GSID, T0)
    assert await zstore.get(G2) is None


async def test_apply_batch_is_atomic(zstore: ZoneStore) -> None:
    """A batch that fails while applying leaves no part of it behind, nor a new revision."""
    await apply(zstore, dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    bad = mk(MESH).with_meta(spec={"mtls": {"x": object()}})  # not JSON: fails on write
    with pytest.raises(TypeError):
        await apply(zstore, dbatch([inc_put(mk(G2), 2), inc_put(bad, 3)], 3), GSID, T1)
    assert await zstore.get(G2) is None
    assert (await zstore.sync_state()).applied_revision == 1
    # the store is still usable afterwards
    assert (await apply(zstore, dbatch([inc_put(mk(G2), 2)], 2), GSID, T1)).applied_revision == 2


async def test_zone_conflict(zstore: ZoneStore) -> None:
    """A synced put over a zone-local key is a conflict: the local row is served."""
    await zstore.put(mk(G1, b"local"), T0)
    r = await apply(zstore, dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    assert r.new_conflicts == [G1] and r.rejected == []
    row = await zstore.get(G1)
    assert row is not None
    assert row.origin == ORIGIN_ZONE and row.shadows_synced
    assert row.resource.data == b"local"
    assert await zstore.conflicts() == [G1]
    (listed,) = await zstore.list_rows(Kind.GLOBAL_SECRET)
    assert listed.origin == ORIGIN_ZONE and listed.shadows_synced
    assert listed.resource.data == b"local"
    assert (await zstore.counts())["GlobalSecret"] == {"global": 1, "zone": 1}
    # the same put again is not a new conflict
    r2 = await apply(zstore, dbatch([inc_put(mk(G1, b"global2"), 2)], 2), GSID, T1)
    assert r2.new_conflicts == []


async def test_zone_large_batch_finds_every_existing_row(zstore: ZoneStore) -> None:
    """A batch of more keys than one lookup statement takes (the zone reads the rows a batch
    touches in groups), over two meshes and several kinds: every zone-local row among them
    is a conflict, every synced one an update, no matter which group it fell in."""
    other = Key(Kind.MESH, "", "other")
    await apply(zstore, dbatch([inc_put(mk(MESH), 1), inc_put(mk(other), 2)], 2), GSID, T0)
    keys = [Key(Kind.SECRET, m, f"s{i}") for m in ("default", "other") for i in range(1200)]
    keys += [Key(Kind.GLOBAL_SECRET, "", f"g{i}") for i in range(30)]
    local = set(keys[7::97])
    for key in sorted(local, key=str):
        await zstore.put(mk(key, b"local"), T0)
    first = await apply(zstore, dbatch([inc_put(mk(k), 3) for k in keys[::2]], 3), GSID, T1)
    assert sorted(first.new_conflicts, key=str) == sorted(local & set(keys[::2]), key=str)
    r = await apply(zstore, dbatch([inc_put(mk(k, b"new"), 4) for k in keys], 4), GSID, T1)
    assert sorted(r.new_conflicts, key=str) == sorted(local - set(keys[::2]), key=str)
    assert r.rejected == []
    local_secrets = sum(1 for k in local if k.kind is Kind.SECRET)
    counts = await zstore.counts()
    assert counts["Secret"] == {"global": 2400, "zone": local_secrets}
    assert counts["GlobalSecret"] == {"global": 30, "zone": len(local) - local_secrets}


async def test_zone_local_row_updatable_during_conflict(zstore: ZoneStore) -> None:
    """The zone may still update its own row while global's copy is kept aside."""
    await zstore.put(mk(G1, b"local"), T0)
    await apply(zstore, dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    w = await zstore.put(mk(G1, b"local2"), T2)
    assert w.changed
    row = await zstore.get(G1)
    assert row is not None and row.resource.data == b"local2" and row.shadows_synced


async def test_deleting_local_row_reveals_synced_copy(zstore: ZoneStore) -> None:
    """Deleting the zone-local row makes global's copy visible at once."""
    await zstore.put(mk(G1, b"local"), T0)
    await apply(zstore, dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    await zstore.delete(G1)
    row = await zstore.get(G1)
    assert row is not None
    assert row.origin == ORIGIN_GLOBAL and not row.shadows_synced
    assert row.resource.data == b"global"
    assert await zstore.conflicts() == []


async def test_global_delete_resolves_conflict(zstore: ZoneStore) -> None:
    """Global deleting its copy resolves the conflict and keeps the local row."""
    await zstore.put(mk(G1, b"local"), T0)
    await apply(zstore, dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    r = await apply(zstore, dbatch([inc_del(G1, 2)], 2), GSID, T1)
    assert r.resolved_conflicts == [G1]
    row = await zstore.get(G1)
    assert row is not None and row.origin == ORIGIN_ZONE and not row.shadows_synced
    assert await zstore.conflicts() == []


async def test_synced_only_key_read_only(zstore: ZoneStore) -> None:
    """A zone cannot put or delete a key it holds only as a synced copy."""
    await apply(zstore, dbatch([inc_put(mk(G1, b"g"), 1)], 1), GSID, T0)
    with pytest.raises(ReadOnlySynced):
        await zstore.put(mk(G1, b"mine"), T1)
    with pytest.raises(ReadOnlySynced):
        await zstore.delete(G1)
    row = await zstore.get(G1)
    assert row is not None and row.resource.data == b"g" and row.origin == ORIGIN_GLOBAL


async def test_synced_copy_written_back_unchanged_changes_nothing(zstore: ZoneStore) -> None:
    """A put identical to a synced copy is unchanged (no zone-local row, no version); one
    that differs in anything a user sees stays ReadOnlySynced."""
    await apply(zstore, dbatch([inc_put(mk(G1, b"g"), 1)], 1), GSID, T0)
    result = await zstore.put(mk(G1, b"g"), T1)
    assert not result.changed and not result.created and result.record is None
    results = await zstore.put_many([mk(G1, b"g")], T1)
    assert [r.changed for r in results] == [False]
    with pytest.raises(ReadOnlySynced):
        await zstore.put(mk(G1, b"g", labels={"team": "a"}), T1)
    row = await zstore.get(G1)
    assert row is not None and row.origin == ORIGIN_GLOBAL and row.resource.version == 1
    assert (await zstore.counts())["GlobalSecret"] == {"global": 1, "zone": 0}


async def test_zone_delete_missing_not_found(zstore: ZoneStore) -> None:
    """Deleting a key the zone does not hold at all is NotFound."""
    with pytest.raises(NotFound):
        await zstore.delete(G1)


async def test_zone_secret_in_synced_mesh(zstore: ZoneStore) -> None:
    """A zone-local Secret may live in a synced Mesh; global then cannot delete that Mesh."""
    await apply(zstore, dbatch([inc_put(mk(MESH), 1)], 1), GSID, T0)
    await zstore.put(mk(S1), T0)
    r = await apply(zstore, dbatch([inc_del(MESH, 2)], 2), GSID, T0)
    assert [k for k, _ in r.rejected] == [MESH]
    assert r.applied_revision == 2
    assert await zstore.get(MESH) is not None


async def test_zone_delete_local_mesh_with_secrets(zstore: ZoneStore) -> None:
    """A zone-local Mesh holding Secrets cannot be deleted, unless global's copy stays."""
    await zstore.put(mk(MESH), T0)
    await zstore.put(mk(S1), T0)
    with pytest.raises(Conflict):
        await zstore.delete(MESH)
    await apply(zstore, dbatch([inc_put(mk(MESH), 1)], 1), GSID, T0)
    await zstore.delete(MESH)
    row = await zstore.get(MESH)
    assert row is not None and row.origin == ORIGIN_GLOBAL


async def test_snapshot_removes_stale_synced_never_zone_rows(zstore: ZoneStore) -> None:
    """A final snapshot part deletes synced rows it did not carry and never zone-local rows."""
    await apply(
        zstore, dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2), inc_put(mk(G1), 3)], 3), GSID, T0
    )
    await zstore.put(mk(G2, b"zone"), T0)
    await zstore.put(mk(S2, b"zone"), T0)
    await zstore.put(mk(Key(Kind.GLOBAL_SECRET, "", "both"), b"zone"), T0)
    await apply(
        zstore, dbatch([inc_put(mk(Key(Kind.GLOBAL_SECRET, "", "both"), b"g"), 4)], 4), GSID, T0
    )
    # snapshot at 10 carries only the Mesh (in part 1) and G1 (in the final part)
    r1 = await apply(
        zstore, dbatch([inc_put(mk(MESH), 1)], 10, snapshot=True, final=False), GSID, T1
    )
    assert r1.removed_stale == 0 and await zstore.get(S1) is not None
    r2 = await apply(zstore, dbatch([inc_put(mk(G1), 3)], 10, snapshot=True), GSID, T1)
    assert r2.applied_revision == 10
    assert r2.removed_stale == 2  # S1 and the synced copy of "both"
    assert r2.resolved_conflicts == [Key(Kind.GLOBAL_SECRET, "", "both")]
    assert await zstore.get(S1) is None
    assert await zstore.get(MESH) is not None and await zstore.get(G1) is not None
    for k in (G2, S2, Key(Kind.GLOBAL_SECRET, "", "both")):
        row = await zstore.get(k)
        assert row is not None and row.origin == ORIGIN_ZONE and not row.shadows_synced
    assert await zstore.counts() == {
        "Mesh": {"global": 1, "zone": 0},
        "Secret": {"global": 0, "zone": 1},
        "GlobalSecret": {"global": 1, "zone": 2},
    }


async def test_snapshot_stale_mesh_and_its_secrets_removed(zstore: ZoneStore) -> None:
    """A snapshot that no longer carries a Mesh removes its synced Secrets, then the Mesh."""
    await apply(
        zstore, dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2), inc_put(mk(S2), 3)], 3), GSID, T0
    )
    r = await apply(zstore, dbatch([inc_put(mk(G1), 4)], 4, snapshot=True), GSID, T1)
    assert r.rejected == [] and r.removed_stale == 3
    assert await zstore.list_rows(Kind.MESH) == [] and await zstore.list_rows(Kind.SECRET) == []


async def test_snapshot_from_empty_new_global_removes_everything(zstore: ZoneStore) -> None:
    """A snapshot at revision 0 (a new, empty global store) removes every synced copy."""
    await apply(zstore, dbatch([inc_put(mk(G1), 1), inc_put(mk(G2), 2)], 2), GSID, T0)
    r = await apply(zstore, dbatch([], 0, snapshot=True), "new-store", T1)
    assert r.removed_stale == 2
    assert await zstore.list_rows(Kind.GLOBAL_SECRET) == []
    assert await zstore.sync_state() == SyncState("new-store", 0, T1)


async def test_snapshot_from_new_store_at_same_revision_removes_old(zstore: ZoneStore) -> None:
    """A snapshot from another global store at the same revision still removes stale copies."""
    await apply(zstore, dbatch([inc_put(mk(G1), 5)], 5, snapshot=True), GSID, T0)
    r = await apply(zstore, dbatch([inc_put(mk(G2), 5)], 5, snapshot=True), "new-store", T1)
    assert r.removed_stale == 1
    assert await zstore.get(G1) is None and await zstore.get(G2) is not None


async def test_repeated_snapshot_parts_keep_earlier_parts(zstore: ZoneStore) -> None:
    """A snapshot interrupted and sent again keeps what its earlier parts wrote."""
    part1 = dbatch([inc_put(mk(G1), 1)], 7, snapshot=True, final=False)
    await apply(zstore, part1, GSID, T0)
    await apply(zstore, part1, GSID, T0)  # resent after a cut
    r = await apply(zstore, dbatch([inc_put(mk(G2), 2)], 7, snapshot=True), GSID, T0)
    assert r.removed_stale == 0
    assert await zstore.get(G1) is not None and await zstore.get(G2) is not None


async def test_zone_reopen_keeps_sync_state(stores: Stores) -> None:
    """A zone store reopened keeps local rows, synced rows, conflicts and sync state."""
    z = stores.zone_store("z")
    await z.put(mk(G1, b"local"), T0)
    await apply(z, dbatch([inc_put(mk(G1, b"g"), 1), inc_put(mk(G2), 2)], 2), GSID, T1)
    sid = z.store_id
    stores.close(z)
    z2 = stores.zone_store("z")
    try:
        assert z2.store_id == sid
        assert (await z2.sync_state()).applied_revision == 2
        assert (await z2.sync_state()).global_store_id == GSID
        assert await z2.conflicts() == [G1]
        row = await z2.get(G2)
        assert row is not None and row.origin == ORIGIN_GLOBAL
    finally:
        stores.close(z2)


async def test_zone_counts_and_list_mixed(zstore: ZoneStore) -> None:
    """counts() splits by kind and origin; list() shows one row per key, local first."""
    await apply(
        zstore, dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2), inc_put(mk(G1), 3)], 3), GSID, T0
    )
    await zstore.put(mk(S2), T0)
    await zstore.put(mk(G2, b"local"), T0)
    assert await zstore.counts() == {
        "Mesh": {"global": 1, "zone": 0},
        "Secret": {"global": 1, "zone": 1},
        "GlobalSecret": {"global": 1, "zone": 1},
    }
    rows = await zstore.list_rows(Kind.SECRET, "default")
    assert [(r.resource.key, r.origin) for r in rows] == [
        (S1, ORIGIN_GLOBAL),
        (S2, ORIGIN_ZONE),
    ]


async def test_zone_mesh_conflict_listed(zstore: ZoneStore) -> None:
    """A Mesh held both locally and synced is listed by conflicts() and served locally."""
    await zstore.put(mk(MESH, labels={"who": "zone"}), T0)
    r = await apply(zstore, dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2)], 2), GSID, T0)
    assert r.new_conflicts == [MESH] and r.rejected == []
    assert await zstore.conflicts() == [MESH]
    row = await zstore.get(MESH)
    assert row is not None and row.origin == ORIGIN_ZONE and row.shadows_synced
    assert dict(row.resource.labels) == {"who": "zone"}


async def test_zone_refuses_a_range_that_does_not_start_at_its_revision(zstore: ZoneStore) -> None:
    """A batch (from, to] with from != the zone's revision raises ProtocolError, applies nothing."""
    await apply(zstore, dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    with pytest.raises(ProtocolError, match="at revision 1"):
        await apply(zstore, dbatch([inc_put(mk(G2), 3)], 3, from_revision=2), GSID, T1)
    assert await zstore.get(G2) is None
    assert (await zstore.sync_state()).applied_revision == 1


async def test_zone_records_the_chain_with_its_revision(zstore: ZoneStore) -> None:
    """A final batch's chain is kept with the applied revision; a non-final part's is not."""
    await apply(zstore, replace(dbatch([inc_put(mk(G1), 1)], 1), chain=b"c1"), GSID, T0)
    assert (await zstore.sync_state()).chain == b"c1"
    part = replace(dbatch([inc_put(mk(G2), 2)], 2, final=False), chain=b"ignored")
    await apply(zstore, part, GSID, T0)
    assert (await zstore.sync_state()).chain == b"c1"


async def test_page_counts_and_slices_the_effective_view(zstore: ZoneStore) -> None:
    """page() gives the total of the effective view (a shadowed synced copy counts once) and
    the requested slice in mesh/name order, with the shadowing flag."""
    mesh = mk(MESH)
    synced = [inc_put(mesh, 1)] + [
        inc_put(Resource(Kind.GLOBAL_SECRET, f"g{i}", data=b"s").with_meta(version=i + 2), i + 2)
        for i in range(4)
    ]
    await zstore.put(Resource(Kind.GLOBAL_SECRET, "g1", data=b"mine"), T1)  # will shadow g1
    await zstore.put(Resource(Kind.GLOBAL_SECRET, "local", data=b"l"), T1)
    await apply(zstore, dbatch(synced, 5), GSID, T0)
    total, rows = await zstore.page(Kind.GLOBAL_SECRET)
    assert total == 5
    assert [(r.resource.name, r.origin, r.shadows_synced) for r in rows] == [
        ("g0", "global", False),
        ("g1", "zone", True),
        ("g2", "global", False),
        ("g3", "global", False),
        ("local", "zone", False),
    ]
    total, rows = await zstore.page(Kind.GLOBAL_SECRET, None, offset=1, limit=2)
    assert total == 5 and [r.resource.name for r in rows] == ["g1", "g2"]


# --------------------------------------------------------------------------- more of the rules


async def test_a_store_names_its_backend_and_location(
    gstore: GlobalStore, zstore: ZoneStore
) -> None:
    """Every store says which backend it is and where its data lives; ids are its own."""
    for s in (gstore, zstore):
        assert s.backend and s.location
    assert gstore.store_id != zstore.store_id


async def test_global_has_no_conflicts(gstore: GlobalStore) -> None:
    """conflicts() is always empty on global: it holds one row per key."""
    await gstore.put(mk(MESH), T0)
    await gstore.put(mk(S1), T0)
    assert await gstore.conflicts() == []


async def test_put_reports_created_and_delete_the_row_it_deleted(gstore: GlobalStore) -> None:
    """A put says whether it created the resource; a delete returns the key and the row it
    deleted, and its change record."""
    await gstore.put(mk(MESH), T0)
    first = await gstore.put(mk(S1, b"one", labels={"a": "b"}), T1)
    assert first.changed and first.created
    second = await gstore.put(mk(S1, b"two"), T2)
    assert second.changed and not second.created
    res = await gstore.delete(S1)
    assert res.changed and res.resource is None and res.also == ()
    assert res.deleted == S1 and res.previous == second.resource
    assert res.record is not None and res.record.deleted and res.record.key == S1
    assert res.record.revision == 4 == await gstore.head()


async def test_zone_delete_returns_the_local_row_it_deleted(zstore: ZoneStore) -> None:
    """On a zone a delete's ``previous`` is the zone-local row, even with global's copy kept."""
    await zstore.put(mk(G1, b"local"), T0)
    await apply(zstore, dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    res = await zstore.delete(G1)
    assert res.deleted == G1 and res.record is None and res.also == ()
    assert res.previous is not None and res.previous.data == b"local"
    assert res.previous.version == 1


BUILTIN = Resource(
    Kind.MESH,
    "payments",
    spec={"mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}},
)
CA_SECRETS = ["payments.ca-builtin-cert-ca-1", "payments.ca-builtin-key-ca-1"]


async def test_builtin_ca_secrets_come_and_go_with_their_mesh(gstore: GlobalStore) -> None:
    """A Mesh with a builtin CA backend gets its CA secrets in the same transaction (in
    ``also``, each with its own revision); deleting the Mesh deletes them with it."""
    put = await gstore.put(BUILTIN, T0)
    assert put.created
    assert sorted(r.resource.name for r in put.also if r.resource) == CA_SECRETS
    assert [r.record.revision for r in (put, *put.also) if r.record] == [1, 2, 3]
    assert [r.resource.name for r in await gstore.list_rows(Kind.SECRET, "payments")] == CA_SECRETS
    res = await gstore.delete(BUILTIN.key)
    assert sorted(r.deleted.name for r in res.also if r.deleted) == CA_SECRETS
    assert [r.record.revision for r in (*res.also, res) if r.record] == [4, 5, 6]
    assert await gstore.list_rows(Kind.SECRET, "payments") == []
    assert await gstore.get(BUILTIN.key) is None


async def test_snapshot_units_come_in_sync_order(gstore: GlobalStore) -> None:
    """snapshot_units hands over the snapshot's records unit by unit: each Mesh first, with
    the backend Secrets it names in its unit, then every other resource alone; the same
    records snapshot() returns, at the same revision and chain."""
    await gstore.put(mk(G1), T0)
    await gstore.put(BUILTIN, T0)  # and its two CA secrets
    await gstore.put(mk(MESH), T0)
    await gstore.put(mk(S1), T0)
    units: list[list[ChangeRecord]] = []
    revision, chain = await gstore.snapshot_units(units.append)
    snap = await gstore.snapshot()
    assert (revision, chain) == (snap.revision, snap.chain) and revision == await gstore.head()
    meshes = [u for u in units if u[0].key.kind is Kind.MESH]
    assert units[: len(meshes)] == meshes  # every Mesh unit before any other
    by_mesh = {u[0].key.name: sorted(r.key.name for r in u[1:]) for u in meshes}
    assert by_mesh == {"payments": CA_SECRETS, MESH.name: []}
    assert all(len(u) == 1 for u in units[len(meshes) :])
    flat = [r for u in units for r in u]
    assert sorted(flat, key=lambda r: r.revision) == sorted(snap.changes, key=lambda r: r.revision)


async def test_put_many_is_all_or_nothing_and_names_the_failing_item(gstore: GlobalStore) -> None:
    """put_many writes every resource or none; a failure carries the failing item's index."""
    await gstore.put(mk(MESH), T0)
    with pytest.raises(NotFound) as e:
        await gstore.put_many([mk(G1), mk(S1), mk(Key(Kind.SECRET, "nowhere", "x"))], T1)
    assert e.value.item_index == 2
    assert await gstore.head() == 1
    assert await gstore.get(G1) is None and await gstore.get(S1) is None
    results = await gstore.put_many([mk(S1), mk(G1)], T1)
    assert [r.record.revision for r in results if r.record] == [2, 3]


async def test_put_many_sees_its_own_earlier_writes(gstore: GlobalStore) -> None:
    """Existing rows are read for all keys at once; a key given twice still sees its first
    write (an update of what the same put_many created), and an unchanged repeat is one."""
    await gstore.put_many([mk(MESH), mk(G1, b"old")], T0)
    results = await gstore.put_many([mk(G1, b"a"), mk(S1), mk(G1, b"b"), mk(G1, b"b")], T1)
    assert [(r.created, r.changed) for r in results] == [
        (False, True),
        (True, True),
        (False, True),
        (False, False),
    ]
    assert [r.record.revision for r in results if r.record] == [3, 4, 5]
    row = await gstore.get(G1)
    assert row is not None and row.resource.data == b"b" and row.resource.version == 5


async def test_zone_put_many_refuses_a_synced_key_and_writes_nothing(zstore: ZoneStore) -> None:
    """On a zone, one item whose key only global's copy holds refuses the whole put_many."""
    await apply(zstore, dbatch([inc_put(mk(G1, b"g"), 1)], 1), GSID, T0)
    with pytest.raises(ReadOnlySynced) as e:
        await zstore.put_many([mk(G2), mk(G1, b"mine")], T1)
    assert e.value.item_index == 1
    assert await zstore.get(G2) is None
    row = await zstore.get(G1)
    assert row is not None and row.origin == ORIGIN_GLOBAL and row.resource.data == b"g"


def _keys(results: Sequence[WriteResult]) -> list[Key | None]:
    return [r.resource.key if r.resource else r.deleted for r in results]


async def test_zone_on_commit_is_for_api_writes_only(stores: Stores) -> None:
    """A zone's commit hook sees each API write transaction once, never an applied batch,
    nor a write that changed nothing."""
    calls: list[list[Key | None]] = []
    z = stores.zone_store("hooked", on_commit=lambda results: calls.append(_keys(results)))
    await apply(z, dbatch([inc_put(mk(MESH), 1), inc_put(mk(G2), 2)], 2), GSID, T0)
    await z.put_many([mk(S1), mk(G1)], T0)
    await z.put(mk(G1), T1)  # unchanged
    await z.delete(G1)
    assert calls == [[S1, G1], [G1]]


async def test_a_failing_on_commit_hook_does_not_fail_the_write(stores: Stores) -> None:
    """The write is committed before the hook runs: a hook that raises changes nothing."""

    def hook(results: Sequence[WriteResult]) -> None:
        raise RuntimeError("hub down")

    g = stores.global_store("hooked", on_commit=hook)
    assert (await g.put(mk(G1), T0)).changed
    assert await g.get(G1) is not None
    assert (await g.delete(G1)).changed
    assert await g.head() == 2 and await g.get(G1) is None


async def test_commit_time_is_each_revisions_clock(stores: Stores) -> None:
    """commit_time is the clock at each revision's commit; for a revision the log no longer
    holds, the oldest time it still knows; None past the head."""
    now = [1000.0]
    g = stores.global_store("timed", log_size=2, clock=lambda: now[0])
    for i in range(4):
        now[0] = 1000.0 + i
        await g.put(mk(G1, bytes([i + 1])), T0)
    assert await g.log_floor() == 2
    assert [await g.commit_time(r) for r in (4, 3)] == [1003.0, 1002.0]
    assert await g.commit_time(1) == 1002.0
    assert await g.commit_time(5) is None


async def test_internal_secrets_round_trip_apart_from_resources(gstore: GlobalStore) -> None:
    """Internal secrets are put, replaced, listed by prefix and deleted; they never get a
    revision, a snapshot entry or a resource row."""
    await gstore.put_internal_secret("ca/key", b"k1", T0)
    await gstore.put_internal_secret("signing/1", b"s1", T0)
    await gstore.put_internal_secret("ca/key", b"k2", T1)
    assert await gstore.internal_secrets() == {"ca/key": b"k2", "signing/1": b"s1"}
    assert await gstore.internal_secrets("signing/") == {"signing/1": b"s1"}
    assert await gstore.head() == 0 and (await gstore.snapshot()).changes == []
    assert all(n == {"global": 0, "zone": 0} for n in (await gstore.counts()).values())
    assert await gstore.delete_internal_secret("ca/key") is True
    assert await gstore.delete_internal_secret("ca/key") is False
    assert await gstore.internal_secrets() == {"signing/1": b"s1"}


async def test_internal_secrets_added_once_keep_the_first_set(stores: Stores) -> None:
    """add_internal_secrets stores a set only where none of its names is stored: two stores
    on one backing store making a CA at once agree on the first one committed."""
    a = stores.global_store("shared")
    assert await a.add_internal_secrets({"ca-key": b"k1", "ca-cert": b"c1"}, T0) == {
        "ca-key": b"k1",
        "ca-cert": b"c1",
    }
    assert await a.add_internal_secrets({"ca-key": b"k2", "ca-cert": b"c2"}, T1) == {
        "ca-key": b"k1",
        "ca-cert": b"c1",
    }
    # One name held is enough to refuse the whole set: never a key of one CA, a cert of another.
    await a.delete_internal_secret("ca-cert")
    assert await a.add_internal_secrets({"ca-key": b"k3", "ca-cert": b"c3"}, T1) == {
        "ca-key": b"k1"
    }
    assert await a.internal_secrets("ca-") == {"ca-key": b"k1"}


async def test_zone_tokens_are_recorded_and_revoked_once(gstore: GlobalStore) -> None:
    """Issued tokens are listed by issue time; a revocation is kept at its first time; an
    unknown token revokes to None."""
    day1, day2, later = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2027-01-01T00:00:00Z"
    await gstore.add_zone_token("t2", "zone-b", "key-1", day2, later)
    await gstore.add_zone_token("t1", "zone-a", "key-1", day1, later)
    tokens = await gstore.zone_tokens()
    assert tokens == [
        {
            "id": "t1",
            "zone": "zone-a",
            "keyName": "key-1",
            "issuedAt": day1,
            "expiresAt": later,
            "revokedAt": "",
        },
        {
            "id": "t2",
            "zone": "zone-b",
            "keyName": "key-1",
            "issuedAt": day2,
            "expiresAt": later,
            "revokedAt": "",
        },
    ]
    revoked = await gstore.revoke_zone_token("t1", T1)
    assert revoked == {**tokens[0], "revokedAt": T1}
    again = await gstore.revoke_zone_token("t1", T2)
    assert again is not None and again["revokedAt"] == T1
    assert await gstore.revoke_zone_token("unknown", T1) is None
    assert [t["revokedAt"] for t in await gstore.zone_tokens()] == [T1, ""]


async def test_zone_statuses_are_saved_and_updated(gstore: GlobalStore) -> None:
    """Saving statuses adds or replaces the given zones' and keeps the others."""
    assert await gstore.zone_statuses() == {}
    await gstore.save_zone_statuses({"b": '{"n": 1}', "a": "{}"})
    await gstore.save_zone_statuses({"b": '{"n": 2}'})
    assert await gstore.zone_statuses() == {"a": "{}", "b": '{"n": 2}'}


async def test_zone_events_are_kept_per_zone_and_kind_and_bounded(gstore: GlobalStore) -> None:
    """Events come back oldest first; each (zone, kind) keeps only its newest ``keep``, so
    one series filling up never pushes out another's; ``since`` and ``limit`` narrow a read."""
    assert await gstore.zone_events("a", "event") == []
    await gstore.add_zone_events([], keep=3)
    first = [ZoneEvent("a", "event", 10.0 + i, f'{{"i": {i}}}') for i in range(5)]
    await gstore.add_zone_events([*first, ZoneEvent("b", "event", 1.0, "{}")], keep=3)
    await gstore.add_zone_events([ZoneEvent("a", "lag", 20.0, '{"r": 1}')], keep=3)
    assert [e.data for e in await gstore.zone_events("a", "event")] == [
        '{"i": 2}',
        '{"i": 3}',
        '{"i": 4}',
    ]
    assert await gstore.zone_events("a", "lag") == [ZoneEvent("a", "lag", 20.0, '{"r": 1}')]
    assert await gstore.zone_events("b", "event") == [ZoneEvent("b", "event", 1.0, "{}")]
    assert [e.time for e in await gstore.zone_events("a", "event", since=13.0)] == [13.0, 14.0]
    assert [e.time for e in await gstore.zone_events("a", "event", limit=1)] == [14.0]
    # Order is the order added, even when clocks step back.
    await gstore.add_zone_events([ZoneEvent("a", "event", 5.0, "{}")], keep=3)
    assert [e.time for e in await gstore.zone_events("a", "event")] == [13.0, 14.0, 5.0]


# --------------------------------------------------------------------------- anti-entropy


async def test_sync_leaves_are_equal_on_global_and_a_zone_in_step(stores: Stores) -> None:
    """Global's leaves at its head equal a zone's at the same applied revision: a leaf is
    the resource as sent, whatever each side stores; a zone-local row is never a leaf, the
    synced copy a conflict keeps aside is one."""
    g = stores.global_store()
    z = stores.zone_store()
    await g.put(mk(MESH), T0)
    await g.put(mk(S1, b"one"), T0)
    await g.put(mk(G1, b"global"), T0)
    await z.put(mk(G1, b"local"), T0)  # a conflict: global's copy is kept aside
    await z.put(mk(G2, b"local-only"), T0)
    snap = await g.snapshot()
    changes = [
        Incoming(c.revision, c.key, resource_from_pb(pb.Change.FromString(c.change).put))
        for c in snap.changes
    ]
    await apply(z, dbatch(changes, snap.revision, snapshot=True, from_revision=0), GSID, T1)
    gl, zl = await g.sync_leaves(), await z.sync_leaves()
    assert gl.revision == zl.revision == 3
    assert sorted(gl.leaves) == sorted(zl.leaves)
    assert {k for k, _ in zl.leaves} == {MESH, S1, G1}  # G2 is zone-local: no leaf
    assert all(len(d) == 16 for _, d in gl.leaves)
    await g.put(mk(S1, b"two"), T0)
    changed = dict((await g.sync_leaves()).leaves)
    assert changed[S1] != dict(gl.leaves)[S1] and changed[MESH] == dict(gl.leaves)[MESH]


async def test_leaves_since_a_revision_name_each_key_written_with_its_leaf_now(
    stores: Stores,
) -> None:
    """What global's held tree is brought forward by: each key written after the revision,
    once, with its leaf now (None once deleted); None past the bound or the log's reach."""
    g = stores.global_store(log_size=5)
    await g.put(mk(MESH), T0)
    await g.put(mk(S1, b"one"), T0)
    start = await g.head()
    await g.put(mk(S1, b"two"), T0)
    await g.put(mk(S1, b"three"), T0)
    await g.put(mk(G1, b"g"), T0)
    await g.put(mk(G2, b"g"), T0)
    await g.delete(G2)
    since = await g.sync_leaves_since(start, 10)
    assert since is not None and since.revision == await g.head()
    now = dict((await g.sync_leaves()).leaves)
    assert sorted(since.leaves, key=lambda kv: str(kv[0])) == [
        (G1, now[G1]),
        (G2, None),
        (S1, now[S1]),
    ]
    assert await g.sync_leaves_since(start, 4) is None
    assert await g.sync_leaves_since(await g.head(), 0) == replace(since, leaves=[])
    for i in range(6):
        await g.put(mk(G1, b"%d" % i), T0)
    assert await g.sync_leaves_since(start, 100) is None  # the log no longer reaches it


async def test_a_repair_batch_applies_and_records_no_revision(zstore: ZoneStore) -> None:
    """An anti-entropy repair starts and ends at the zone's revision: its puts and deletes
    apply like any batch's, and the recorded revision and chain stay as they were."""
    await apply(zstore, dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1, b"old"), 2)], 2), GSID, T0)
    before = await zstore.sync_state()
    repair = replace(
        dbatch([inc_put(mk(S1, b"right"), 2), inc_del(G1, 2)], 2, from_revision=2), repair=True
    )
    result = await zstore.apply_batch(repair, GSID, T1)
    assert result.applied_revision == 2
    row = await zstore.get(S1)
    assert row is not None and row.resource.data == b"right"
    assert await zstore.sync_state() == before


async def test_secrets_named_are_the_own_secrets_and_global_secrets_of_those_names(
    stores: Stores,
) -> None:
    """Every mesh, both kinds, only this control plane's own rows (a zone's synced copies are
    global's), only the names asked for."""
    g = stores.global_store()
    other_mesh = Key(Kind.SECRET, "other", "s1")
    await g.put(mk(MESH), T0)
    await g.put(mk(Key(Kind.MESH, "", "other")), T0)
    for key in (S1, S2, other_mesh, Key(Kind.GLOBAL_SECRET, "", "s1")):
        await g.put(mk(key, b"v"), T0)
    assert sorted(await g.secrets_named({"s1", "absent"}), key=str) == sorted(
        [S1, other_mesh, Key(Kind.GLOBAL_SECRET, "", "s1")], key=str
    )
    assert await g.secrets_named(set()) == []
    z = stores.zone_store()
    await apply(z, dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1, b"synced"), 2)], 2), GSID, T0)
    assert await z.secrets_named({"s1"}) == []  # global's copy is not the zone's own
    await z.put(mk(S2, b"local"), T0)
    assert await z.secrets_named({"s1", "s2"}) == [S2]
