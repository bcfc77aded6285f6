"""Row digests in a SQLite file: the start-up scan, and digests for a store made before them.

SQLite's own checks (``PRAGMA integrity_check``) see only the file's structure; a flipped
byte inside a row's value passes them. So each resources row carries a digest of its stored
columns (kds.store._rows.row_digest), checked whenever the row is read. ``scan`` checks
every row (at start), reading each column as raw bytes, so text that no longer decodes is
reported rather than failing the scan; stores made before the digest column get their
digests computed once, when they are first opened, and stores of format 1 (whose digest did
not cover ``wire``) are re-digested once (``to_format_2``).
"""

from __future__ import annotations

import sqlite3

from kds.store._rows import DamagedRow, redigested, row_digest

__all__ = ["DamagedRow", "add_missing_digests", "row_digest", "scan", "to_format_2"]


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
        "wire",
    )
)


def _text(b: bytes | None) -> str:
    return "" if b is None else bytes(b).decode("utf-8", "replace")


def scan(conn: sqlite3.Connection) -> list[DamagedRow]:
    """Every resources row whose digest does not match its stored columns."""
    damaged = []
    cur = conn.execute(f"SELECT rowid, {_COLS_AS_BLOBS}, digest FROM resources")
    for r in cur:
        if row_digest(r[1:13]) != (bytes(r[13]) if r[13] is not None else b""):
            damaged.append(DamagedRow(r[0], _text(r[1]), _text(r[2]), _text(r[3]), _text(r[4])))
    return damaged


def add_missing_digests(conn: sqlite3.Connection) -> int:
    """Compute the digest of every row (a store made before digests); the rows done."""
    cur = conn.execute(f"SELECT rowid, {_COLS_AS_BLOBS} FROM resources")
    rows = [(row_digest(r[1:13]), r[0]) for r in cur.fetchall()]
    conn.executemany("UPDATE resources SET digest=? WHERE rowid=?", rows)
    return len(rows)


def to_format_2(conn: sqlite3.Connection) -> int:
    """Re-digest every row whose format-1 digest (before ``wire`` was covered) matches
    (kds.store._rows.redigested); the rows done."""
    cur = conn.execute(f"SELECT rowid, {_COLS_AS_BLOBS}, digest FROM resources")
    rows = redigested(cur.fetchall())
    conn.executemany("UPDATE resources SET digest=? WHERE rowid=?", rows)
    return len(rows)
