"""Row digests: noticing a resources row whose stored bytes changed behind the store's back.

SQLite's own checks (``PRAGMA integrity_check``) see only the file's structure; a flipped
byte inside a row's value passes them. So each resources row carries a digest (BLAKE2b,
16 bytes) of its stored columns (the data as stored, sealed or not), written with the row
and checked whenever the row is read: a row that does not match is damaged, and is never
served as if it were right. ``scan`` checks every row (at start); stores made before the
digest column get their digests computed once, when they are first opened.

The digest is not a MAC: it catches damage (a disk, a bad copy), not a forger who rewrites
the digest too; encryption at rest (kds.store.sqlite._sealing) authenticates sealed data.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DamagedRow", "add_missing_digests", "row_digest", "scan"]

_PERSON = b"kds-row-v1"
_NULL = b"\xff\xff\xff\xff"


def row_digest(values: Sequence[Any]) -> bytes:
    """The digest of one row's stored COLS values (text, integers and blobs alike: each as
    the bytes SQLite would give for it cast to a blob, so ``scan`` can read raw bytes)."""
    h = hashlib.blake2b(digest_size=16, person=_PERSON)
    for v in values:
        if v is None:
            h.update(_NULL)
            continue
        if isinstance(v, str):
            b = v.encode("utf-8", "surrogatepass")
        elif isinstance(v, bytes | bytearray | memoryview):
            b = bytes(v)
        else:
            b = str(v).encode()
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()


@dataclass(frozen=True)
class DamagedRow:
    """A row whose digest does not match: where it is (rowid) and what it claims to be."""

    rowid: int
    kind: str
    mesh: str
    name: str
    origin: str

    @property
    def key(self) -> str:
        """The key as the damaged row reads (its key columns may be damaged too)."""
        return f"{self.kind} {self.mesh + '/' if self.mesh else ''}{self.name}"


# Every COLS column cast to a blob: text that no longer decodes as UTF-8 is read as bytes.
_COLS_AS_BLOBS = ", ".join(
    f"CAST({c} AS BLOB)"
    for c in (
        "kind",
        "mesh",
        "name",
        "origin",
        "data",
        "labels",
        "spec",
        "creation_time",
        "modification_time",
        "version",
        "sealed",
    )
)


def _text(b: bytes | None) -> str:
    return "" if b is None else bytes(b).decode("utf-8", "replace")


def scan(conn: sqlite3.Connection) -> list[DamagedRow]:
    """Every resources row whose digest does not match its stored columns."""
    damaged = []
    cur = conn.execute(f"SELECT rowid, {_COLS_AS_BLOBS}, digest FROM resources")
    for r in cur:
        if row_digest(r[1:12]) != (bytes(r[12]) if r[12] is not None else b""):
            damaged.append(DamagedRow(r[0], _text(r[1]), _text(r[2]), _text(r[3]), _text(r[4])))
    return damaged


def add_missing_digests(conn: sqlite3.Connection, cols: str) -> int:
    """Compute the digest of every row (a store made before digests); the rows done."""
    cur = conn.execute(f"SELECT rowid, {cols} FROM resources")
    rows = [(row_digest(r[1:12]), r[0]) for r in cur.fetchall()]
    conn.executemany("UPDATE resources SET digest=? WHERE rowid=?", rows)
    return len(rows)
