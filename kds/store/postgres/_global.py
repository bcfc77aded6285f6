"""Global's engine on PostgreSQL: revisioned writes, the change log and history chain, the
snapshot, and the tables only global keeps (internal secrets, zone tokens, zone status).

As on SQLite (kds.store.sqlite._global, ._changelog): every changed resource gets the next
revision, which is also its version; the encoded Change is kept with the row and appended to
the change log, the head and the chain advance, all in the writing transaction. Writers hold
the store's advisory lock (kds.store.postgres._db), so with several global instances on one
database the head each reads is the last committed one: revisions are gap-free and commit in
revision order. Meta holds the head, the chain at the head, the floor and the chain there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kds import integrity, wire
from kds.crypto import DataCipher
from kds.model import Key, Kind, Resource
from kds.protocol.records import next_chain
from kds.store.interface import OnCommit
from kds.store.postgres._db import PgTarget, get_meta, set_meta
from kds.store.postgres._resources import Conn, PgResourceEngine, PgTxView
from kds.store.results import (
    ORIGIN_GLOBAL,
    ChangeRecord,
    Snapshot,
    WriteResult,
    ZoneEvent,
    sort_records,
)
from kds.store.sqlite._sealing import aad

__all__ = ["DEFAULT_LOG_SIZE", "PgGlobalEngine"]

# A zone status's connected_at (globalcp.zones.ZoneState, JSON): the stream it describes.
_CONNECTED_AT = "COALESCE(({0}.status::jsonb->>'connected_at')::float8, 0)"

DEFAULT_LOG_SIZE = 10_000


class PgGlobalEngine(PgResourceEngine):
    """Global's store on PostgreSQL as a blocking engine."""

    role = "global"
    origin = ORIGIN_GLOBAL

    def __init__(
        self,
        target: PgTarget,
        *,
        log_size: int = DEFAULT_LOG_SIZE,
        max_message_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        cipher: DataCipher | None = None,
        on_commit: OnCommit | None = None,
        new_store: bool = False,
    ):
        self.max_message_bytes = max_message_bytes
        self.log_size = log_size
        self.clock = clock
        super().__init__(target, cipher=cipher, on_commit=on_commit, new_store=new_store)

    # ------------------------------------------------------------------ revisioned writes

    def _next_version(self, conn: Conn, old: Resource | None) -> int:
        return int(get_meta(conn, "head")) + 1

    def _append(
        self, conn: Conn, revision: int, key: Key, deleted: bool, change: bytes
    ) -> ChangeRecord:
        chain = next_chain(bytes.fromhex(get_meta(conn, "chain")), change)
        rec = ChangeRecord(revision, key, deleted, change, chain, self.clock())
        stored, sealed = self.sealer.seal(change, aad("changelog", str(revision), "", "", ""))
        conn.execute(
            "INSERT INTO changelog (revision, kind, mesh, name, deleted, change, chain, "
            "committed_at, sealed) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (revision, str(key.kind), key.mesh, key.name, deleted, stored, chain,
             rec.committed_at, sealed),
        )  # fmt: skip
        set_meta(conn, "head", revision)
        set_meta(conn, "chain", chain.hex())
        floor = revision - self.log_size
        if floor > int(get_meta(conn, "log_floor")):
            row = conn.execute("SELECT chain FROM changelog WHERE revision=%s", (floor,)).fetchone()
            conn.execute("DELETE FROM changelog WHERE revision <= %s", (floor,))
            set_meta(conn, "log_floor", floor)
            set_meta(conn, "floor_chain", bytes(row[0]).hex() if row else "")
        return rec

    def _log_put(self, conn: Conn, stored: Resource) -> tuple[ChangeRecord | None, bytes | None]:
        wire_bytes = wire.change_put(stored.version, stored)
        return self._append(conn, stored.version, stored.key, False, wire_bytes), wire_bytes

    def _log_delete(self, conn: Conn, key: Key) -> ChangeRecord | None:
        revision = int(get_meta(conn, "head")) + 1
        return self._append(conn, revision, key, True, wire.change_delete(revision, key))

    def _more_problems(self, view: PgTxView, resources: Sequence[Resource]) -> integrity.Problems:
        if self.max_message_bytes:
            return integrity.check_unit_sizes(view, resources, self.max_message_bytes)
        return integrity.Problems()

    def _announce(self, conn: Conn, results: Sequence[WriteResult]) -> None:
        if any(r.record is not None for r in results):
            self._notify(conn, "change")

    # ------------------------------------------------------------------ sync reads

    def head(self) -> int:
        with self.db.read() as conn:
            return int(get_meta(conn, "head"))

    def log_floor(self) -> int:
        with self.db.read() as conn:
            return int(get_meta(conn, "log_floor"))

    def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT revision, kind, mesh, name, deleted, change, chain, committed_at, sealed "
                "FROM changelog WHERE revision > %s AND revision <= %s ORDER BY revision",
                (revision, upto),
            ).fetchall()
        open_value = self.sealer.open
        return [
            ChangeRecord(
                int(rev),
                Key(Kind(k), m, n),
                bool(d),
                open_value(bytes(c), sl, aad("changelog", str(rev), "", "", "")),
                bytes(ch),
                float(at),
            )
            for rev, k, m, n, d, c, ch, at, sl in rows
        ]

    def chain_at(self, revision: int) -> bytes | None:
        with self.db.read(snapshot=True) as conn:
            head, floor = int(get_meta(conn, "head")), int(get_meta(conn, "log_floor"))
            if revision == head:
                return bytes.fromhex(get_meta(conn, "chain"))
            if revision == floor:
                return bytes.fromhex(get_meta(conn, "floor_chain"))
            row = conn.execute(
                "SELECT chain FROM changelog WHERE revision=%s", (revision,)
            ).fetchone()
            return bytes(row[0]) if row else None

    def commit_time(self, revision: int) -> float | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT committed_at FROM changelog WHERE revision >= %s AND committed_at > 0 "
                "ORDER BY revision LIMIT 1",
                (revision,),
            ).fetchone()
        return float(row[0]) if row else None

    def _sync_revision(self, conn: Conn) -> int:
        return int(get_meta(conn, "head", "0"))

    def snapshot(self) -> Snapshot:
        with self.db.read(snapshot=True) as conn:
            head = int(get_meta(conn, "head"))
            chain = bytes.fromhex(get_meta(conn, "chain"))
            rows = conn.execute(
                "SELECT version, kind, mesh, name, wire, sealed FROM resources "
                "WHERE origin='global'"
            ).fetchall()
        open_value = self.sealer.open
        records = [
            ChangeRecord(
                int(v),
                Key(Kind(k), m, n),
                False,
                open_value(bytes(w), sl, aad("wire", k, m, n, ORIGIN_GLOBAL)),
            )
            for v, k, m, n, w, sl in rows
        ]
        return Snapshot(head, self._store_id, sort_records(records), chain)

    # ------------------------------------------------------------------ zone history

    def add_zone_events(self, events: Sequence[ZoneEvent], keep: int) -> None:
        """Append ``events`` in one transaction; keep the newest ``keep`` of each (zone, kind)
        they added to."""
        if not events:
            return
        with self.db.write() as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO zone_events (zone, kind, time, data) VALUES (%s,%s,%s,%s)",
                    [(e.zone, e.kind, e.time, e.data) for e in events],
                )
            for zone, kind in sorted({(e.zone, e.kind) for e in events}):
                conn.execute(
                    "DELETE FROM zone_events WHERE zone=%s AND kind=%s AND id <= ("
                    "  SELECT id FROM zone_events WHERE zone=%s AND kind=%s"
                    "  ORDER BY id DESC LIMIT 1 OFFSET %s)",
                    (zone, kind, zone, kind, max(0, keep)),
                )

    def zone_events(
        self, zone: str, kind: str, since: float = 0.0, limit: int = 1000
    ) -> list[ZoneEvent]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT time, data FROM zone_events WHERE zone=%s AND kind=%s AND time>=%s "
                "ORDER BY id DESC LIMIT %s",
                (zone, kind, since, max(0, limit)),
            ).fetchall()
        return [ZoneEvent(zone, kind, float(t), data) for t, data in reversed(rows)]

    # ------------------------------------------------------------------ internal secrets

    def internal_secrets(self, prefix: str = "") -> dict[str, bytes]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT name, data, sealed FROM internal_secrets WHERE starts_with(name, %s) "
                "ORDER BY name",
                (prefix,),
            ).fetchall()
        return {
            name: self.sealer.open(bytes(data), sl, aad("internal", "", "", name, ""))
            for name, data, sl in rows
        }

    def put_internal_secret(self, name: str, data: bytes, now: str) -> None:
        stored, sealed = self.sealer.seal(data, aad("internal", "", "", name, ""))
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO internal_secrets (name, data, created, sealed) "
                "VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET data=EXCLUDED.data, sealed=EXCLUDED.sealed",
                (name, stored, now, sealed),
            )
            self._notify(conn, "secrets")

    def add_internal_secrets(self, secrets: dict[str, bytes], now: str) -> dict[str, bytes]:
        """Store all of ``secrets`` unless one of their names is there; what is stored."""
        names = sorted(secrets)
        with self.db.write() as conn:
            held = conn.execute(
                "SELECT 1 FROM internal_secrets WHERE name = ANY(%s) LIMIT 1", (names,)
            ).fetchone()
            if held is None:
                for name in names:
                    where = aad("internal", "", "", name, "")
                    stored, sealed = self.sealer.seal(secrets[name], where)
                    conn.execute(
                        "INSERT INTO internal_secrets (name, data, created, sealed) "
                        "VALUES (%s, %s, %s, %s)",
                        (name, stored, now, sealed),
                    )
                self._notify(conn, "secrets")
            rows = conn.execute(
                "SELECT name, data, sealed FROM internal_secrets WHERE name = ANY(%s)", (names,)
            ).fetchall()
        return {
            n: self.sealer.open(bytes(d), sl, aad("internal", "", "", n, "")) for n, d, sl in rows
        }

    def delete_internal_secret(self, name: str) -> bool:
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM internal_secrets WHERE name=%s", (name,))
            self._notify(conn, "secrets")
            return cur.rowcount > 0

    # ------------------------------------------------------------------ zone tokens

    def add_zone_token(
        self, token_id: str, zone: str, key_name: str, issued: str, expires: str
    ) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO zone_tokens (id, zone, key_name, issued_at, expires_at) "
                "VALUES (%s,%s,%s,%s,%s)",
                (token_id, zone, key_name, issued, expires),
            )

    def revoke_zone_token(self, token_id: str, now: str) -> dict[str, str] | None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE zone_tokens SET revoked_at=%s WHERE id=%s AND revoked_at=''",
                (now, token_id),
            )
            self._notify(conn, "secrets")
            rows = self._token_rows(conn, "WHERE id=%s", (token_id,))
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
        with self.db.read() as conn:
            return {
                n: s for n, s in conn.execute("SELECT name, status FROM zone_status ORDER BY name")
            }

    def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        """Saved unless the stored status describes a newer stream (a later ``connected_at``):
        with several instances, one whose stream of a zone ended must not overwrite the
        status of the instance that took the zone's new stream."""
        with self.db.write() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO zone_status VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET status=EXCLUDED.status "
                "WHERE "
                + _CONNECTED_AT.format("EXCLUDED")
                + " >= "
                + _CONNECTED_AT.format("zone_status"),
                sorted(statuses.items()),
            )
