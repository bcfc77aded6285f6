"""Change-log entries carry a digest, as rows do (kds.store._rows), on both backends: a
damaged entry is reported by its revision (never a value), never resumes a zone (its chain
is unknown) and is never sent (a range that reaches it stops before it, so the sender falls
back to a snapshot). Stores from before are migrated at open, with the format bump."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from kds.crypto import DataCipher
from kds.store._rows import ROW_FORMAT
from kds.store.postgres._db import SCHEMA_VERSION
from tests.unit.store_backends import G1, MESH, T0, mk
from tests.unit.test_store_wire_digest import S1, S2, VALUE, Backend, backend

__all__ = ["backend"]  # the fixture, used by name

K1 = b"k" * 32


def _fill(b: Backend, **kw: Any) -> None:
    g = b.open(**kw)
    for r in (mk(MESH), mk(S1, VALUE), mk(S2, VALUE), mk(G1, VALUE)):
        g.put(r, T0)  # revisions 1 to 4 (the head's chain is meta's, not an entry's)
    g.close()


def _flip_change(b: Backend, revision: int) -> None:
    ((change,),) = b.sql("SELECT change FROM changelog WHERE revision=?", revision)
    damaged = bytearray(change)
    damaged[-3] ^= 0x01
    b.sql("UPDATE changelog SET change=? WHERE revision=?", bytes(damaged), revision)


def _reports(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"].startswith("damaged change-log entry")]


def test_a_damaged_entry_is_reported_and_never_resumes_or_is_sent(backend: Backend) -> None:
    _fill(backend)
    _flip_change(backend, 2)
    with capture_logs() as logs:
        g = backend.open()
    try:
        assert [(e["revision"], e["log_level"]) for e in _reports(logs)] == [(2, "error")]
        assert all(VALUE.decode() not in repr(e) for e in logs)
        assert g.chain_at(1) is not None and g.chain_at(3) is not None
        with capture_logs() as logs:
            assert g.chain_at(2) is None  # a zone at 2 cannot resume: it takes a snapshot
            assert [r.revision for r in g.changes_after(0, 3)] == [1]  # stops before it
        assert [e["revision"] for e in _reports(logs)] == [2, 2]
        assert [r.revision for r in g.changes_after(2, 3)] == [3]
        g.put(mk(S1, b"again"), T0)  # a new entry is sound
        assert [r.revision for r in g.changes_after(2, 5)] == [3, 4, 5]
    finally:
        g.close()


def test_other_damage_to_an_entry_is_found_too(backend: Backend) -> None:
    _fill(backend)
    backend.sql("UPDATE changelog SET chain=? WHERE revision=3", b"\x00" * 32)
    backend.sql("UPDATE changelog SET name='s9' WHERE revision=2")
    g = backend.open()
    try:
        assert g.chain_at(3) is None
        assert [r.revision for r in g.changes_after(0, 3)] == [1]
    finally:
        g.close()


def test_a_store_from_before_is_migrated_with_the_format_bump(backend: Backend) -> None:
    _fill(backend)
    backend.sql("UPDATE changelog SET digest=NULL")
    if backend.name == "sqlite":
        backend.sql("UPDATE meta SET value=? WHERE key='schema_version'", str(ROW_FORMAT - 1))
    else:
        backend.sql("UPDATE meta SET value=? WHERE key='schema_version'", str(SCHEMA_VERSION - 1))
    g = backend.open()
    try:
        assert [r.revision for r in g.changes_after(0, 3)] == [1, 2, 3]
    finally:
        g.close()
    ((version,),) = backend.sql("SELECT value FROM meta WHERE key='schema_version'")
    assert int(version) == (ROW_FORMAT if backend.name == "sqlite" else SCHEMA_VERSION)
    assert backend.sql("SELECT revision FROM changelog WHERE digest IS NULL") == []
    _flip_change(backend, 3)
    g = backend.open()
    try:
        assert g.chain_at(3) is None
    finally:
        g.close()


def test_entries_resealed_at_open_keep_sound_digests(backend: Backend) -> None:
    _fill(backend)  # plaintext; then encryption is enabled: every entry is re-sealed
    g = backend.open(cipher=DataCipher([K1]))
    try:
        assert [r.revision for r in g.changes_after(0, 3)] == [1, 2, 3]
        assert g.chain_at(2) is not None
    finally:
        g.close()
