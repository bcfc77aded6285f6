"""Global's change log and history chain.

Every changed resource gets the next revision; its encoded Change (kds.wire) goes in the
log, and the history chain (kds.protocol.records.next_chain) advances over it, all in the
writing transaction. The log keeps the last ``log_size`` revisions; ``log_floor`` rises so
that every change after it is still there (a zone at ``log_floor <= r <= head`` resumes
from r), and the chain at the floor is kept, so ``chain_at`` still answers for a zone at
the floor. Meta holds the head, the chain at the head, the floor and the chain at the floor,
written once at the end of each writing transaction (``flush``). On PostgreSQL every writer
holds the store's advisory lock (kds.store.postgres._db), so the head a writer reads is the
last committed one and revisions stay gap-free across instances sharing the store.

Each entry carries a digest of its stored columns (kds.store._rows.log_digest, as rows do),
checked whenever it is read and for every entry at open: a damaged entry is reported by its
revision, never resumes a zone (``chain_at`` knows no chain for it) and ends any range that
reaches it (``changes_after``), so the zone is sent a snapshot instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from kds.model import Key
from kds.protocol.records import FOREIGN_KEY, next_chain
from kds.store._kinds import known_kind
from kds.store._rows import LOG_COLS, Conn, Db, get_meta, log_digest, set_meta
from kds.store._sealing import Sealer, aad
from kds.store.results import ChangeRecord

__all__ = ["ChangeLog", "digest_entries"]

log = structlog.get_logger("kds.store")


def _sound(entry: Any) -> bool:
    """Whether an entry selected as LOG_COLS matches its digest."""
    digest = entry[-1]
    return digest is not None and log_digest(entry[:-1]) == bytes(digest)


def digest_entries(conn: Conn) -> int:
    """Migrating a store from before entry digests: the digest of every entry that has
    none (what it holds now is all there is to check it against); the entries done."""
    rows = conn.execute(f"SELECT {LOG_COLS} FROM changelog WHERE digest IS NULL").fetchall()
    conn.executemany(
        "UPDATE changelog SET digest=? WHERE revision=?",
        [(log_digest(r[:-1]), r[0]) for r in rows],
    )
    return len(rows)


@dataclass
class _Tail:
    serial: int  # the transaction it was read in (Database.tx_serial)
    head: int
    chain: bytes
    floor: int
    dirty: bool = False  # appended since read: flush writes head and chain to meta


class ChangeLog:
    """The change log of one global store."""

    def __init__(self, db: Db, sealer: Sealer, log_size: int, clock: Callable[[], float]) -> None:
        self.db = db
        self.sealer = sealer
        self.log_size = log_size
        self.clock = clock  # wall-clock seconds, recorded with each entry
        self._tail_kept: _Tail | None = None

    def _tail(self, conn: Conn) -> _Tail:
        """The log's head, chain and floor in the writing transaction: read from meta once
        per transaction, then kept as appends move them (an apply of 10,000 resources read
        them 30,000 times)."""
        serial = self.db.tx_serial()
        tail = self._tail_kept
        if tail is None or tail.serial != serial or not serial:
            tail = _Tail(
                serial,
                int(get_meta(conn, "head")),
                bytes.fromhex(get_meta(conn, "chain")),
                int(get_meta(conn, "log_floor")),
            )
            self._tail_kept = tail if serial else None
        return tail

    def next_revision(self, conn: Conn) -> int:
        return self._tail(conn).head + 1

    def append(
        self, conn: Conn, revision: int, key: Key, deleted: bool, change: bytes
    ) -> ChangeRecord:
        """Log ``change`` at ``revision`` inside the writing transaction; ``flush`` before
        the commit writes the new head and prunes past log_size."""
        tail = self._tail(conn)
        chain = next_chain(tail.chain, change)
        rec = ChangeRecord(revision, key, deleted, change, chain, self.clock())
        stored, sealed = self.sealer.seal(change, aad("changelog", str(revision), "", "", ""))
        values = (
            revision,
            str(key.kind),
            key.mesh,
            key.name,
            deleted,
            stored,
            chain,
            rec.committed_at,
            sealed,
        )
        conn.execute(
            f"INSERT INTO changelog ({LOG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (*values, log_digest(values)),
        )
        tail.head, tail.chain, tail.dirty = revision, chain, True
        return rec

    def flush(self, conn: Conn) -> None:
        """At the end of a writing transaction that appended: write the head and its chain
        to meta and prune past log_size, once for the whole transaction (per append, an
        apply of 10,000 resources ran 40,000 more statements; nothing reads the log inside
        the transaction, so the committed state is the same)."""
        tail = self._tail_kept
        if tail is None or not tail.dirty or tail.serial != self.db.tx_serial():
            return
        set_meta(conn, "head", tail.head)
        set_meta(conn, "chain", tail.chain.hex())
        floor = tail.head - self.log_size
        if floor > tail.floor:
            row = conn.execute("SELECT chain FROM changelog WHERE revision=?", (floor,)).fetchone()
            conn.execute("DELETE FROM changelog WHERE revision <= ?", (floor,))
            set_meta(conn, "log_floor", floor)
            set_meta(conn, "floor_chain", bytes(row[0]).hex() if row else "")
            tail.floor = floor
        tail.dirty = False

    def chain_at(self, revision: int) -> bytes | None:
        """The history chain at ``revision``, or None when the log no longer knows it."""
        with self.db.read(snapshot=True) as conn:
            head, floor = int(get_meta(conn, "head")), int(get_meta(conn, "log_floor"))
            if revision == head:
                return bytes.fromhex(get_meta(conn, "chain"))
            if revision == floor:
                return bytes.fromhex(get_meta(conn, "floor_chain"))
            row = conn.execute(
                f"SELECT {LOG_COLS} FROM changelog WHERE revision=?", (revision,)
            ).fetchone()
        if row is None:
            return None
        if not _sound(row):
            self._damaged(row, "its chain is not trusted: a zone at this revision takes a snapshot")
            return None
        return bytes(row[6])

    def head(self) -> int:
        with self.db.read() as conn:
            return int(get_meta(conn, "head"))

    def log_floor(self) -> int:
        with self.db.read() as conn:
            return int(get_meta(conn, "log_floor"))

    def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        """The entries after ``revision`` up to ``upto``, in order; a damaged entry ends
        the list before it (reported), so a range reaching it comes out short and the zone
        is sent a snapshot instead of a damaged change or a gap. An entry of a kind this
        version does not know is a record of its revision, chain and time only, marked
        ``foreign`` (kds.store._kinds): it is never sent, and the range stays whole."""
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {LOG_COLS} FROM changelog WHERE revision > ? AND revision <= ? "
                "ORDER BY revision",
                (revision, upto),
            ).fetchall()
        open_value = self.sealer.open
        out = []
        for row in rows:
            if not _sound(row):
                self._damaged(row, "the changes from it on are not sent: a snapshot is")
                break
            rev, k, m, n, d, c, ch, at, sl, _ = row
            kind = known_kind(k, self.db.location)
            out.append(
                ChangeRecord(
                    int(rev),
                    FOREIGN_KEY if kind is None else Key(kind, m, n),
                    bool(d),
                    open_value(bytes(c), sl, aad("changelog", str(rev), "", "", "")),
                    bytes(ch),
                    float(at),
                    foreign="" if kind is not None else k,
                )
            )
        return out

    def keys_changed(self, conn: Conn, revision: int, head: int) -> set[Key] | None:
        """In the read ``conn``: the keys of the entries after ``revision`` up to ``head``;
        None when the log no longer reaches back to ``revision`` or an entry among them is
        damaged (its key columns cannot be trusted, so neither can the set)."""
        if revision < int(get_meta(conn, "log_floor", "0")):
            return None
        rows = conn.execute(
            f"SELECT {LOG_COLS} FROM changelog WHERE revision > ? AND revision <= ?",
            (revision, head),
        ).fetchall()
        keys = set()
        for row in rows:
            if not _sound(row):
                self._damaged(row, "anti-entropy reads its whole tree again instead")
                return None
            kind = known_kind(row[1], self.db.location)
            if kind is None:
                return None  # a type this version does not know (a newer instance wrote it)
            keys.add(Key(kind, row[2], row[3]))
        return keys

    def check(self) -> list[int]:
        """At open: the revisions of every damaged entry, each reported."""
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT {LOG_COLS} FROM changelog ORDER BY revision").fetchall()
        damaged = [r for r in rows if not _sound(r)]
        for row in damaged:
            self._damaged(row, "zones behind it take a snapshot instead of resuming through it")
        return [int(r[0]) for r in damaged]

    def _damaged(self, row: Any, consequence: str) -> None:
        """Report a damaged entry by its revision (its other columns may be damaged too;
        never its change, which holds a value)."""
        log.error(
            "damaged change-log entry: its stored bytes do not match their digest",
            revision=int(row[0]),
            store=self.db.location,
            consequence=consequence,
            fix="none needed: it leaves the log as the log moves on",
        )

    def commit_time(self, revision: int) -> float | None:
        """When ``revision`` was committed (wall-clock seconds); for a revision the log no
        longer holds, the oldest time it still knows (a lower bound of how long ago it was).
        None when the log knows no time at or after it."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT committed_at FROM changelog WHERE revision >= ? AND committed_at > 0 "
                "ORDER BY revision LIMIT 1",
                (revision,),
            ).fetchone()
        return float(row[0]) if row else None
