"""Global's change log and history chain.

Every changed resource gets the next revision; its encoded Change (kds.wire) goes in the
log, and the history chain (kds.protocol.records.next_chain) advances over it, all in the
writing transaction. The log keeps the last ``log_size`` revisions; ``log_floor`` rises so
that every change after it is still there (a zone at ``log_floor <= r <= head`` resumes
from r), and the chain at the floor is kept, so ``chain_at`` still answers for a zone at
the floor. Meta holds the head, the chain at the head, the floor and the chain at the floor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from kds.model import Key, Kind
from kds.protocol.records import next_chain
from kds.store.results import ChangeRecord
from kds.store.sqlite._db import Database, get_meta, set_meta
from kds.store.sqlite._sealing import Sealer, aad

__all__ = ["ChangeLog"]


class ChangeLog:
    """The change log of one global store file."""

    def __init__(
        self, db: Database, sealer: Sealer, log_size: int, clock: Callable[[], float]
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.log_size = log_size
        self.clock = clock  # wall-clock seconds, recorded with each entry

    @staticmethod
    def next_revision(conn: sqlite3.Connection) -> int:
        return int(get_meta(conn, "head")) + 1

    def append(
        self, conn: sqlite3.Connection, revision: int, key: Key, deleted: bool, change: bytes
    ) -> ChangeRecord:
        """Log ``change`` at ``revision`` inside the writing transaction; prune past log_size."""
        chain = next_chain(bytes.fromhex(get_meta(conn, "chain")), change)
        rec = ChangeRecord(revision, key, deleted, change, chain, self.clock())
        stored, sealed = self.sealer.seal(change, aad("changelog", str(revision), "", "", ""))
        conn.execute(
            "INSERT INTO changelog (revision, kind, mesh, name, deleted, change, chain, "
            "committed_at, sealed) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                revision,
                str(key.kind),
                key.mesh,
                key.name,
                deleted,
                stored,
                chain,
                rec.committed_at,
                sealed,
            ),
        )
        set_meta(conn, "head", revision)
        set_meta(conn, "chain", chain.hex())
        floor = revision - self.log_size
        if floor > int(get_meta(conn, "log_floor")):
            row = conn.execute("SELECT chain FROM changelog WHERE revision=?", (floor,)).fetchone()
            conn.execute("DELETE FROM changelog WHERE revision <= ?", (floor,))
            set_meta(conn, "log_floor", floor)
            set_meta(conn, "floor_chain", bytes(row[0]).hex() if row else "")
        return rec

    def chain_at(self, revision: int) -> bytes | None:
        """The history chain at ``revision``, or None when the log no longer knows it."""
        conn = self.db.conn()
        with self.db.tx(conn, "DEFERRED"):
            head, floor = int(get_meta(conn, "head")), int(get_meta(conn, "log_floor"))
            if revision == head:
                return bytes.fromhex(get_meta(conn, "chain"))
            if revision == floor:
                return bytes.fromhex(get_meta(conn, "floor_chain"))
            row = conn.execute(
                "SELECT chain FROM changelog WHERE revision=?", (revision,)
            ).fetchone()
            return bytes(row[0]) if row else None

    def head(self) -> int:
        return int(get_meta(self.db.conn(), "head"))

    def log_floor(self) -> int:
        return int(get_meta(self.db.conn(), "log_floor"))

    def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        cur = self.db.conn().execute(
            "SELECT revision, kind, mesh, name, deleted, change, chain, committed_at, sealed "
            "FROM changelog WHERE revision > ? AND revision <= ? ORDER BY revision",
            (revision, upto),
        )
        open_value = self.sealer.open
        return [
            ChangeRecord(
                rev,
                Key(Kind(k), m, n),
                bool(d),
                open_value(bytes(c), sl, aad("changelog", str(rev), "", "", "")),
                bytes(ch),
                at,
            )
            for rev, k, m, n, d, c, ch, at, sl in cur
        ]

    def commit_time(self, revision: int) -> float | None:
        """When ``revision`` was committed (wall-clock seconds); for a revision the log no
        longer holds, the oldest time it still knows (a lower bound of how long ago it was).
        None when the log knows no time at or after it."""
        row = (
            self.db.conn()
            .execute(
                "SELECT committed_at FROM changelog WHERE revision >= ? AND committed_at > 0 "
                "ORDER BY revision LIMIT 1",
                (revision,),
            )
            .fetchone()
        )
        return float(row[0]) if row else None
