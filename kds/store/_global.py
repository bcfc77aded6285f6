"""Global's engine, on either backend: revisioned resource writes, the snapshot, and the
tables only global keeps (internal secrets, zone tokens, zone status and its history).

Every changed resource gets the next revision, which is also its version; the encoded
Change is kept with the row (the snapshot sends it as is) and appended to the change log in
the same transaction (kds.store._changelog). Writes other instances sharing the store must
see (changes, global's own secrets, revoked tokens) are announced at commit (``Db.notify``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import structlog

from kds import integrity, wire
from kds.crypto import DataCipher
from kds.model import Key, Kind, Resource
from kds.protocol.records import sync_units
from kds.store._changelog import ChangeLog
from kds.store._engine import ResourceEngine, TxView
from kds.store._kinds import known_kind
from kds.store._rows import COLS, DIGEST, WIRE, Conn, Db, get_meta, row_digest
from kds.store._sealing import aad
from kds.store.interface import OnCommit
from kds.store.results import (
    ORIGIN_GLOBAL,
    ChangeRecord,
    LeafChanges,
    Snapshot,
    WriteResult,
    ZoneEvent,
    sort_records,
)

__all__ = ["DEFAULT_LOG_SIZE", "GlobalEngine", "GlobalOptions"]

log = structlog.get_logger("kds.store")

DEFAULT_LOG_SIZE = 10_000


class GlobalOptions(TypedDict, total=False):
    """GlobalEngine's options, as each backend's engine takes them."""

    log_size: int
    max_message_bytes: int | None
    clock: Callable[[], float]
    cipher: DataCipher | None
    on_commit: OnCommit | None
    new_store: bool


def _internal(name: str) -> bytes:
    return aad("internal", "", "", name, "")


class GlobalEngine(ResourceEngine):
    """Global's store as a blocking engine (one call at a time per thread)."""

    role = "global"
    origin = ORIGIN_GLOBAL

    def __init__(
        self,
        db: Db,
        *,
        log_size: int = DEFAULT_LOG_SIZE,
        max_message_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        cipher: DataCipher | None = None,
        on_commit: OnCommit | None = None,
        new_store: bool = False,
    ):
        # A Mesh and its mTLS backend secrets must fit one sync message together.
        self.max_message_bytes = max_message_bytes
        self.log_size = log_size
        self.clock = clock
        super().__init__(db, cipher=cipher, on_commit=on_commit, new_store=new_store)
        self.changelog = ChangeLog(self.db, self.sealer, log_size, clock)
        self.damaged_log = self.changelog.check()

    def versions_page(self, kind: Kind, limit: int) -> tuple[int, list[tuple[Key, int]]]:
        # The status page polls the names and versions of up to 1,000 resources: page() read
        # and unsealed every one's data to drop it (200 secrets of 1 MB: 0.5 s, 90 MB a poll).
        with self.db.read(snapshot=True) as conn:
            one = conn.execute("SELECT COUNT(*) FROM resources WHERE kind=?", (str(kind),))
            row = one.fetchone()
            cur = conn.execute(
                "SELECT mesh, name, version FROM resources WHERE kind=? ORDER BY mesh, name"
                " LIMIT ?",
                (str(kind), limit),
            )
            keys = [(Key(kind, mesh, name), int(version)) for mesh, name, version in cur]
        return (int(row[0]) if row else 0), keys

    # ------------------------------------------------------------------ revisioned writes

    def _next_version(self, conn: Conn, old: Resource | None) -> int:
        return self.changelog.next_revision(conn)

    def _log_put(self, conn: Conn, stored: Resource) -> tuple[ChangeRecord | None, bytes | None]:
        wire_bytes = wire.change_put(stored.version, stored)
        record = self.changelog.append(conn, stored.version, stored.key, False, wire_bytes)
        return record, wire_bytes

    def _log_delete(self, conn: Conn, key: Key) -> ChangeRecord | None:
        revision = self.changelog.next_revision(conn)
        return self.changelog.append(conn, revision, key, True, wire.change_delete(revision, key))

    def _before_commit(self, conn: Conn, results: Sequence[WriteResult]) -> None:
        self.changelog.flush(conn)
        if any(r.record is not None for r in results):
            self.db.notify(conn, "change")

    def _more_problems(self, view: TxView, resources: Sequence[Resource]) -> integrity.Problems:
        if self.max_message_bytes:
            return integrity.check_unit_sizes(view, resources, self.max_message_bytes)
        return integrity.Problems()

    # ------------------------------------------------------------------ sync reads

    def head(self) -> int:
        return self.changelog.head()

    def _sync_revision(self, conn: Conn) -> int:
        return int(get_meta(conn, "head", "0"))

    def log_floor(self) -> int:
        return self.changelog.log_floor()

    def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        return self.changelog.changes_after(revision, upto)

    def chain_at(self, revision: int) -> bytes | None:
        return self.changelog.chain_at(revision)

    def commit_time(self, revision: int) -> float | None:
        return self.changelog.commit_time(revision)

    def sync_leaves_since(self, revision: int, most: int) -> LeafChanges | None:
        """The leaves changed after ``revision`` (a tree held at that revision) up to the
        head, in one snapshot read: each key the change log names after it, with its leaf
        digest now, or None where it is no leaf (deleted, or its row damaged: logged by key).
        None when more than ``most`` changes came since, or the log no longer reaches back to
        ``revision``: the whole tree is to be read instead."""
        with self.db.read(snapshot=True) as conn:
            head = self._sync_revision(conn)
            if not revision <= head <= revision + most:
                return None
            keys = self.changelog.keys_changed(conn, revision, head)
            if keys is None:
                return None
            leaves: list[tuple[Key, bytes | None]] = []
            for key in keys:
                row = conn.execute(
                    f"SELECT {COLS} FROM resources "
                    "WHERE kind=? AND mesh=? AND name=? AND origin='global'",
                    (str(key.kind), key.mesh, key.name),
                ).fetchone()
                leaf = None if row is None else self._leaf(row)
                leaves.append((key, None if leaf is None else leaf[1]))
        return LeafChanges(head, leaves)

    def snapshot(self) -> Snapshot:
        """Every resource's kept encoded change (``wire``), at one revision. A row whose
        digest does not match is left out, reported by key: its damaged bytes are never
        sent to a zone (putting the resource again repairs it)."""
        records: list[ChangeRecord] = []
        head, chain = self.snapshot_units(records.extend)
        return Snapshot(head, self._store_id, sort_records(records), chain)

    def snapshot_units(self, take: Callable[[list[ChangeRecord]], None]) -> tuple[int, bytes]:
        """The snapshot (see ``snapshot``) handed to ``take`` unit by unit in sync order
        (kds.protocol.records: each Mesh with the backend Secrets it names, then every other
        resource), row by row, so a caller that packs the units as they come never holds one
        record per resource: 100,000 secrets as records took about 47 MB. The revision and
        the history chain it is at."""
        with self.db.read(snapshot=True) as conn:
            head = int(get_meta(conn, "head"))
            chain = bytes.fromhex(get_meta(conn, "chain"))
            sql = f"SELECT {COLS} FROM resources WHERE origin='global'"
            meshes = [
                rec
                for r in conn.execute(f"{sql} AND kind=?", (str(Kind.MESH),))
                if (rec := self._snapshot_record(r)) is not None
            ]
            claimed: set[Key] = set()
            for unit in sync_units(meshes):  # each Mesh alone: its secrets are read next
                mesh = unit[0]
                with_it = []
                for name in sorted(mesh.backend_secrets):
                    key = Key(Kind.SECRET, mesh.key.name, name)
                    found = conn.execute(
                        f"{sql} AND kind=? AND mesh=? AND name=?", (str(key.kind), key.mesh, name)
                    ).fetchone()
                    rec = self._snapshot_record(found) if found is not None else None
                    if rec is not None:
                        claimed.add(key)
                        with_it.append(rec)
                take([mesh, *sorted(with_it, key=lambda r: r.revision)])
            # Row by row, not fetchall: every row (data included) of a large store held at
            # once more than doubled global's memory while a snapshot was read.
            for r in conn.execute(f"{sql} AND kind<>?", (str(Kind.MESH),)):
                rec = self._snapshot_record(r)
                if rec is not None and rec.key not in claimed:
                    take([rec])
        return head, chain

    def _snapshot_record(self, r: Sequence[Any]) -> ChangeRecord | None:
        """A row as the snapshot sends it; None (logged by key) if its digest fails, or (logged
        once per kind: kds.store._kinds) if it is of a kind this version does not know."""
        k, m, n = r[0], r[1], r[2]
        if row_digest(r[:DIGEST]) != bytes(r[DIGEST]) or r[WIRE] is None:
            log.error(
                "damaged row left out of a snapshot: it is not sent",
                key=f"{k} {m + '/' if m else ''}{n}",
                store=self.location,
                fix="put the resource again, or restore the store from a backup",
            )
            return None
        kind = known_kind(k, self.location)
        if kind is None:
            return None
        change = self.sealer.open(bytes(r[WIRE]), r[10], aad("wire", k, m, n, ORIGIN_GLOBAL))
        return ChangeRecord(int(r[9]), Key(kind, m, n), False, change)

    # ------------------------------------------------------------------ internal secrets

    def internal_secrets(self, prefix: str = "") -> dict[str, bytes]:
        """Global's internal secrets (CA key, token signing keys) whose name starts with
        ``prefix``. They live apart from resources: never in the change log, never synced,
        never served by the API."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT name, data, sealed FROM internal_secrets "
                "WHERE substr(name, 1, length(?)) = ? ORDER BY name",
                (prefix, prefix),
            ).fetchall()
        return {name: self.sealer.open(bytes(data), sl, _internal(name)) for name, data, sl in rows}

    def put_internal_secret(self, name: str, data: bytes, now: str) -> None:
        stored, sealed = self.sealer.seal(data, _internal(name))
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO internal_secrets (name, data, created, sealed) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data=excluded.data, sealed=excluded.sealed",
                (name, stored, now, sealed),
            )
            self.db.notify(conn, "secrets")

    def add_internal_secrets(self, secrets: dict[str, bytes], now: str) -> dict[str, bytes]:
        """Store all of ``secrets`` unless one of their names is there; what is stored."""
        names = sorted(secrets)
        marks = ",".join("?" * len(names))
        with self.db.write() as conn:
            held = conn.execute(
                f"SELECT 1 FROM internal_secrets WHERE name IN ({marks}) LIMIT 1", names
            ).fetchone()
            if held is None:
                for name in names:
                    stored, sealed = self.sealer.seal(secrets[name], _internal(name))
                    conn.execute(
                        "INSERT INTO internal_secrets (name, data, created, sealed) "
                        "VALUES (?, ?, ?, ?)",
                        (name, stored, now, sealed),
                    )
                self.db.notify(conn, "secrets")
            rows = conn.execute(
                f"SELECT name, data, sealed FROM internal_secrets WHERE name IN ({marks})", names
            ).fetchall()
        return {n: self.sealer.open(bytes(d), sl, _internal(n)) for n, d, sl in rows}

    def delete_internal_secret(self, name: str) -> bool:
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM internal_secrets WHERE name=?", (name,))
            self.db.notify(conn, "secrets")
            return cur.rowcount > 0

    # ------------------------------------------------------------------ zone tokens

    def add_zone_token(
        self, token_id: str, zone: str, key_name: str, issued: str, expires: str
    ) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO zone_tokens (id, zone, key_name, issued_at, expires_at) "
                "VALUES (?,?,?,?,?)",
                (token_id, zone, key_name, issued, expires),
            )

    def revoke_zone_token(self, token_id: str, now: str) -> dict[str, str] | None:
        """Mark a token revoked (once); None when no such token was issued."""
        with self.db.write() as conn:
            conn.execute(
                "UPDATE zone_tokens SET revoked_at=? WHERE id=? AND revoked_at=''", (now, token_id)
            )
            self.db.notify(conn, "secrets")
            rows = self._token_rows(conn, "WHERE id=?", (token_id,))
        return rows[0] if rows else None

    def zone_tokens(self) -> list[dict[str, str]]:
        with self.db.read() as conn:
            return self._token_rows(conn, "ORDER BY issued_at, id", ())

    @staticmethod
    def _token_rows(conn: Conn, where: str, args: tuple[Any, ...]) -> list[dict[str, str]]:
        cur = conn.execute(
            f"SELECT id, zone, key_name, issued_at, expires_at, revoked_at FROM zone_tokens {where}",
            args,
        )
        keys = ("id", "zone", "keyName", "issuedAt", "expiresAt", "revokedAt")
        return [dict(zip(keys, row, strict=True)) for row in cur]

    # ------------------------------------------------------------------ zone status

    def zone_statuses(self) -> dict[str, str]:
        """Every zone's last saved status (JSON text), by zone name."""
        with self.db.read() as conn:
            return {
                n: s for n, s in conn.execute("SELECT name, status FROM zone_status ORDER BY name")
            }

    def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        """Save the given zones' statuses (JSON text) in one transaction (on a store several
        instances share, not over one describing a newer stream: Db.STATUS_UPSERT)."""
        with self.db.write() as conn:
            conn.executemany(self.db.STATUS_UPSERT, sorted(statuses.items()))

    # ------------------------------------------------------------------ zone status history

    def add_zone_events(self, events: Sequence[ZoneEvent], keep: int) -> None:
        """Append ``events`` in one transaction; keep the newest ``keep`` of each (zone, kind)
        they added to."""
        if not events:
            return
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO zone_events (zone, kind, time, data) VALUES (?,?,?,?)",
                [(e.zone, e.kind, e.time, e.data) for e in events],
            )
            for zone, kind in sorted({(e.zone, e.kind) for e in events}):
                conn.execute(
                    "DELETE FROM zone_events WHERE zone=? AND kind=? AND id <= ("
                    "  SELECT id FROM zone_events WHERE zone=? AND kind=?"
                    "  ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (zone, kind, zone, kind, max(0, keep)),
                )

    def prune_zone_events(self, seen_since: float, total: int) -> int:
        """Bound the history in total: drop every entry of each zone with no entry at or
        after ``seen_since`` (a zone gone, or not seen for the retention time), then the
        oldest entries beyond ``total``; the entries dropped."""
        with self.db.write() as conn:
            gone = conn.execute(
                "DELETE FROM zone_events WHERE zone IN (SELECT zone FROM zone_events"
                " GROUP BY zone HAVING MAX(time) < ?)",
                (seen_since,),
            ).rowcount
            over = conn.execute(
                "DELETE FROM zone_events WHERE id <= ("
                "  SELECT id FROM zone_events ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (max(0, total),),
            ).rowcount
        return max(0, gone) + max(0, over)

    def zone_events(
        self, zone: str, kind: str, since: float = 0.0, limit: int = 1000
    ) -> list[ZoneEvent]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT time, data FROM zone_events WHERE zone=? AND kind=? AND time>=? "
                "ORDER BY id DESC LIMIT ?",
                (zone, kind, since, max(0, limit)),
            ).fetchall()
        return [ZoneEvent(zone, kind, float(t), data) for t, data in reversed(rows)]
