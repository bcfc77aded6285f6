"""The embedded store: SQLite in the data dir, WAL, synchronous=FULL.

Every write the API acknowledges is committed (and fsynced by the WAL) before the answer is
sent, so it survives a crash. A global write, its change-log entry and the new head revision
commit in one transaction; a zone applies a batch and records the applied revision in one.

Not thread-safe by itself: kds.store.AsyncStore gives it one writer thread and one reader
thread, each with its own connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import structlog

from kds import integrity, wire
from kds.crypto import DataCipher
from kds.errors import (
    InvalidReferences,
    KdsError,
    NotFound,
    ReadOnlySynced,
    StoreError,
)
from kds.model import Key, Kind, Resource
from kds.mtls import secret_refs
from kds.protocol.applier import DecodedBatch, Plan, ZoneView, plan_batch
from kds.protocol.records import next_chain
from kds.store.base import (
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    Row,
    Snapshot,
    SyncState,
    WriteResult,
    ZoneApplyResult,
    sort_records,
)
from kds.store.interface import OnCommit

__all__ = ["DEFAULT_LOG_SIZE", "SqliteStore"]

DEFAULT_LOG_SIZE = 10_000

log = structlog.get_logger("kds.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    mesh TEXT NOT NULL,
    name TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('global', 'zone')),
    data BLOB NOT NULL,
    labels TEXT NOT NULL,
    spec TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    modification_time TEXT NOT NULL,
    version INTEGER NOT NULL,
    wire BLOB,                       -- global: the encoded Change that put this state
    sync_gen INTEGER NOT NULL DEFAULT 0,  -- zone: snapshot generation that wrote it
    sealed TEXT NOT NULL DEFAULT '',  -- id of the key data and wire are encrypted with ('': none)
    PRIMARY KEY (kind, mesh, name, origin)
);
CREATE INDEX IF NOT EXISTS resources_by_mesh ON resources (mesh, kind);
CREATE TABLE IF NOT EXISTS changelog (
    revision INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    mesh TEXT NOT NULL,
    name TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    change BLOB NOT NULL,
    chain BLOB NOT NULL,             -- history chain at this revision (kds.protocol.records)
    committed_at REAL NOT NULL DEFAULT 0, -- wall-clock seconds (for zone lag in seconds)
    sealed TEXT NOT NULL DEFAULT ''       -- id of the key change is encrypted with ('': none)
);
CREATE TABLE IF NOT EXISTS internal_secrets (  -- global's own keys: never synced nor served
    name TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created TEXT NOT NULL,
    sealed TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS zone_tokens (  -- global: zone tokens issued (never the token itself)
    id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    key_name TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS zone_status (  -- global: each zone's sync status (globalcp.zones)
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL                -- JSON
);
"""

_COLS = (
    "kind, mesh, name, origin, data, labels, spec, creation_time, modification_time, version, "
    "sealed"
)


def _aad(table: str, kind: str, mesh: str, name: str, origin: str) -> bytes:
    """Where a sealed value lives: it opens only there."""
    return "\0".join((table, kind, mesh, name, origin)).encode()


def _row_to_resource(r: sqlite3.Row | tuple[Any, ...], data: bytes) -> Resource:
    return Resource(
        kind=Kind(r[0]),
        mesh=r[1],
        name=r[2],
        data=data,
        labels=json.loads(r[5]),
        spec=json.loads(r[6]),
        creation_time=r[7],
        modification_time=r[8],
        version=r[9],
    )


def _json_map(m: Any) -> str:
    return json.dumps(dict(m), sort_keys=True) if m else "{}"


def _row_values(r: Resource, origin: str, data: bytes, sealed: str) -> tuple[Any, ...]:
    """The values of _COLS for one row (``data`` as stored: sealed or not)."""
    return (
        str(r.kind),
        r.mesh,
        r.name,
        origin,
        data,
        _json_map(r.labels),
        _json_map(r.spec),
        r.creation_time,
        r.modification_time,
        r.version,
        sealed,
    )


class _TxView:
    """kds.integrity.TxView over the writing transaction's connection (effective rows)."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection):
        self._store = store
        self._conn = conn
        self._cache: dict[Key, Resource | None] = {}

    def get(self, key: Key) -> Resource | None:
        if key.kind is Kind.MESH and key in self._cache:
            return self._cache[key]
        rows = self._store._rows(self._conn, key)
        found = rows.get(ORIGIN_ZONE) or rows.get(ORIGIN_GLOBAL)
        if key.kind is Kind.MESH:
            self._cache[key] = found
        return found

    def secret_meshes(self, name: str) -> list[str]:
        cur = self._conn.execute(
            "SELECT DISTINCT mesh FROM resources WHERE kind='Secret' AND name=? ORDER BY mesh",
            (name,),
        )
        return [m for (m,) in cur]

    def secret_names(self, mesh: str) -> list[str]:
        cur = self._conn.execute(
            "SELECT DISTINCT name FROM resources WHERE kind='Secret' AND mesh=? ORDER BY name",
            (mesh,),
        )
        return [n for (n,) in cur]


class SqliteStore:
    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        role: Literal["global", "zone"],
        *,
        log_size: int = DEFAULT_LOG_SIZE,
        max_message_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        cipher: DataCipher | None = None,
        on_commit: OnCommit | None = None,
    ):
        self.role: Literal["global", "zone"] = role
        self.path = Path(path)
        self.log_size = log_size
        # Global: a Mesh and its mTLS backend secrets must fit one sync message together.
        self.max_message_bytes = max_message_bytes
        self.clock = clock  # wall-clock seconds, recorded with each change-log entry
        self.cipher = cipher  # encrypts secret data at rest (kds.crypto); None: plaintext
        # Called once per committed API write transaction with its changed results, in
        # revision order (writes are serialized), right after the commit, on this thread.
        # Global's daemon hands the change records to the hub with call_soon_threadsafe, so
        # no commit can be missed by the zones' fan-out and the hub's head only ever stops
        # at a transaction's end (never inside one); a zone's re-reads its conflicts.
        self._on_commit = on_commit
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self._store_id = self._open(role)
            self._reseal()
        except (sqlite3.Error, OSError) as e:
            self.close()
            raise StoreError(f"cannot open store {self.path}: {e}") from e
        except BaseException:
            self.close()
            raise

    def _open(self, role: str) -> str:
        fresh = not self.path.exists()
        conn = self._conn()
        if fresh:
            os.chmod(self.path, 0o600)
        conn.executescript(_SCHEMA)
        # Columns added after the first release: a store made before gets them here.
        for table, column, ddl in (
            ("changelog", "committed_at", "REAL NOT NULL DEFAULT 0"),
            ("changelog", "sealed", "TEXT NOT NULL DEFAULT ''"),
            ("resources", "sealed", "TEXT NOT NULL DEFAULT ''"),
            ("internal_secrets", "sealed", "TEXT NOT NULL DEFAULT ''"),
        ):
            if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
        with self._tx(conn):
            row = conn.execute("SELECT value FROM meta WHERE key='role'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('role', ?)", (role,))
                conn.execute("INSERT INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
                conn.execute("INSERT INTO meta VALUES ('head', '0')")
                conn.execute("INSERT INTO meta VALUES ('log_floor', '0')")
                conn.execute("INSERT INTO meta VALUES ('chain', '')")
                conn.execute("INSERT INTO meta VALUES ('floor_chain', '')")
            elif row[0] != role:
                raise StoreError(
                    f"store {self.path} belongs to a {row[0]} control plane, not a {role} one"
                )
        return self._meta(conn, "store_id")

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed, not left readable
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
        conn.execute(f"BEGIN {mode}")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    # ------------------------------------------------------------------ encryption at rest

    def _seal(self, plain: bytes, aad: bytes) -> tuple[bytes, str]:
        if self.cipher is None:
            return plain, ""
        return self.cipher.seal(plain, aad), self.cipher.current

    def _open_value(self, stored: bytes, sealed: str, aad: bytes) -> bytes:
        if not sealed:
            return stored
        if self.cipher is None:
            raise StoreError(
                f"store {self.path} holds encrypted values: give --encryption-key-file"
            )
        return self.cipher.open(stored, sealed, aad)

    def _resource(self, r: sqlite3.Row | tuple[Any, ...]) -> Resource:
        """A resources row (selected as _COLS) as a Resource, its data opened."""
        aad = _aad("data", r[0], r[1], r[2], r[3])
        return _row_to_resource(r, self._open_value(bytes(r[4]), r[10], aad))

    def _row_values(
        self, r: Resource, origin: str, wire_bytes: bytes | None, *extra: Any
    ) -> tuple[Any, ...]:
        """_COLS, wire and ``extra`` for one row, data and wire sealed with one key."""
        key = (str(r.kind), r.mesh, r.name, origin)
        data, sealed = self._seal(r.data, _aad("data", *key))
        if wire_bytes is not None:
            wire_bytes, _ = self._seal(wire_bytes, _aad("wire", *key))
        return (*_row_values(r, origin, data, sealed), wire_bytes, *extra)

    def _reseal(self) -> None:
        """At start: check every sealed value has its key, and re-seal with the current key
        every value sealed with another key or stored in plaintext (so enabling encryption,
        or rotating to a new first key, covers what is already stored)."""
        conn = self._conn()
        used = {
            row[0]
            for table in ("resources", "changelog", "internal_secrets")
            for row in conn.execute(f"SELECT DISTINCT sealed FROM {table}")
        } - {""}
        if self.cipher is None:
            if used:
                raise StoreError(
                    f"store {self.path} holds values encrypted with key(s) "
                    f"{', '.join(sorted(used))}: give --encryption-key-file"
                )
            return
        missing = used - self.cipher.key_ids
        if missing:
            raise StoreError(
                f"store {self.path} holds values encrypted with key(s) "
                f"{', '.join(sorted(missing))} that --encryption-key-file does not hold"
            )
        current = self.cipher.current
        with self._tx(conn):
            cur = conn.execute(f"SELECT {_COLS}, wire FROM resources WHERE sealed != ?", (current,))
            for r in cur.fetchall():
                res = self._resource(r)
                key = (r[0], r[1], r[2], r[3])
                plain_wire = (
                    None
                    if r[11] is None
                    else self._open_value(bytes(r[11]), r[10], _aad("wire", *key))
                )
                values = self._row_values(res, r[3], plain_wire)
                conn.execute(
                    "UPDATE resources SET data=?, sealed=?, wire=? "
                    "WHERE kind=? AND mesh=? AND name=? AND origin=?",
                    (values[4], values[10], values[11], *key),
                )
            cur = conn.execute(
                "SELECT revision, change, sealed FROM changelog WHERE sealed != ?", (current,)
            )
            for rev, change, sealed in cur.fetchall():
                aad = _aad("changelog", str(rev), "", "", "")
                stored, kid = self._seal(self._open_value(bytes(change), sealed, aad), aad)
                conn.execute(
                    "UPDATE changelog SET change=?, sealed=? WHERE revision=?", (stored, kid, rev)
                )
            cur = conn.execute(
                "SELECT name, data, sealed FROM internal_secrets WHERE sealed != ?", (current,)
            )
            for name, data, sealed in cur.fetchall():
                aad = _aad("internal", "", "", name, "")
                stored, kid = self._seal(self._open_value(bytes(data), sealed, aad), aad)
                conn.execute(
                    "UPDATE internal_secrets SET data=?, sealed=? WHERE name=?", (stored, kid, name)
                )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no old page lingers in the WAL

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str, default: str = "") -> str:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
        conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, str(value)),
        )

    @property
    def store_id(self) -> str:
        return self._store_id

    def close(self) -> None:
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        self._local = threading.local()

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )

    # ------------------------------------------------------------------ reads

    def _rows(self, conn: sqlite3.Connection, key: Key) -> dict[str, Resource]:
        cur = conn.execute(
            f"SELECT {_COLS} FROM resources WHERE kind=? AND mesh=? AND name=?",
            (str(key.kind), key.mesh, key.name),
        )
        return {r[3]: self._resource(r) for r in cur}

    def get(self, key: Key) -> Row | None:
        rows = self._rows(self._conn(), key)
        if ORIGIN_ZONE in rows:
            return Row(rows[ORIGIN_ZONE], ORIGIN_ZONE, shadows_synced=ORIGIN_GLOBAL in rows)
        if ORIGIN_GLOBAL in rows:
            return Row(rows[ORIGIN_GLOBAL], ORIGIN_GLOBAL)
        return None

    def list_rows(self, kind: Kind, mesh: str | None = None) -> list[Row]:
        return self.page(kind, mesh)[1]

    def page(
        self, kind: Kind, mesh: str | None = None, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Row]]:
        """(total, rows) of the effective view, ordered by mesh and name, paged in SQL: a
        zone-local row hides the synced copy of its key and is marked as shadowing it."""
        where = "r.kind=?"
        args: list[Any] = [str(kind)]
        if mesh is not None:
            where += " AND r.mesh=?"
            args.append(mesh)
        where += (
            " AND (r.origin='zone' OR NOT EXISTS (SELECT 1 FROM resources z WHERE"
            " z.kind=r.kind AND z.mesh=r.mesh AND z.name=r.name AND z.origin='zone'))"
        )
        cols = ", ".join(f"r.{c.strip()}" for c in _COLS.split(","))
        conn = self._conn()
        with self._tx(conn, "DEFERRED"):
            total = conn.execute(
                f"SELECT COUNT(*) FROM resources r WHERE {where}", args
            ).fetchone()[0]
            cur = conn.execute(
                f"SELECT {cols}, r.origin='zone' AND EXISTS (SELECT 1 FROM resources g WHERE"
                " g.kind=r.kind AND g.mesh=r.mesh AND g.name=r.name AND g.origin='global')"
                f" FROM resources r WHERE {where} ORDER BY r.mesh, r.name LIMIT ? OFFSET ?",
                [*args, -1 if limit is None else limit, offset],
            )
            rows = [Row(self._resource(r), r[3], shadows_synced=bool(r[-1])) for r in cur]
        return total, rows

    def conflicts(self) -> list[Key]:
        cur = self._conn().execute(
            "SELECT kind, mesh, name FROM resources GROUP BY kind, mesh, name "
            "HAVING COUNT(*) > 1 ORDER BY kind, mesh, name"
        )
        return [Key(Kind(k), m, n) for k, m, n in cur]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {str(k): {"global": 0, "zone": 0} for k in Kind}
        for kind, origin, n in self._conn().execute(
            "SELECT kind, origin, COUNT(*) FROM resources GROUP BY kind, origin"
        ):
            out[kind][origin] = n
        return out

    def _mesh_exists(self, conn: sqlite3.Connection, mesh: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM resources WHERE kind='Mesh' AND mesh='' AND name=? LIMIT 1", (mesh,)
            ).fetchone()
            is not None
        )

    def _secrets_in_mesh(self, conn: sqlite3.Connection, mesh: str) -> dict[str, int]:
        out: dict[str, int] = {ORIGIN_GLOBAL: 0, ORIGIN_ZONE: 0}
        for origin, n in conn.execute(
            "SELECT origin, COUNT(*) FROM resources WHERE kind='Secret' AND mesh=? GROUP BY origin",
            (mesh,),
        ):
            out[origin] = n
        return out

    # ------------------------------------------------------------------ API writes

    def put(self, resource: Resource, now: str) -> WriteResult:
        """Write one resource; builtin CA secrets it needs are in ``result.also``."""
        results = self.put_many([resource], now)
        return replace(results[0], also=tuple(results[1:]))

    def put_many(self, resources: Sequence[Resource], now: str) -> list[WriteResult]:
        """Write all resources in one transaction: all of them, or none.

        A failure raises the error of the first resource that failed, with its position in
        ``item_index``; nothing is written. On global each changed resource still gets its
        own revision (so zones see ordinary changes), all committed at once. Builtin CA
        secrets generated for the Meshes written follow the results of ``resources``. The
        mTLS rules (kds.integrity) are checked on the transaction's final state: a Mesh and
        the secrets it uses may come in any order.
        """
        conn = self._conn()
        results = []
        with self._tx(conn):
            for i, resource in enumerate(resources):
                try:
                    results.append(self._put(conn, resource, now))
                except KdsError as e:
                    e.item_index = i
                    raise
            results += self._after_puts(conn, resources, now)
        return self._committed(results)

    def _after_puts(
        self, conn: sqlite3.Connection, resources: Sequence[Resource], now: str
    ) -> list[WriteResult]:
        view = _TxView(self, conn)
        generated = []
        for res in resources:
            if res.kind is Kind.MESH and res.spec:
                for cert, key in integrity.builtin_cas_to_generate(res, view, now):
                    generated += [self._put(conn, cert, now), self._put(conn, key, now)]
        problems = integrity.check_written(view, resources)
        if not problems and self.role == "global" and self.max_message_bytes:
            problems = integrity.check_unit_sizes(view, resources, self.max_message_bytes)
        if problems:
            e = InvalidReferences(problems.by_index)
            e.item_index = next(iter(e.by_index))
            raise e
        return generated

    def delete(self, key: Key) -> WriteResult:
        """Delete one resource; a Mesh's builtin CA secrets deleted with it are in ``also``."""
        conn = self._conn()
        with self._tx(conn):
            result = self._delete(conn, key)
        self._committed([*result.also, result])
        return result

    def _committed(self, results: list[WriteResult]) -> list[WriteResult]:
        """Runs after the transaction committed, on the writing thread, in commit order."""
        changed = [r for r in results if r.changed]
        if self._on_commit is not None and changed:
            try:
                self._on_commit(changed)
            except Exception as e:  # the write is committed: a failed hook must not undo it
                log.error(
                    "on_commit hook failed",
                    error_type=type(e).__name__,
                    stack="".join(traceback.format_tb(e.__traceback__)),
                )
        return results

    def _put(self, conn: sqlite3.Connection, resource: Resource, now: str) -> WriteResult:
        rows = self._rows(conn, resource.key)
        if self.role == "zone":
            if ORIGIN_GLOBAL in rows and ORIGIN_ZONE not in rows:
                raise ReadOnlySynced(
                    f"{resource.key} is synced from global and read-only on this zone: "
                    "change it on global"
                )
            origin = ORIGIN_ZONE
        else:
            origin = ORIGIN_GLOBAL
        old = rows.get(origin)
        if resource.kind is Kind.SECRET and not self._mesh_exists(conn, resource.mesh):
            raise NotFound(f"mesh {resource.mesh!r} does not exist")
        if old is not None and old.same_content(resource):
            return WriteResult(old, changed=False, record=None)
        revision = int(self._meta(conn, "head")) + 1 if self.role == "global" else 0
        stored = resource.with_meta(
            creation_time=old.creation_time if old else now,
            modification_time=now,
            version=revision if self.role == "global" else (old.version + 1 if old else 1),
        )
        record = None
        wire_bytes = None
        if self.role == "global":
            wire_bytes = wire.change_put(revision, stored)
            record = self._append_log(conn, revision, stored.key, False, wire_bytes)
        conn.execute(
            f"INSERT OR REPLACE INTO resources ({_COLS}, wire, sync_gen) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)",
            self._row_values(stored, origin, wire_bytes),
        )
        return WriteResult(stored, changed=True, record=record, created=old is None)

    def _delete(self, conn: sqlite3.Connection, key: Key) -> WriteResult:
        rows = self._rows(conn, key)
        origin = ORIGIN_ZONE if self.role == "zone" else ORIGIN_GLOBAL
        if origin not in rows:
            if ORIGIN_GLOBAL in rows:
                raise ReadOnlySynced(
                    f"{key} is synced from global and read-only on this zone: delete it on global"
                )
            raise NotFound(f"{key} not found")
        also: list[WriteResult] = []
        # On a zone, a local row that shadows a synced copy leaves that copy in its place.
        if not (self.role == "zone" and ORIGIN_GLOBAL in rows):
            for name in integrity.check_delete(_TxView(self, conn), key):
                secret = Key(Kind.SECRET, key.name, name)
                if origin in self._rows(conn, secret):
                    also.append(self._delete_row(conn, secret, origin))
        result = self._delete_row(conn, key, origin)
        return replace(result, also=tuple(also), previous=rows[origin])

    def _delete_row(self, conn: sqlite3.Connection, key: Key, origin: str) -> WriteResult:
        conn.execute(
            "DELETE FROM resources WHERE kind=? AND mesh=? AND name=? AND origin=?",
            (str(key.kind), key.mesh, key.name, origin),
        )
        record = None
        if self.role == "global":
            revision = int(self._meta(conn, "head")) + 1
            record = self._append_log(conn, revision, key, True, wire.change_delete(revision, key))
        return WriteResult(None, changed=True, record=record, deleted=key)

    def _append_log(
        self, conn: sqlite3.Connection, revision: int, key: Key, deleted: bool, change: bytes
    ) -> ChangeRecord:
        chain = next_chain(bytes.fromhex(self._meta(conn, "chain")), change)
        rec = ChangeRecord(revision, key, deleted, change, chain, self.clock())
        stored, sealed = self._seal(change, _aad("changelog", str(revision), "", "", ""))
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
        self._set_meta(conn, "head", revision)
        self._set_meta(conn, "chain", chain.hex())
        floor = revision - self.log_size
        if floor > int(self._meta(conn, "log_floor")):
            row = conn.execute("SELECT chain FROM changelog WHERE revision=?", (floor,)).fetchone()
            conn.execute("DELETE FROM changelog WHERE revision <= ?", (floor,))
            self._set_meta(conn, "log_floor", floor)
            self._set_meta(conn, "floor_chain", bytes(row[0]).hex() if row else "")
        return rec

    def chain_at(self, revision: int) -> bytes | None:
        """Global's history chain at ``revision``, or None when the log no longer knows it."""
        conn = self._conn()
        with self._tx(conn, "DEFERRED"):
            head, floor = int(self._meta(conn, "head")), int(self._meta(conn, "log_floor"))
            if revision == head:
                return bytes.fromhex(self._meta(conn, "chain"))
            if revision == floor:
                return bytes.fromhex(self._meta(conn, "floor_chain"))
            row = conn.execute(
                "SELECT chain FROM changelog WHERE revision=?", (revision,)
            ).fetchone()
            return bytes(row[0]) if row else None

    # ------------------------------------------------------------------ global sync reads

    def head(self) -> int:
        return int(self._meta(self._conn(), "head"))

    def log_floor(self) -> int:
        return int(self._meta(self._conn(), "log_floor"))

    def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        cur = self._conn().execute(
            "SELECT revision, kind, mesh, name, deleted, change, chain, committed_at, sealed "
            "FROM changelog WHERE revision > ? AND revision <= ? ORDER BY revision",
            (revision, upto),
        )
        return [
            ChangeRecord(
                rev,
                Key(Kind(k), m, n),
                bool(d),
                self._open_value(bytes(c), sl, _aad("changelog", str(rev), "", "", "")),
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
            self._conn()
            .execute(
                "SELECT committed_at FROM changelog WHERE revision >= ? AND committed_at > 0 "
                "ORDER BY revision LIMIT 1",
                (revision,),
            )
            .fetchone()
        )
        return float(row[0]) if row else None

    # ------------------------------------------------------------------ global: internal secrets

    def internal_secrets(self, prefix: str = "") -> dict[str, bytes]:
        """Global's internal secrets (CA key, token signing keys) whose name starts with
        ``prefix``. They live apart from resources: never in the change log, never synced,
        never served by the API."""
        cur = self._conn().execute(
            "SELECT name, data, sealed FROM internal_secrets WHERE substr(name, 1, ?) = ? "
            "ORDER BY name",
            (len(prefix), prefix),
        )
        return {
            name: self._open_value(bytes(data), sl, _aad("internal", "", "", name, ""))
            for name, data, sl in cur
        }

    def put_internal_secret(self, name: str, data: bytes, now: str) -> None:
        conn = self._conn()
        with self._tx(conn):
            stored, sealed = self._seal(data, _aad("internal", "", "", name, ""))
            conn.execute(
                "INSERT INTO internal_secrets (name, data, created, sealed) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET data=excluded.data, sealed=excluded.sealed",
                (name, stored, now, sealed),
            )

    def delete_internal_secret(self, name: str) -> bool:
        conn = self._conn()
        with self._tx(conn):
            return conn.execute("DELETE FROM internal_secrets WHERE name=?", (name,)).rowcount > 0

    # ------------------------------------------------------------------ global: zone tokens

    def add_zone_token(
        self, token_id: str, zone: str, key_name: str, issued: str, expires: str
    ) -> None:
        conn = self._conn()
        with self._tx(conn):
            conn.execute(
                "INSERT INTO zone_tokens (id, zone, key_name, issued_at, expires_at) "
                "VALUES (?,?,?,?,?)",
                (token_id, zone, key_name, issued, expires),
            )

    def revoke_zone_token(self, token_id: str, now: str) -> dict[str, str] | None:
        """Mark a token revoked (once); None when no such token was issued."""
        conn = self._conn()
        with self._tx(conn):
            conn.execute(
                "UPDATE zone_tokens SET revoked_at=? WHERE id=? AND revoked_at=''", (now, token_id)
            )
            rows = self._token_rows(conn, "WHERE id=?", (token_id,))
        return rows[0] if rows else None

    def zone_tokens(self) -> list[dict[str, str]]:
        return self._token_rows(self._conn(), "ORDER BY issued_at, id", ())

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

    # ------------------------------------------------------------------ global: zone status

    def zone_statuses(self) -> dict[str, str]:
        """Every zone's last saved status (JSON text), by zone name."""
        return dict(self._conn().execute("SELECT name, status FROM zone_status ORDER BY name"))

    def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        """Save the given zones' statuses (JSON text) in one transaction."""
        conn = self._conn()
        with self._tx(conn):
            conn.executemany(
                "INSERT INTO zone_status VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET status=excluded.status",
                sorted(statuses.items()),
            )

    def snapshot(self) -> Snapshot:
        conn = self._conn()
        with self._tx(conn, "DEFERRED"):
            head = int(self._meta(conn, "head"))
            chain = bytes.fromhex(self._meta(conn, "chain"))
            cur = conn.execute(
                "SELECT version, kind, mesh, name, wire, sealed FROM resources "
                "WHERE origin='global'"
            )
            records = [
                ChangeRecord(
                    v,
                    Key(Kind(k), m, n),
                    False,
                    self._open_value(bytes(w), sl, _aad("wire", k, m, n, ORIGIN_GLOBAL)),
                )
                for v, k, m, n, w, sl in cur
            ]
        return Snapshot(head, self._store_id, sort_records(records), chain)

    # ------------------------------------------------------------------ zone sync writes

    def sync_state(self) -> SyncState:
        conn = self._conn()
        return SyncState(
            self._meta(conn, "synced_store_id"),
            int(self._meta(conn, "applied_revision", "0")),
            self._meta(conn, "applied_at"),
            bytes.fromhex(self._meta(conn, "applied_chain")),
        )

    def apply_batch(self, batch: DecodedBatch, global_store_id: str, now: str) -> ZoneApplyResult:
        """Plan (kds.protocol.applier) and apply one batch in one transaction.

        Committed without an fsync (synchronous=NORMAL, for this transaction only): a power
        loss may take the last batches, but the applied revision goes with them and global
        resends them at the next connection. Zone-local API writes keep FULL (issue 7: a
        50-zone fleet spent 30% of its time in this fsync)."""
        conn = self._conn()
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._apply_batch(conn, batch, global_store_id, now)
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    def _apply_batch(
        self, conn: sqlite3.Connection, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        with self._tx(conn):
            gen = self._snapshot_gen(conn, batch, global_store_id) if batch.snapshot else 0
            view = self._zone_view(conn, batch, gen)
            plan = plan_batch(batch, view)
            self._execute(conn, plan, gen)
            applied = int(self._meta(conn, "applied_revision", "0"))
            if plan.record_revision is not None:
                applied = plan.record_revision
                self._set_meta(conn, "applied_revision", applied)
                self._set_meta(conn, "synced_store_id", global_store_id)
                self._set_meta(conn, "applied_chain", batch.chain.hex())
                self._set_meta(conn, "applied_at", now)
        return ZoneApplyResult(
            applied_revision=applied,
            rejected=plan.rejected,
            new_conflicts=plan.new_conflicts,
            resolved_conflicts=plan.resolved_conflicts,
            removed_stale=plan.stale_removed,
        )

    def _snapshot_gen(self, conn: sqlite3.Connection, batch: DecodedBatch, store_id: str) -> int:
        """The generation stamped by every part of one snapshot; a new snapshot gets a new one.

        A counter, not the revision: a snapshot from a new global store may share the revision
        (0 for an empty store) with rows written earlier, and those must still go stale.
        """
        tag = f"{store_id}@{batch.revision}"
        gen = int(self._meta(conn, "snapshot_gen", "0"))
        if self._meta(conn, "snapshot_tag") != tag:
            gen += 1
            self._set_meta(conn, "snapshot_gen", gen)
            self._set_meta(conn, "snapshot_tag", tag)
        return gen

    def _zone_view(self, conn: sqlite3.Connection, batch: DecodedBatch, gen: int) -> ZoneView:
        keys = {c.key for c in batch.changes if c.key is not None}
        stale: list[Key] = []
        if batch.snapshot and batch.final:
            cur = conn.execute(
                "SELECT kind, mesh, name FROM resources WHERE origin='global' AND sync_gen != ?",
                (gen,),
            )
            stale = [k for k in (Key(Kind(a), b, c) for a, b, c in cur) if k not in keys]
        local: set[Key] = set()
        synced: set[Key] = set()
        for key in keys | set(stale):
            rows = self._rows(conn, key)
            if ORIGIN_ZONE in rows:
                local.add(key)
            if ORIGIN_GLOBAL in rows:
                synced.add(key)
        local_meshes: set[str] = set()
        synced_meshes: set[str] = set()
        for name, origin in conn.execute("SELECT name, origin FROM resources WHERE kind='Mesh'"):
            (local_meshes if origin == ORIGIN_ZONE else synced_meshes).add(name)
        deleted_meshes = {
            k.name
            for k in (set(stale) | {c.key for c in batch.changes if c.deleted and c.key})
            if k.kind is Kind.MESH
        }
        per_mesh = {}
        backend_secrets = {}
        for m in deleted_meshes:
            n = self._secrets_in_mesh(conn, m)
            per_mesh[m] = (n[ORIGIN_ZONE], n[ORIGIN_GLOBAL])
            synced_mesh = self._rows(conn, Key(Kind.MESH, "", m)).get(ORIGIN_GLOBAL)
            if synced_mesh is not None:
                refs = secret_refs(m, synced_mesh.spec)
                backend_secrets[m] = frozenset(r.secret for r in refs)
        return ZoneView(
            applied_revision=int(self._meta(conn, "applied_revision", "0")),
            local=frozenset(local),
            synced=frozenset(synced),
            local_meshes=frozenset(local_meshes),
            synced_meshes=frozenset(synced_meshes),
            secrets_per_mesh=per_mesh,
            backend_secrets=backend_secrets,
            stale=tuple(stale),
        )

    def _execute(self, conn: sqlite3.Connection, plan: Plan, gen: int) -> None:
        for key in plan.deletes:
            conn.execute(
                "DELETE FROM resources WHERE kind=? AND mesh=? AND name=? AND origin='global'",
                (str(key.kind), key.mesh, key.name),
            )
        conn.executemany(
            f"INSERT OR REPLACE INTO resources ({_COLS}, wire, sync_gen) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [self._row_values(r, ORIGIN_GLOBAL, None, gen) for r in plan.puts],
        )
