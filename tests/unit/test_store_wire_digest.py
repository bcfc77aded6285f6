"""Global's ``wire`` column (the encoded change every zone is sent) is covered by the row
digest on both backends: a byte flipped in it while global is stopped is found at start,
reported by key (never the value), and never sent to a zone. Stores made before the digest
covered ``wire`` are migrated at open, in one transaction, re-digesting only rows whose old
digest still matched (damage found before the migration stays damaged)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from kds.errors import StoreDamaged, StoreError
from kds.model import Key, Kind
from kds.store import PgTarget
from kds.store.postgres import PgGlobalEngine
from kds.store.sqlite import GlobalEngine
from tests.pgserver import shared_server
from tests.unit.store_backends import MESH, T0, mk

VALUE = b"wire-digest-test-value-0123456789"
S1 = Key(Kind.SECRET, "default", "s1")
S2 = Key(Kind.SECRET, "default", "s2")


class Backend:
    """Opens one global store and runs SQL on it behind the engine's back."""

    def __init__(self, name: str, tmp: Path):
        self.name = name
        self.path = tmp / "global.db"
        self.target = PgTarget(shared_server().url, f"wd_{uuid.uuid4().hex[:12]}")

    def open(self) -> GlobalEngine | PgGlobalEngine:
        if self.name == "sqlite":
            return GlobalEngine(self.path)
        return PgGlobalEngine(self.target)

    def sql(self, query: str, *args: Any) -> list[Any]:
        """Run ``query`` (``?`` placeholders) and commit; its rows, if any."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.path)
            try:
                cur = conn.execute(query, args)
                rows = cur.fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        with psycopg.connect(self.target.url) as pg:
            pg.execute(f"SET search_path TO {self.target.schema}")
            cur = pg.execute(query.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []

    def flip_wire(self, name: str, at: int = 5) -> None:
        """Flip one byte of the stored ``wire`` of Secret default/<name>."""
        ((wire,),) = self.sql("SELECT wire FROM resources WHERE name=?", name)
        damaged = bytearray(wire)
        damaged[at] ^= 0x01
        self.sql("UPDATE resources SET wire=? WHERE name=?", bytes(damaged), name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield Backend(request.param, tmp_path)


def _fill(b: Backend) -> None:
    g = b.open()
    g.put(mk(MESH), T0)
    g.put(mk(S1, VALUE), T0)
    g.put(mk(S2, VALUE), T0)
    g.close()


def _damage_reports(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"].startswith("damaged row")]


def test_a_flipped_wire_byte_is_found_at_start_and_never_sent(backend: Backend) -> None:
    _fill(backend)
    backend.flip_wire("s1")
    with capture_logs() as logs:
        g = backend.open()
    try:
        assert [(d.key, d.origin) for d in g.damaged] == [("Secret default/s1", "global")]
        reports = _damage_reports(logs)
        assert [(e["key"], e["log_level"]) for e in reports] == [("Secret default/s1", "error")]
        assert all(VALUE.decode() not in repr(e) for e in logs)  # names the row, never a value
        with pytest.raises(StoreDamaged, match=r"Secret default/s1 \(synced\) is damaged"):
            g.get(S1)
        with capture_logs() as logs:
            snap = g.snapshot()
        assert [r.key for r in snap.changes] == [MESH, S2]  # the damaged wire is not sent
        assert [e["key"] for e in _damage_reports(logs)] == ["Secret default/s1"]
        # Putting the resource again repairs it.
        g.put(mk(S1, b"fresh"), T0)
        assert S1 in [r.key for r in g.snapshot().changes]
    finally:
        g.close()


def _as_format_1(backend: Backend) -> None:
    """Rewrite a fresh store as a release before the digest covered ``wire`` left it: each
    row's digest over its columns without wire, and the store's format before 2."""
    from kds.store._rows import WIRE, row_digest_v1

    cols = "kind, mesh, name, origin, data, labels, spec, creation_time, modification_time, "
    cols += "version, sealed"
    for row in backend.sql(f"SELECT {cols} FROM resources"):
        backend.sql(
            "UPDATE resources SET digest=? WHERE kind=? AND mesh=? AND name=? AND origin=?",
            row_digest_v1(row[:WIRE]),
            *row[:4],
        )
    if backend.name == "sqlite":
        backend.sql("DELETE FROM meta WHERE key='schema_version'")
        backend.sql("UPDATE meta SET value='global' WHERE key='role'")
    else:
        backend.sql("UPDATE meta SET value='2' WHERE key='schema_version'")


def test_a_store_from_before_is_migrated_keeping_old_damage(backend: Backend) -> None:
    _fill(backend)
    _as_format_1(backend)
    # Damage found by the old digest before the migration: it must stay damaged.
    backend.sql("UPDATE resources SET data=? WHERE name='s2'", b"tampered")
    g = backend.open()
    try:
        assert [d.key for d in g.damaged] == ["Secret default/s2"]
        row = g.get(S1)
        assert row is not None and row.resource.data == VALUE
    finally:
        g.close()
    ((version,),) = backend.sql("SELECT value FROM meta WHERE key='schema_version'")
    assert int(version) == (2 if backend.name == "sqlite" else 3)
    backend.flip_wire("s1")  # after the migration, wire is covered
    g = backend.open()
    try:
        assert sorted(d.key for d in g.damaged) == ["Secret default/s1", "Secret default/s2"]
    finally:
        g.close()


def test_a_store_of_a_newer_format_is_refused(backend: Backend) -> None:
    _fill(backend)
    backend.sql("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="made by a newer kds-sync"):
        backend.open()


def test_a_sqlite_release_before_format_2_refuses_the_store(tmp_path: Path) -> None:
    """Releases before format 2 read no schema version: at open they compare meta's role
    with their own and refuse the store when it differs, saying "store PATH belongs to a
    ROLE control plane, not a global one". So format 2 records the role with the format,
    which such a release quotes, and reads it back itself."""
    b = Backend("sqlite", tmp_path)
    _fill(b)
    ((role,),) = b.sql("SELECT value FROM meta WHERE key='role'")
    assert role == "global (store format 2, made by a newer kds-sync)"
    b.open().close()  # this release reads it as a global store
