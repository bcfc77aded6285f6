"""Unit tests for kds.store.sqlite's engines, global and zone roles, on a temp file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kds._pb import sync_pb2 as pb
from kds.errors import Conflict, NotFound, ProtocolError, ReadOnlySynced, StoreError
from kds.model import Key, Kind, Resource
from kds.protocol.applier import DecodedBatch, Incoming
from kds.store import ORIGIN_GLOBAL, ORIGIN_ZONE
from kds.store.sqlite import GlobalEngine, ZoneEngine
from kds.store.sqlite._db import get_meta
from kds.wire import key_from_pb, resource_from_pb

T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-01T00:00:01Z"
T2 = "2024-01-01T00:00:02Z"

MESH = Key(Kind.MESH, "", "default")
S1 = Key(Kind.SECRET, "default", "s1")
S2 = Key(Kind.SECRET, "default", "s2")
G1 = Key(Kind.GLOBAL_SECRET, "", "g1")
G2 = Key(Kind.GLOBAL_SECRET, "", "g2")


def mk(key: Key, data: bytes = b"v", **kw: object) -> Resource:
    return Resource(
        key.kind, key.name, mesh=key.mesh, data=b"" if key.kind is Kind.MESH else data, **kw
    )  # type: ignore[arg-type]


@pytest.fixture
def gstore(tmp_path: Path) -> Iterator[GlobalEngine]:
    s = GlobalEngine(tmp_path / "global.db")
    yield s
    s.close()


class ZoneStore(ZoneEngine):
    """A zone store whose batches built with from_revision=HERE start where the zone is."""

    def apply_batch(self, batch: DecodedBatch, global_store_id: str, now: str) -> Any:
        if batch.from_revision == HERE:
            batch = replace(batch, from_revision=self.sync_state().applied_revision)
        return super().apply_batch(batch, global_store_id, now)


def _head_and_log(store: ZoneEngine) -> tuple[int, list[Any]]:
    """The head revision and change log a zone's file holds (a zone engine serves neither)."""
    conn = store.db.conn()
    return int(get_meta(conn, "head")), conn.execute("SELECT * FROM changelog").fetchall()


@pytest.fixture
def zstore(tmp_path: Path) -> Iterator[ZoneEngine]:
    s = ZoneStore(tmp_path / "zone.db")
    yield s
    s.close()


# --------------------------------------------------------------------------- global role


def test_global_put_get_list_delete(gstore: GlobalEngine) -> None:
    """A global store puts, gets, lists and deletes resources of every kind."""
    gstore.put(mk(MESH), T0)
    gstore.put(mk(S1, b"one"), T0)
    gstore.put(mk(S2, b"two"), T0)
    gstore.put(mk(G1, b"g"), T0)
    row = gstore.get(S1)
    assert row is not None
    assert row.origin == ORIGIN_GLOBAL and not row.shadows_synced
    assert row.resource.data == b"one"
    assert [r.resource.key for r in gstore.list_rows(Kind.SECRET)] == [S1, S2]
    assert [r.resource.key for r in gstore.list_rows(Kind.SECRET, "default")] == [S1, S2]
    assert gstore.list_rows(Kind.SECRET, "other") == []
    assert [r.resource.key for r in gstore.list_rows(Kind.MESH)] == [MESH]
    assert [r.resource.key for r in gstore.list_rows(Kind.GLOBAL_SECRET)] == [G1]
    res = gstore.delete(S1)
    assert res.changed and res.resource is None
    assert gstore.get(S1) is None
    assert [r.resource.key for r in gstore.list_rows(Kind.SECRET)] == [S2]


def test_global_get_missing_is_none(gstore: GlobalEngine) -> None:
    """get() of an absent key returns None."""
    assert gstore.get(G1) is None


def test_global_delete_missing_not_found(gstore: GlobalEngine) -> None:
    """Deleting an absent key raises NotFound and writes nothing."""
    with pytest.raises(NotFound):
        gstore.delete(G1)
    assert gstore.head() == 0


def test_revisions_increase_by_one_per_changed_write(gstore: GlobalEngine) -> None:
    """Each changed write (put or delete) gets the next revision; version == revision."""
    assert gstore.head() == 0
    r1 = gstore.put(mk(MESH), T0)
    r2 = gstore.put(mk(G1, b"a"), T0)
    r3 = gstore.put(mk(G1, b"b"), T1)
    r4 = gstore.delete(G1)
    revs = [r.record.revision for r in (r1, r2, r3, r4) if r.record]
    assert revs == [1, 2, 3, 4]
    assert gstore.head() == 4
    assert r1.resource is not None and r1.resource.version == 1
    assert r3.resource is not None and r3.resource.version == 3
    row = gstore.get(MESH)
    assert row is not None and row.resource.version == 1


def test_unchanged_put_writes_nothing(gstore: GlobalEngine) -> None:
    """A put with identical content returns changed=False, no record, and keeps the head."""
    gstore.put(mk(G1, b"a", labels={"x": "y"}), T0)
    res = gstore.put(mk(G1, b"a", labels={"x": "y"}), T1)
    assert not res.changed and res.record is None
    assert res.resource is not None
    assert res.resource.modification_time == T0 and res.resource.version == 1
    assert gstore.head() == 1
    assert len(gstore.changes_after(0, 100)) == 1


def test_label_change_is_a_change(gstore: GlobalEngine) -> None:
    """Changing only labels is a changed write."""
    gstore.put(mk(G1, b"a"), T0)
    assert gstore.put(mk(G1, b"a", labels={"x": "y"}), T1).changed
    assert gstore.head() == 2


def test_update_keeps_creation_time(gstore: GlobalEngine) -> None:
    """An update keeps creation_time and sets modification_time to now."""
    gstore.put(mk(G1, b"a"), T0)
    res = gstore.put(mk(G1, b"b"), T2)
    assert res.resource is not None
    assert res.resource.creation_time == T0
    assert res.resource.modification_time == T2
    row = gstore.get(G1)
    assert row is not None
    assert (row.resource.creation_time, row.resource.modification_time) == (T0, T2)


def test_recreate_after_delete_gets_new_creation_time(gstore: GlobalEngine) -> None:
    """A resource deleted and created again has a fresh creation_time."""
    gstore.put(mk(G1), T0)
    gstore.delete(G1)
    res = gstore.put(mk(G1), T2)
    assert res.resource is not None and res.resource.creation_time == T2


def test_put_ignores_caller_metadata(gstore: GlobalEngine) -> None:
    """Times and version given by the caller are replaced by the store's own."""
    res = gstore.put(mk(G1, creation_time="1999", modification_time="1999", version=99), T0)
    assert res.resource is not None
    assert (res.resource.creation_time, res.resource.version) == (T0, 1)


def test_delete_mesh_with_secrets_conflict(gstore: GlobalEngine) -> None:
    """Deleting a Mesh that still holds Secrets raises Conflict; after they go it succeeds."""
    gstore.put(mk(MESH), T0)
    gstore.put(mk(S1), T0)
    with pytest.raises(Conflict) as e:
        gstore.delete(MESH)
    assert not isinstance(e.value, ReadOnlySynced)
    assert gstore.get(MESH) is not None and gstore.head() == 2
    gstore.delete(S1)
    gstore.delete(MESH)
    assert gstore.get(MESH) is None


def test_secret_in_missing_mesh_not_found(gstore: GlobalEngine) -> None:
    """A Secret in a Mesh that does not exist raises NotFound and writes nothing."""
    with pytest.raises(NotFound):
        gstore.put(mk(S1), T0)
    assert gstore.head() == 0 and gstore.get(S1) is None


def test_global_secret_needs_no_mesh(gstore: GlobalEngine) -> None:
    """A GlobalSecret is stored without any Mesh."""
    assert gstore.put(mk(G1), T0).changed


def test_write_record_matches_changelog(gstore: GlobalEngine) -> None:
    """The record a write returns is what changes_after returns for that revision."""
    w = gstore.put(mk(G1, b"secret"), T0)
    (rec,) = gstore.changes_after(0, 1)
    assert w.record == rec
    assert rec.key == G1 and not rec.deleted


def test_change_bytes_decode(gstore: GlobalEngine) -> None:
    """Change bytes decode to kds.v1.Change: puts carry the stored resource, deletes the key."""
    gstore.put(mk(MESH), T0)
    put = gstore.put(mk(S1, b"\x00secret", labels={"a": "b"}), T1)
    gstore.delete(S1)
    recs = gstore.changes_after(0, 10)
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


def test_changes_after_range(gstore: GlobalEngine) -> None:
    """changes_after(a, b) returns revisions a < r <= b in order."""
    for i in range(1, 8):
        gstore.put(mk(G1, bytes([i])), T0)
    assert [r.revision for r in gstore.changes_after(2, 5)] == [3, 4, 5]
    assert [r.revision for r in gstore.changes_after(0, 100)] == list(range(1, 8))
    assert gstore.changes_after(7, 7) == []
    assert gstore.changes_after(5, 3) == []


def test_changelog_bounded_and_floor_advances(tmp_path: Path) -> None:
    """The change log keeps log_size entries; log_floor rises so every change after it is kept."""
    s = GlobalEngine(tmp_path / "g.db", log_size=3)
    try:
        assert s.log_floor() == 0
        for i in range(1, 4):
            s.put(mk(G1, bytes([i])), T0)
        assert s.log_floor() == 0
        assert [r.revision for r in s.changes_after(0, 100)] == [1, 2, 3]
        for i in range(4, 11):
            s.put(mk(G1, bytes([i])), T0)
            assert s.log_floor() == i - 3
            assert [r.revision for r in s.changes_after(0, 100)] == [i - 2, i - 1, i]
            # a zone at log_floor can resume: every change after it is there
            floor = s.log_floor()
            assert [r.revision for r in s.changes_after(floor, s.head())] == list(
                range(floor + 1, s.head() + 1)
            )
        assert s.head() == 10
    finally:
        s.close()


def test_unchanged_put_does_not_advance_floor(tmp_path: Path) -> None:
    """Unchanged puts neither use revisions nor trim the log."""
    s = GlobalEngine(tmp_path / "g.db", log_size=2)
    try:
        s.put(mk(G1), T0)
        for _ in range(5):
            s.put(mk(G1), T1)
        assert (s.head(), s.log_floor()) == (1, 0)
    finally:
        s.close()


def test_snapshot(gstore: GlobalEngine) -> None:
    """snapshot() returns every resource once, Meshes first, at the head revision."""
    gstore.put(mk(G1), T0)  # 1
    gstore.put(mk(MESH), T0)  # 2
    gstore.put(mk(S1), T0)  # 3
    gstore.put(mk(Key(Kind.MESH, "", "aaa")), T0)  # 4
    gstore.put(mk(G2), T0)  # 5
    gstore.delete(G2)  # 6
    gstore.put(mk(G1, b"new"), T0)  # 7
    snap = gstore.snapshot()
    assert snap.revision == 7 == gstore.head()
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
        row = gstore.get(c.key)
        assert row is not None and row.resource == r
    g1 = next(c for c in snap.changes if c.key == G1)
    assert g1.revision == 7


def test_snapshot_empty(gstore: GlobalEngine) -> None:
    """An empty global store snapshots as no changes at revision 0."""
    snap = gstore.snapshot()
    assert (snap.revision, snap.changes) == (0, [])


def test_snapshot_survives_log_trim(tmp_path: Path) -> None:
    """A snapshot carries resources whose change-log entries were trimmed long ago."""
    s = GlobalEngine(tmp_path / "g.db", log_size=1)
    try:
        s.put(mk(MESH), T0)
        s.put(mk(S1), T0)
        s.put(mk(G1), T0)
        snap = s.snapshot()
        assert [c.key for c in snap.changes] == [MESH, S1, G1]
    finally:
        s.close()


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    """Closing and reopening a store keeps resources, head, log, floor and store_id."""
    path = tmp_path / "g.db"
    s = GlobalEngine(path, log_size=5)
    s.put(mk(MESH), T0)
    s.put(mk(S1, b"persist"), T1)
    for i in range(6):
        s.put(mk(G1, bytes([i + 1])), T2)
    before = (s.store_id, s.head(), s.log_floor(), s.changes_after(0, 100), s.snapshot())
    s.close()
    s2 = GlobalEngine(path, log_size=5)
    try:
        after = (s2.store_id, s2.head(), s2.log_floor(), s2.changes_after(0, 100), s2.snapshot())
        assert after == before
        row = s2.get(S1)
        assert row is not None and row.resource.data == b"persist"
        assert row.resource.creation_time == T1
        assert s2.put(mk(G2), T2).record.revision == before[1] + 1  # type: ignore[union-attr]
    finally:
        s2.close()


def test_store_ids_differ(tmp_path: Path) -> None:
    """Two fresh stores get different store ids."""
    a = GlobalEngine(tmp_path / "a.db")
    b = GlobalEngine(tmp_path / "b.db")
    try:
        assert a.store_id and a.store_id != b.store_id
    finally:
        a.close()
        b.close()


def test_global_store_opened_as_zone_fails(tmp_path: Path) -> None:
    """Opening a global store as a zone (or the reverse) raises StoreError."""
    GlobalEngine(tmp_path / "g.db").close()
    with pytest.raises(StoreError):
        ZoneEngine(tmp_path / "g.db")
    ZoneEngine(tmp_path / "z.db").close()
    with pytest.raises(StoreError):
        GlobalEngine(tmp_path / "z.db")


def test_file_mode_0600(tmp_path: Path) -> None:
    """The store file and its WAL side files are readable by the owner only."""
    path = tmp_path / "g.db"
    s = GlobalEngine(path)
    try:
        s.put(mk(G1, b"secret"), T0)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if p.exists():
                assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    finally:
        s.close()


def test_global_counts(gstore: GlobalEngine) -> None:
    """counts() on global reports every kind, all with origin global."""
    gstore.put(mk(MESH), T0)
    gstore.put(mk(S1), T0)
    gstore.put(mk(S2), T0)
    assert gstore.counts() == {
        "Mesh": {"global": 1, "zone": 0},
        "Secret": {"global": 2, "zone": 0},
        "GlobalSecret": {"global": 0, "zone": 0},
    }


# --------------------------------------------------------------------------- zone role


def inc_put(r: Resource, rev: int = 1) -> Incoming:
    return Incoming(rev, r.key, r.with_meta(version=rev, creation_time=T0, modification_time=T0))


def inc_del(key: Key, rev: int = 1) -> Incoming:
    return Incoming(rev, key)


def dbatch(
    changes: Iterable[Incoming],
    revision: int,
    *,
    snapshot: bool = False,
    final: bool = True,
    from_revision: int = -1,  # HERE: wherever the zone is
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


GSID = "global-store-a"
HERE = -1


def test_zone_put_creates_zone_rows(zstore: ZoneEngine) -> None:
    """API writes on a zone create origin zone rows with a local version."""
    w = zstore.put(mk(MESH), T0)
    assert w.changed and w.record is None
    zstore.put(mk(S1, b"a"), T0)
    w2 = zstore.put(mk(S1, b"b"), T1)
    assert w2.resource is not None and w2.resource.version == 2
    assert w2.resource.creation_time == T0
    row = zstore.get(S1)
    assert row is not None and row.origin == ORIGIN_ZONE and not row.shadows_synced
    assert zstore.counts()["Secret"] == {"global": 0, "zone": 1}
    assert _head_and_log(zstore) == (0, [])


def test_zone_put_secret_without_mesh_not_found(zstore: ZoneEngine) -> None:
    """A zone-local Secret needs its Mesh on the zone."""
    with pytest.raises(NotFound):
        zstore.put(mk(S1), T0)


def test_zone_unchanged_put(zstore: ZoneEngine) -> None:
    """An identical zone put is unchanged and keeps the version."""
    zstore.put(mk(G1), T0)
    w = zstore.put(mk(G1), T1)
    assert not w.changed and w.resource is not None and w.resource.version == 1


def test_apply_batch_writes_synced_rows(zstore: ZoneEngine) -> None:
    """apply_batch stores synced copies (origin global) as sent and records the revision."""
    r = zstore.apply_batch(dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1, b"x"), 2)], 2), GSID, T1)
    assert r.applied_revision == 2 and r.rejected == []
    row = zstore.get(S1)
    assert row is not None and row.origin == ORIGIN_GLOBAL
    assert row.resource.data == b"x" and row.resource.version == 2
    assert row.resource.creation_time == T0
    st = zstore.sync_state()
    assert (st.global_store_id, st.applied_revision, st.applied_at) == (GSID, 2, T1)


def test_sync_state_initially_empty(zstore: ZoneEngine) -> None:
    """A zone that never synced has no store id and revision 0."""
    st = zstore.sync_state()
    assert (st.global_store_id, st.applied_revision) == ("", 0)


def test_non_final_part_records_no_revision(zstore: ZoneEngine) -> None:
    """A non-final part is applied but the recorded revision only moves on the final part."""
    zstore.apply_batch(dbatch([inc_put(mk(G1), 3)], 3), GSID, T0)
    r = zstore.apply_batch(dbatch([inc_put(mk(G2), 5)], 6, final=False), "other-store", T1)
    assert r.applied_revision == 3
    assert zstore.get(G2) is not None
    st = zstore.sync_state()
    assert (st.global_store_id, st.applied_revision, st.applied_at) == (GSID, 3, T0)
    r = zstore.apply_batch(dbatch([], 6), "other-store", T2)
    assert r.applied_revision == 6
    assert zstore.sync_state().global_store_id == "other-store"


def test_apply_batch_deletes(zstore: ZoneEngine) -> None:
    """A synced delete removes the synced copy; deleting an absent key is fine."""
    zstore.apply_batch(dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    r = zstore.apply_batch(dbatch([inc_del(G1, 2), inc_del(G2, 2)], 2), GSID, T0)
    assert r.rejected == [] and r.applied_revision == 2
    assert zstore.get(G1) is None


def test_apply_batch_rejection_still_advances(zstore: ZoneEngine) -> None:
    """A rejected change is reported and the rest applied; the revision advances."""
    r = zstore.apply_batch(dbatch([inc_put(mk(S1), 1), inc_put(mk(G1), 2)], 2), GSID, T0)
    assert [k for k, _ in r.rejected] == [S1]
    assert r.applied_revision == 2
    assert zstore.get(S1) is None and zstore.get(G1) is not None


def test_apply_put_then_delete_same_key(zstore: ZoneEngine) -> None:
    """An uncoalesced range that puts then deletes a key leaves it absent."""
    zstore.apply_batch(dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    zstore.apply_batch(dbatch([inc_put(mk(G1, b"new"), 2), inc_del(G1, 3)], 3), GSID, T0)
    assert zstore.get(G1) is None
    zstore.apply_batch(dbatch([inc_put(mk(G2), 4), inc_del(G2, 5)], 5), GSID, T0)
    assert zstore.get(G2) is None


def test_apply_batch_is_atomic(zstore: ZoneEngine) -> None:
    """A batch that fails while applying leaves no part of it behind, nor a new revision."""
    zstore.apply_batch(dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    bad = mk(MESH).with_meta(spec={"mtls": {"x": object()}})  # not JSON: fails on write
    with pytest.raises(TypeError):
        zstore.apply_batch(dbatch([inc_put(mk(G2), 2), inc_put(bad, 3)], 3), GSID, T1)
    assert zstore.get(G2) is None
    assert zstore.sync_state().applied_revision == 1
    # the store is still usable afterwards
    assert zstore.apply_batch(dbatch([inc_put(mk(G2), 2)], 2), GSID, T1).applied_revision == 2


def test_zone_conflict(zstore: ZoneEngine) -> None:
    """A synced put over a zone-local key is a conflict: the local row is served."""
    zstore.put(mk(G1, b"local"), T0)
    r = zstore.apply_batch(dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    assert r.new_conflicts == [G1] and r.rejected == []
    row = zstore.get(G1)
    assert row is not None
    assert row.origin == ORIGIN_ZONE and row.shadows_synced
    assert row.resource.data == b"local"
    assert zstore.conflicts() == [G1]
    (listed,) = zstore.list_rows(Kind.GLOBAL_SECRET)
    assert listed.origin == ORIGIN_ZONE and listed.shadows_synced
    assert listed.resource.data == b"local"
    assert zstore.counts()["GlobalSecret"] == {"global": 1, "zone": 1}
    # the same put again is not a new conflict
    r2 = zstore.apply_batch(dbatch([inc_put(mk(G1, b"global2"), 2)], 2), GSID, T1)
    assert r2.new_conflicts == []


def test_zone_local_row_updatable_during_conflict(zstore: ZoneEngine) -> None:
    """The zone may still update its own row while global's copy is kept aside."""
    zstore.put(mk(G1, b"local"), T0)
    zstore.apply_batch(dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    w = zstore.put(mk(G1, b"local2"), T2)
    assert w.changed
    row = zstore.get(G1)
    assert row is not None and row.resource.data == b"local2" and row.shadows_synced


def test_deleting_local_row_reveals_synced_copy(zstore: ZoneEngine) -> None:
    """Deleting the zone-local row makes global's copy visible at once."""
    zstore.put(mk(G1, b"local"), T0)
    zstore.apply_batch(dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    zstore.delete(G1)
    row = zstore.get(G1)
    assert row is not None
    assert row.origin == ORIGIN_GLOBAL and not row.shadows_synced
    assert row.resource.data == b"global"
    assert zstore.conflicts() == []


def test_global_delete_resolves_conflict(zstore: ZoneEngine) -> None:
    """Global deleting its copy resolves the conflict and keeps the local row."""
    zstore.put(mk(G1, b"local"), T0)
    zstore.apply_batch(dbatch([inc_put(mk(G1, b"global"), 1)], 1), GSID, T1)
    r = zstore.apply_batch(dbatch([inc_del(G1, 2)], 2), GSID, T1)
    assert r.resolved_conflicts == [G1]
    row = zstore.get(G1)
    assert row is not None and row.origin == ORIGIN_ZONE and not row.shadows_synced
    assert zstore.conflicts() == []


def test_synced_only_key_read_only(zstore: ZoneEngine) -> None:
    """A zone cannot put or delete a key it holds only as a synced copy."""
    zstore.apply_batch(dbatch([inc_put(mk(G1, b"g"), 1)], 1), GSID, T0)
    with pytest.raises(ReadOnlySynced):
        zstore.put(mk(G1, b"mine"), T1)
    with pytest.raises(ReadOnlySynced):
        zstore.delete(G1)
    row = zstore.get(G1)
    assert row is not None and row.resource.data == b"g" and row.origin == ORIGIN_GLOBAL


def test_zone_delete_missing_not_found(zstore: ZoneEngine) -> None:
    """Deleting a key the zone does not hold at all is NotFound."""
    with pytest.raises(NotFound):
        zstore.delete(G1)


def test_zone_secret_in_synced_mesh(zstore: ZoneEngine) -> None:
    """A zone-local Secret may live in a synced Mesh; global then cannot delete that Mesh."""
    zstore.apply_batch(dbatch([inc_put(mk(MESH), 1)], 1), GSID, T0)
    zstore.put(mk(S1), T0)
    r = zstore.apply_batch(dbatch([inc_del(MESH, 2)], 2), GSID, T0)
    assert [k for k, _ in r.rejected] == [MESH]
    assert r.applied_revision == 2
    assert zstore.get(MESH) is not None


def test_zone_delete_local_mesh_with_secrets(zstore: ZoneEngine) -> None:
    """A zone-local Mesh holding Secrets cannot be deleted, unless global's copy stays."""
    zstore.put(mk(MESH), T0)
    zstore.put(mk(S1), T0)
    with pytest.raises(Conflict):
        zstore.delete(MESH)
    zstore.apply_batch(dbatch([inc_put(mk(MESH), 1)], 1), GSID, T0)
    zstore.delete(MESH)
    row = zstore.get(MESH)
    assert row is not None and row.origin == ORIGIN_GLOBAL


def test_snapshot_removes_stale_synced_never_zone_rows(zstore: ZoneEngine) -> None:
    """A final snapshot part deletes synced rows it did not carry and never zone-local rows."""
    zstore.apply_batch(
        dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2), inc_put(mk(G1), 3)], 3), GSID, T0
    )
    zstore.put(mk(G2, b"zone"), T0)
    zstore.put(mk(S2, b"zone"), T0)
    zstore.put(mk(Key(Kind.GLOBAL_SECRET, "", "both"), b"zone"), T0)
    zstore.apply_batch(
        dbatch([inc_put(mk(Key(Kind.GLOBAL_SECRET, "", "both"), b"g"), 4)], 4), GSID, T0
    )
    # snapshot at 10 carries only the Mesh (in part 1) and G1 (in the final part)
    r1 = zstore.apply_batch(
        dbatch([inc_put(mk(MESH), 1)], 10, snapshot=True, final=False), GSID, T1
    )
    assert r1.removed_stale == 0 and zstore.get(S1) is not None
    r2 = zstore.apply_batch(dbatch([inc_put(mk(G1), 3)], 10, snapshot=True), GSID, T1)
    assert r2.applied_revision == 10
    assert r2.removed_stale == 2  # S1 and the synced copy of "both"
    assert r2.resolved_conflicts == [Key(Kind.GLOBAL_SECRET, "", "both")]
    assert zstore.get(S1) is None
    assert zstore.get(MESH) is not None and zstore.get(G1) is not None
    for k in (G2, S2, Key(Kind.GLOBAL_SECRET, "", "both")):
        row = zstore.get(k)
        assert row is not None and row.origin == ORIGIN_ZONE and not row.shadows_synced
    assert zstore.counts() == {
        "Mesh": {"global": 1, "zone": 0},
        "Secret": {"global": 0, "zone": 1},
        "GlobalSecret": {"global": 1, "zone": 2},
    }


def test_snapshot_stale_mesh_and_its_secrets_removed(zstore: ZoneEngine) -> None:
    """A snapshot that no longer carries a Mesh removes its synced Secrets, then the Mesh."""
    zstore.apply_batch(
        dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2), inc_put(mk(S2), 3)], 3), GSID, T0
    )
    r = zstore.apply_batch(dbatch([inc_put(mk(G1), 4)], 4, snapshot=True), GSID, T1)
    assert r.rejected == [] and r.removed_stale == 3
    assert zstore.list_rows(Kind.MESH) == [] and zstore.list_rows(Kind.SECRET) == []


def test_snapshot_from_empty_new_global_removes_everything(zstore: ZoneEngine) -> None:
    """A snapshot at revision 0 (a new, empty global store) removes every synced copy."""
    zstore.apply_batch(dbatch([inc_put(mk(G1), 1), inc_put(mk(G2), 2)], 2), GSID, T0)
    r = zstore.apply_batch(dbatch([], 0, snapshot=True), "new-store", T1)
    assert r.removed_stale == 2
    assert zstore.list_rows(Kind.GLOBAL_SECRET) == []
    assert zstore.sync_state() == type(zstore.sync_state())("new-store", 0, T1)


def test_snapshot_from_new_store_at_same_revision_removes_old(zstore: ZoneEngine) -> None:
    """A snapshot from another global store at the same revision still removes stale copies."""
    zstore.apply_batch(dbatch([inc_put(mk(G1), 5)], 5, snapshot=True), GSID, T0)
    r = zstore.apply_batch(dbatch([inc_put(mk(G2), 5)], 5, snapshot=True), "new-store", T1)
    assert r.removed_stale == 1
    assert zstore.get(G1) is None and zstore.get(G2) is not None


def test_repeated_snapshot_parts_keep_earlier_parts(zstore: ZoneEngine) -> None:
    """A snapshot interrupted and sent again keeps what its earlier parts wrote."""
    part1 = dbatch([inc_put(mk(G1), 1)], 7, snapshot=True, final=False)
    zstore.apply_batch(part1, GSID, T0)
    zstore.apply_batch(part1, GSID, T0)  # resent after a cut
    r = zstore.apply_batch(dbatch([inc_put(mk(G2), 2)], 7, snapshot=True), GSID, T0)
    assert r.removed_stale == 0
    assert zstore.get(G1) is not None and zstore.get(G2) is not None


def test_zone_reopen_keeps_sync_state(tmp_path: Path) -> None:
    """A zone store reopened keeps local rows, synced rows, conflicts and sync state."""
    path = tmp_path / "z.db"
    z = ZoneStore(path)
    z.put(mk(G1, b"local"), T0)
    z.apply_batch(dbatch([inc_put(mk(G1, b"g"), 1), inc_put(mk(G2), 2)], 2), GSID, T1)
    sid = z.store_id
    z.close()
    z2 = ZoneEngine(path)
    try:
        assert z2.store_id == sid
        assert z2.sync_state().applied_revision == 2
        assert z2.sync_state().global_store_id == GSID
        assert z2.conflicts() == [G1]
        row = z2.get(G2)
        assert row is not None and row.origin == ORIGIN_GLOBAL
    finally:
        z2.close()


def test_zone_counts_and_list_mixed(zstore: ZoneEngine) -> None:
    """counts() splits by kind and origin; list() shows one row per key, local first."""
    zstore.apply_batch(
        dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2), inc_put(mk(G1), 3)], 3), GSID, T0
    )
    zstore.put(mk(S2), T0)
    zstore.put(mk(G2, b"local"), T0)
    assert zstore.counts() == {
        "Mesh": {"global": 1, "zone": 0},
        "Secret": {"global": 1, "zone": 1},
        "GlobalSecret": {"global": 1, "zone": 1},
    }
    rows = zstore.list_rows(Kind.SECRET, "default")
    assert [(r.resource.key, r.origin) for r in rows] == [
        (S1, ORIGIN_GLOBAL),
        (S2, ORIGIN_ZONE),
    ]


def test_zone_mesh_conflict_listed(zstore: ZoneEngine) -> None:
    """A Mesh held both locally and synced is listed by conflicts() and served locally."""
    zstore.put(mk(MESH, labels={"who": "zone"}), T0)
    r = zstore.apply_batch(dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2)], 2), GSID, T0)
    assert r.new_conflicts == [MESH] and r.rejected == []
    assert zstore.conflicts() == [MESH]
    row = zstore.get(MESH)
    assert row is not None and row.origin == ORIGIN_ZONE and row.shadows_synced
    assert dict(row.resource.labels) == {"who": "zone"}


def test_zone_writes_do_not_touch_global_meta(zstore: ZoneEngine) -> None:
    """Zone-local writes keep no change log and do not move the sync state."""
    zstore.put(mk(G1), T0)
    zstore.delete(G1)
    assert _head_and_log(zstore) == (0, [])
    assert zstore.sync_state().applied_revision == 0


def test_not_a_database_is_store_error(tmp_path: Path) -> None:
    """A file that is not a SQLite database, or a path that cannot be opened, is StoreError."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a sqlite database, just some text " * 20)
    with pytest.raises(StoreError):
        GlobalEngine(bad)
    with pytest.raises(StoreError):
        GlobalEngine(tmp_path / "missing-dir" / "x.db")


def test_zone_refuses_a_range_that_does_not_start_at_its_revision(zstore: ZoneEngine) -> None:
    """A batch (from, to] with from != the zone's revision raises ProtocolError, applies nothing."""
    zstore.apply_batch(dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    with pytest.raises(ProtocolError, match="at revision 1"):
        zstore.apply_batch(dbatch([inc_put(mk(G2), 3)], 3, from_revision=2), GSID, T1)
    assert zstore.get(G2) is None
    assert zstore.sync_state().applied_revision == 1


def test_history_chain_follows_every_change_and_the_log(tmp_path: Path) -> None:
    """Each change extends the chain by hashing its bytes; chain_at knows the head, every
    revision still in the log and the floor, and nothing older."""
    from kds.protocol.records import next_chain

    s = GlobalEngine(tmp_path / "g.db", log_size=3)
    try:
        chains = [b""]
        for i in range(6):
            rec = s.put(mk(G1, f"v{i}".encode()), T0).record
            assert rec is not None
            assert rec.chain == next_chain(chains[-1], rec.change)
            chains.append(rec.chain)
        assert s.head() == 6 and s.log_floor() == 3
        assert [s.chain_at(r) for r in range(7)] == [None, None, None, *chains[3:]]
        assert [r.chain for r in s.changes_after(3, 6)] == chains[4:]
        assert s.snapshot().chain == chains[6]
    finally:
        s.close()


def test_zone_records_the_chain_with_its_revision(zstore: ZoneEngine) -> None:
    """A final batch's chain is kept with the applied revision; a non-final part's is not."""
    zstore.apply_batch(replace(dbatch([inc_put(mk(G1), 1)], 1), chain=b"c1"), GSID, T0)
    assert zstore.sync_state().chain == b"c1"
    part = replace(dbatch([inc_put(mk(G2), 2)], 2, final=False), chain=b"ignored")
    zstore.apply_batch(part, GSID, T0)
    assert zstore.sync_state().chain == b"c1"


def test_page_counts_and_slices_the_effective_view_in_sql(zstore: ZoneEngine) -> None:
    """page() gives the total of the effective view (a shadowed synced copy counts once) and
    the requested slice in mesh/name order, with the shadowing flag."""
    mesh = mk(MESH)
    synced = [inc_put(mesh, 1)] + [
        inc_put(Resource(Kind.GLOBAL_SECRET, f"g{i}", data=b"s").with_meta(version=i + 2), i + 2)
        for i in range(4)
    ]
    zstore.put(Resource(Kind.GLOBAL_SECRET, "g1", data=b"mine"), T1)  # will shadow g1
    zstore.put(Resource(Kind.GLOBAL_SECRET, "local", data=b"l"), T1)
    zstore.apply_batch(dbatch(synced, 5), GSID, T0)
    total, rows = zstore.page(Kind.GLOBAL_SECRET)
    assert total == 5
    assert [(r.resource.name, r.origin, r.shadows_synced) for r in rows] == [
        ("g0", "global", False),
        ("g1", "zone", True),
        ("g2", "global", False),
        ("g3", "global", False),
        ("local", "zone", False),
    ]
    total, rows = zstore.page(Kind.GLOBAL_SECRET, None, offset=1, limit=2)
    assert total == 5 and [r.resource.name for r in rows] == ["g1", "g2"]


def _synchronous(store: GlobalEngine | ZoneEngine) -> int:
    return int(store.db.conn().execute("PRAGMA synchronous").fetchone()[0])


def test_apply_batch_skips_the_fsync_but_api_writes_keep_it(zstore: ZoneEngine) -> None:
    """A synced batch commits with synchronous=NORMAL (global resends what a power loss
    takes, and the applied revision rolls back with it); a zone-local write from the API
    commits with FULL, also right after a batch. Global commits everything with FULL."""
    seen: list[int] = []
    rows = zstore._rows

    def spy(*args: Any) -> Any:
        seen.append(_synchronous(zstore))
        return rows(*args)

    zstore._rows = spy  # type: ignore[method-assign]
    zstore.apply_batch(dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    zstore.put(mk(G2, b"local"), T0)
    assert seen == [1, 2]  # NORMAL, FULL


def test_global_commits_with_fsync(gstore: GlobalEngine) -> None:
    gstore.put(mk(G1), T0)
    assert _synchronous(gstore) == 2


def test_on_commit_gets_each_transactions_records_once(tmp_path: Path) -> None:
    """Global's commit hook is called once per transaction with its records in revision
    order, and not at all for a write that changed nothing."""
    calls: list[list[int]] = []
    gstore = GlobalEngine(
        tmp_path / "hooked.db",
        on_commit=lambda results: calls.append([r.record.revision for r in results if r.record]),
    )
    gstore.put_many([mk(MESH), mk(S1), mk(G1)], T0)
    gstore.put(mk(G1), T1)  # unchanged
    gstore.delete(G1)
    assert calls == [[1, 2, 3], [4]]
