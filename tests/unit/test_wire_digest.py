"""Global's encoded Change (the ``wire`` column, sent to zones as it is by snapshots) is
covered by the row digest: damage to it is caught on read and in a snapshot, never sent;
stores whose digests predate that are upgraded without blessing a row damaged before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kds.errors import StoreDamaged
from kds.model import Key, Kind, Resource
from kds.store.sqlite import GlobalEngine
from kds.store.sqlite._db import get_meta
from kds.store.sqlite._digest import row_digest

T0 = "2026-11-30T00:00:00.000Z"
S1 = Key(Kind.SECRET, "default", "s1")


def _store(path: Path) -> None:
    g = GlobalEngine(path)
    g.put(Resource(Kind.MESH, "default"), T0)
    for i in range(3):
        g.put(Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"value-%d" % i), T0)
    g.close()


def _alter_wire(path: Path, name: str) -> None:
    """Change one byte of a row's encoded Change behind the store's back."""
    conn = sqlite3.connect(path)
    (wire,) = conn.execute("SELECT wire FROM resources WHERE name=?", (name,)).fetchone()
    bad = bytearray(wire)
    bad[-1] ^= 0x01
    conn.execute("UPDATE resources SET wire=? WHERE name=?", (bytes(bad), name))
    conn.commit()
    conn.close()


def test_damage_to_the_encoded_change_is_caught_and_never_sent(tmp_path: Path) -> None:
    db = tmp_path / "global.db"
    _store(db)
    _alter_wire(db, "s1")
    g = GlobalEngine(db)
    try:
        assert [d.key for d in g.damaged] == ["Secret default/s1"]
        with pytest.raises(StoreDamaged, match="Secret default/s1"):
            g.get(S1)
        with pytest.raises(StoreDamaged, match=r"Secret default/s1 .* is damaged"):
            g.snapshot()
    finally:
        g.close()


def test_digests_from_before_wire_are_upgraded_and_damage_stays_damage(tmp_path: Path) -> None:
    """A store whose digests covered the columns before wire (format 1) gets new ones at
    open, for every row whose old digest still matches; a row damaged before stays so."""
    db = tmp_path / "global.db"
    _store(db)
    conn = sqlite3.connect(db)
    cols = (
        "kind, mesh, name, origin, data, labels, spec, creation_time, modification_time, "
        "version, sealed"
    )
    for rowid, *values in conn.execute(f"SELECT rowid, {cols} FROM resources").fetchall():
        conn.execute("UPDATE resources SET digest=? WHERE rowid=?", (row_digest(values), rowid))
    conn.execute("UPDATE meta SET value='1' WHERE key='row_digests'")
    conn.execute("UPDATE resources SET data=X'00' WHERE name='s2'")  # damaged under format 1
    conn.commit()
    conn.close()
    g = GlobalEngine(db)
    try:
        assert get_meta(g.db.conn(), "row_digests") == "2"
        assert [d.key for d in g.damaged] == ["Secret default/s2"]
        row = g.get(S1)
        assert row is not None and row.resource.data == b"value-1"
    finally:
        g.close()
