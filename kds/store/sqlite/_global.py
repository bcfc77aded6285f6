"""Global's engine: revisioned resource writes, the snapshot, and the tables only global
keeps (internal secrets, zone tokens, zone status).

Every changed resource gets the next revision, which is also its version; the encoded
Change is kept with the row (the snapshot sends it as is) and appended to the change log in
the same transaction (kds.store.sqlite._changelog).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kds import integrity, wire
from kds.crypto import DataCipher
from kds.model import Key, Kind, Resource
from kds.store.interface import OnCommit
from kds.store.results import ORIGIN_GLOBAL, ChangeRecord, Snapshot, ZoneEvent, sort_records
from kds.store.sqlite._changelog import ChangeLog
from kds.store.sqlite._db import get_meta
from kds.store.sqlite._resources import ResourceEngine, TxView
from kds.store.sqlite._sealing import aad

__all__ = ["DEFAULT_LOG_SIZE", "GlobalEngine"]

DEFAULT_LOG_SIZE = 10_000


class GlobalEngine(ResourceEngine):
    """Global's store file as a blocking engine (one call at a time per thread)."""

    role = "global"
    origin = ORIGIN_GLOBAL

    def __init__(
        self,
        path: str | Path,
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
        super().__init__(path, cipher=cipher, on_commit=on_commit, new_store=new_store)
        self.changelog = ChangeLog(self.db, self.sealer, log_size, clock)

    # ------------------------------------------------------------------ revisioned writes

    def _next_version(self, conn: sqlite3.Connection, old: Resource | None) -> int:
        return self.changelog.next_revision(conn)

    def _log_put(
        self, conn: sqlite3.Connection, stored: Resource
    ) -> tuple[ChangeRecord | None, bytes | None]:
        wire_bytes = wire.change_put(stored.version, stored)
        record = self.changelog.append(conn, stored.version, stored.key, False, wire_bytes)
        return record, wire_bytes

    def _log_delete(self, conn: sqlite3.Connection, key: Key) -> ChangeRecord | None:
        revision = self.changelog.next_revision(conn)
        return self.changelog.append(conn, revision, key, True, wire.change_delete(revision, key))

    def _before_commit(self, conn: sqlite3.Connection) -> None:
        self.changelog.flush(conn)

    def _more_problems(self, view: TxView, resources: Sequence[Resource]) -> integrity.Problems:
        if self.max_message_bytes:
            return integrity.check_unit_sizes(view, resources, self.max_message_bytes)
        return integrity.Problems()

    # ------------------------------------------------------------------ sync reads

    def head(self) -> int:
        return self.changelog.head()

    def _sync_revision(self, conn: sqlite3.Connection) -> int:
        return int(get_meta(conn, "head", "0"))

    def log_floor(self) -> int:
        return self.changelog.log_floor()

    def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        return self.changelog.changes_after(revision, upto)

    def chain_at(self, revision: int) -> bytes | None:
        return self.changelog.chain_at(revision)

    def commit_time(self, revision: int) -> float | None:
        return self.changelog.commit_time(revision)

    def snapshot(self) -> Snapshot:
        conn = self.db.conn()
        with self.db.tx(conn, "DEFERRED"):
            head = int(get_meta(conn, "head"))
            chain = bytes.fromhex(get_meta(conn, "chain"))
            cur = conn.execute(
                "SELECT version, kind, mesh, name, wire, sealed FROM resources "
                "WHERE origin='global'"
            )
            open_value = self.sealer.open
            records = [
                ChangeRecord(
                    v,
                    Key(Kind(k), m, n),
                    False,
                    open_value(bytes(w), sl, aad("wire", k, m, n, ORIGIN_GLOBAL)),
                )
                for v, k, m, n, w, sl in cur
            ]
        return Snapshot(head, self._store_id, sort_records(records), chain)

    # ------------------------------------------------------------------ internal secrets

    def internal_secrets(self, prefix: str = "") -> dict[str, bytes]:
        """Global's internal secrets (CA key, token signing keys) whose name starts with
        ``prefix``. They live apart from resources: never in the change log, never synced,
        never served by the API."""
        cur = self.db.conn().execute(
            "SELECT name, data, sealed FROM internal_secrets WHERE substr(name, 1, ?) = ? "
            "ORDER BY name",
            (len(prefix), prefix),
        )
        return {
            name: self.sealer.open(bytes(data), sl, aad("internal", "", "", name, ""))
            for name, data, sl in cur
        }

    def put_internal_secret(self, name: str, data: bytes, now: str) -> None:
        conn = self.db.conn()
        with self.db.tx(conn):
            stored, sealed = self.sealer.seal(data, aad("internal", "", "", name, ""))
            conn.execute(
                "INSERT INTO internal_secrets (name, data, created, sealed) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET data=excluded.data, sealed=excluded.sealed",
                (name, stored, now, sealed),
            )

    def add_internal_secrets(self, secrets: dict[str, bytes], now: str) -> dict[str, bytes]:
        """Store all of ``secrets`` unless one of their names is there; what is stored."""
        conn = self.db.conn()
        with self.db.tx(conn):
            names = sorted(secrets)
            marks = ",".join("?" * len(names))
            held = conn.execute(
                f"SELECT 1 FROM internal_secrets WHERE name IN ({marks}) LIMIT 1", names
            ).fetchone()
            if held is None:
                for name in names:
                    stored, sealed = self.sealer.seal(
                        secrets[name], aad("internal", "", "", name, "")
                    )
                    conn.execute(
                        "INSERT INTO internal_secrets (name, data, created, sealed) "
                        "VALUES (?, ?, ?, ?)",
                        (name, stored, now, sealed),
                    )
        found = self.internal_secrets()
        return {n: found[n] for n in names if n in found}

    def delete_internal_secret(self, name: str) -> bool:
        conn = self.db.conn()
        with self.db.tx(conn):
            return conn.execute("DELETE FROM internal_secrets WHERE name=?", (name,)).rowcount > 0

    # ------------------------------------------------------------------ zone tokens

    def add_zone_token(
        self, token_id: str, zone: str, key_name: str, issued: str, expires: str
    ) -> None:
        conn = self.db.conn()
        with self.db.tx(conn):
            conn.execute(
                "INSERT INTO zone_tokens (id, zone, key_name, issued_at, expires_at) "
                "VALUES (?,?,?,?,?)",
                (token_id, zone, key_name, issued, expires),
            )

    def revoke_zone_token(self, token_id: str, now: str) -> dict[str, str] | None:
        """Mark a token revoked (once); None when no such token was issued."""
        conn = self.db.conn()
        with self.db.tx(conn):
            conn.execute(
                "UPDATE zone_tokens SET revoked_at=? WHERE id=? AND revoked_at=''", (now, token_id)
            )
            rows = self._token_rows(conn, "WHERE id=?", (token_id,))
        return rows[0] if rows else None

    def zone_tokens(self) -> list[dict[str, str]]:
        return self._token_rows(self.db.conn(), "ORDER BY issued_at, id", ())

    @staticmethod
    def _token_rows(
        conn: sqlite3.Connection, where: str, args: tuple[Any, ...]
    ) -> list[dict[str, str]]:
        cur = conn.execute(
            f"SELECT id, zone, key_name, issued_at, expires_at, revoked_at FROM zone_tokens {where}",
            args,
        )
        keys = ("id", "zone", "keyName", "issuedAt", "expiresAt", "revokedAt")
        return [dict(zip(keys, row, strict=True)) for row in cur]

    # ------------------------------------------------------------------ zone status

    def zone_statuses(self) -> dict[str, str]:
        """Every zone's last saved status (JSON text), by zone name."""
        return dict(self.db.conn().execute("SELECT name, status FROM zone_status ORDER BY name"))

    def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        """Save the given zones' statuses (JSON text) in one transaction."""
        conn = self.db.conn()
        with self.db.tx(conn):
            conn.executemany(
                "INSERT INTO zone_status VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET status=excluded.status",
                sorted(statuses.items()),
            )

    # ------------------------------------------------------------------ zone status history

    def add_zone_events(self, events: Sequence[ZoneEvent], keep: int) -> None:
        """Append ``events`` in one transaction; keep the newest ``keep`` of each (zone, kind)
        they added to."""
        if not events:
            return
        conn = self.db.conn()
        with self.db.tx(conn):
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

    def zone_events(
        self, zone: str, kind: str, since: float = 0.0, limit: int = 1000
    ) -> list[ZoneEvent]:
        rows = self.db.conn().execute(
            "SELECT time, data FROM zone_events WHERE zone=? AND kind=? AND time>=? "
            "ORDER BY id DESC LIMIT ?",
            (zone, kind, since, max(0, limit)),
        )
        return [ZoneEvent(zone, kind, t, data) for t, data in reversed(rows.fetchall())]
