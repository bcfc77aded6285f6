"""A damaged SQLite store file is noticed and repaired, never served silently: bytes flipped
in a zone's file, a store from before row digests, a store file gone or emptied, a full
disk. (What every backend does is in test_store_conformance.py.)"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pytest

from kds.errors import StoreDamaged, StoreError, StoreFull
from kds.model import Key, Kind
from kds.protocol.applier import DecodedBatch, Incoming
from kds.store.sqlite import GlobalEngine, ZoneEngine
from kds.store.sqlite._db import get_meta
from tests.unit.store_backends import GSID, MESH, T0, inc_put, mk

VALUE = b"damage-test-value-%04d-abcdefghijklmnop"


def batch(changes: Iterable[Incoming], revision: int, snapshot: bool = False) -> DecodedBatch:
    return DecodedBatch(
        seq=1,
        from_revision=0,
        revision=revision,
        snapshot=snapshot,
        final=True,
        head_revision=revision,
        changes=tuple(changes),
    )


def secrets(n: int) -> list[Incoming]:
    return [inc_put(mk(MESH), 1)] + [
        inc_put(mk(Key(Kind.SECRET, "default", f"s{i}"), VALUE % i), i + 2) for i in range(n)
    ]


def flip(path: Path, needle: bytes, at: int = 20) -> None:
    """Flip one byte inside ``needle`` where the file holds it."""
    raw = bytearray(path.read_bytes())
    i = raw.find(needle)
    assert i >= 0, needle
    raw[i + at] ^= 0x01
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_synced_rows_are_found_and_resynced(tmp_path: Path) -> None:
    """Flipped bytes in 20 synced values: the zone does not resume from its revision nor
    serve them; a snapshot from global rewrites them."""
    db = tmp_path / "zone.db"
    z = ZoneEngine(db)
    z.apply_batch(batch(secrets(30), 40), GSID, T0)
    z.put(mk(Key(Kind.SECRET, "default", "local"), b"local-value-0123456789-abcdefgh"), T0)
    assert z.sync_state().applied_revision == 40
    z.close()
    for i in range(20):
        flip(db, VALUE % i)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    z = ZoneEngine(db)
    assert sorted(d.key for d in z.damaged) == sorted(f"Secret default/s{i}" for i in range(20))
    state = z.sync_state()
    assert (state.global_store_id, state.applied_revision) == ("", 0)  # takes a snapshot
    for i in range(30):
        row = z.get(Key(Kind.SECRET, "default", f"s{i}"))
        assert (row is None) if i < 20 else (row is not None and row.resource.data == VALUE % i)
    local = z.get(Key(Kind.SECRET, "default", "local"))
    assert local is not None and local.resource.data.startswith(b"local-value")

    z.apply_batch(batch(secrets(30), 40, snapshot=True), GSID, T0)
    for i in range(30):
        row = z.get(Key(Kind.SECRET, "default", f"s{i}"))
        assert row is not None and row.resource.data == VALUE % i
    assert z.sync_state().applied_revision == 40
    z.close()
    assert ZoneEngine(db).damaged == []


def test_a_damaged_zone_local_row_is_reported_and_never_served(tmp_path: Path) -> None:
    db = tmp_path / "zone.db"
    z = ZoneEngine(db)
    z.apply_batch(batch(secrets(2), 10), GSID, T0)
    for i in range(3):
        z.put(mk(Key(Kind.SECRET, "default", f"l{i}"), VALUE % (100 + i)), T0)
    z.close()
    flip(db, VALUE % 101)

    z = ZoneEngine(db)
    assert [(d.key, d.origin) for d in z.damaged] == [("Secret default/l1", "zone")]
    assert z.sync_state().applied_revision == 10  # nothing synced was damaged: resumes
    with pytest.raises(StoreDamaged, match=r"Secret default/l1 \(zone-local\) is damaged"):
        z.get(Key(Kind.SECRET, "default", "l1"))
    total, rows = z.page(Kind.SECRET)
    assert total == 4 and sorted(r.resource.name for r in rows) == ["l0", "l2", "s0", "s1"]
    # Putting it again repairs it.
    z.put(mk(Key(Kind.SECRET, "default", "l1"), b"new"), T0)
    row = z.get(Key(Kind.SECRET, "default", "l1"))
    assert row is not None and row.resource.data == b"new"
    z.close()


def test_a_store_from_before_row_digests_gets_them(tmp_path: Path) -> None:
    db = tmp_path / "zone.db"
    z = ZoneEngine(db)
    z.apply_batch(batch(secrets(3), 5), GSID, T0)
    z.close()
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE resources DROP COLUMN digest")
    conn.execute("DELETE FROM meta WHERE key='row_digests'")
    conn.commit()
    conn.close()

    z = ZoneEngine(db)
    assert z.damaged == [] and z.sync_state().applied_revision == 5
    row = z.get(Key(Kind.SECRET, "default", "s2"))
    assert row is not None and row.resource.data == VALUE % 2
    assert get_meta(z.db.conn(), "row_digests") == "1"
    z.close()
    flip(db, VALUE % 1)
    z = ZoneEngine(db)
    assert [d.key for d in z.damaged] == ["Secret default/s1"]
    z.close()


@pytest.mark.parametrize("engine", [GlobalEngine, ZoneEngine])
@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_store_file_is_refused(
    tmp_path: Path, engine: type[GlobalEngine] | type[ZoneEngine], how: str
) -> None:
    db = tmp_path / "x.db"
    s = engine(db)
    store_id = s.store_id
    s.close()
    assert (tmp_path / "x.db.id").read_text().strip() == store_id
    if how == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"")
    with pytest.raises(StoreError, match=r"x\.db is (missing|empty).*x\.db\.id.*--new-store"):
        engine(db)
    s = engine(db, new_store=True)
    assert s.store_id != store_id
    s.close()
    assert (tmp_path / "x.db.id").read_text().strip() != store_id
    engine(db).close()  # the marker now holds the new store's id


def test_a_full_disk_raises_store_full(tmp_path: Path) -> None:
    z = ZoneEngine(tmp_path / "zone.db")
    z.apply_batch(batch(secrets(1), 3), GSID, T0)
    conn = z.db.conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StoreFull, match="the zone's disk is full"):
        z.put(mk(Key(Kind.SECRET, "default", "big"), os.urandom(200_000)), T0)
    conn.execute("PRAGMA max_page_count=1073741823")
    z.put(mk(Key(Kind.SECRET, "default", "small"), b"x"), T0)  # the store still works
    z.close()


@pytest.mark.parametrize("engine", [ZoneEngine, GlobalEngine])
def test_a_malformed_file_is_refused_with_the_fix(tmp_path: Path, engine: type) -> None:
    """Pages SQLite itself finds damaged ("database disk image is malformed") cannot be
    repaired row by row: the store refuses to open and says what to do, per role."""
    db = tmp_path / "store.db"
    e = engine(db)
    for i in range(200):
        e.put(mk(Key(Kind.GLOBAL_SECRET, "", f"g{i}"), VALUE % i), T0)
    e.close()
    raw = bytearray(db.read_bytes())
    page = 4096
    raw[page : 4 * page] = b"\xa5" * (3 * page)  # the b-tree pages after the first
    db.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="damaged beyond repair by row") as err:
        engine(db)
    if engine is ZoneEngine:
        assert "--new-store" in str(err.value) and "full snapshot from global" in str(err.value)
    else:
        assert "restore it from a backup" in str(err.value) and ".recover" in str(err.value)
