"""The PostgreSQL database: connecting, the versioned schema, transactions, meta, errors.

One store lives in one PostgreSQL schema (a namespace inside a database), so a global and
its zones may share one server, each in a schema of its own. Connections come from a
psycopg pool; each sets ``search_path`` to the store's schema. The password is never part
of the URL the store logs: it comes from the URL itself or from a password file, and
``location`` names host, port, database and schema only.

Several control-plane instances may share one store. Every write transaction starts by
taking a transaction-level advisory lock on the store (``pg_advisory_xact_lock``), held
until it commits or rolls back: writers run one at a time across every instance, so the
revision a write reads from ``meta`` and the one it commits are the head at its commit, and
revisions are gap-free and in commit order (a sequence gives neither: a value taken by a
transaction that rolls back is lost, and a later value may commit first). Reads never take
the lock; a read of several statements runs in one REPEATABLE READ snapshot.

The schema is created and migrated at open, under another advisory lock, so two instances
starting at once on an empty database make one schema and one store id. ``meta`` records
the schema version; a store made by a newer release is refused rather than misread, and an
older one is migrated in the opening transaction (version 3: row digests cover ``wire``,
existing rows re-digested; version 4: change-log entries carry a digest).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from kds.errors import StoreError, StoreFull, StoreUnavailable
from kds.store._changelog import digest_entries
from kds.store._marker import held_store, write_marker
from kds.store._rows import (
    COLS,
    DIGEST,
    Conn,
    DamagedRow,
    get_meta,
    redigested,
    row_digest,
    set_meta,
)
from kds.store.pg_target import PgTarget
from kds.store.postgres._refused import Diagnosis, refusal

__all__ = [
    "LOCK_LEADER",
    "LOCK_WRITE",
    "SCHEMA_VERSION",
    "Database",
    "PgConn",
    "PgTarget",
    "connection_kwargs",
    "connection_lost",
    "first_line",
    "get_meta",
    "set_meta",
]

# Advisory lock purposes; the other half of each lock's key is the store's schema.
LOCK_WRITE = 1  # every write transaction
LOCK_SCHEMA = 2  # creating or migrating the schema at open
LOCK_LEADER = 3  # a zone's stream to global: held by its leader instance (session lock)


def _digest_wire(conn: PgConn) -> None:
    """Row digests cover ``wire`` too (kds.store._rows, format 2): every row whose digest
    still matches its columns without wire is re-digested; a row that did not match stays
    damaged."""
    rows = conn.execute(f"SELECT ARRAY[kind, mesh, name, origin], {COLS} FROM resources").fetchall()
    conn.executemany(
        "UPDATE resources SET digest=? WHERE kind=? AND mesh=? AND name=? AND origin=?",
        [(digest, *where) for digest, where in redigested(rows)],
    )


def _digest_log(conn: PgConn) -> None:
    """Change-log entries carry a digest (kds.store._rows, format 3): the column, and the
    digest of every entry already there."""
    conn.execute("ALTER TABLE changelog ADD COLUMN IF NOT EXISTS digest BYTEA")
    digest_entries(conn)


# Migrations by the version they bring the schema to; ``meta.schema_version`` says which ran.
# SQL, or a function run on the migrating transaction's connection.
_MIGRATIONS: dict[int, str | Callable[[PgConn], None]] = {
    1: """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    mesh TEXT NOT NULL,
    name TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('global', 'zone')),
    data BYTEA NOT NULL,
    labels TEXT NOT NULL,
    spec TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    modification_time TEXT NOT NULL,
    version BIGINT NOT NULL,
    sealed TEXT NOT NULL DEFAULT '',
    digest BYTEA NOT NULL,
    wire BYTEA,
    sync_gen BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, mesh, name, origin)
);
CREATE INDEX IF NOT EXISTS resources_by_mesh ON resources (mesh, kind);
CREATE TABLE IF NOT EXISTS changelog (
    revision BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    mesh TEXT NOT NULL,
    name TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    change BYTEA NOT NULL,
    chain BYTEA NOT NULL,
    committed_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    sealed TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS internal_secrets (
    name TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    created TEXT NOT NULL,
    sealed TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS zone_tokens (
    id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    key_name TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS zone_status (name TEXT PRIMARY KEY, status TEXT NOT NULL);
""",
    2: """
CREATE TABLE IF NOT EXISTS zone_events (
    id BIGSERIAL PRIMARY KEY,
    zone TEXT NOT NULL,
    kind TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS zone_events_by_zone ON zone_events (zone, kind, id);
""",
    3: _digest_wire,
    4: _digest_log,
}
SCHEMA_VERSION = max(_MIGRATIONS)

# How long the pool keeps trying to replace a broken connection before giving it up (a
# call that needs one then asks for a new one): short, so a server that is back is used soon.
RECONNECT_S = 10.0

# How long a call waits for a pooled connection: while the server answers, long enough to ride
# out every connection being busy; while the last call found it away, short, so requests
# queued on the store's one writer thread each fail fast (503) instead of each waiting the
# full wait in turn, and a server that is back is still found (a local connect takes ms).
CONNECTION_WAIT_S = 5.0
AWAY_WAIT_S = 0.5

# How every connection to PostgreSQL notices a server that stopped answering without closing
# anything (a network partition, a host gone, a firewall dropping packets): without these a
# query on such a connection waits for the kernel to give up, about 15 minutes, holding the
# store's writer thread, every API write queued behind it, and the daemon's shutdown.
# tcp_user_timeout: data sent and not acknowledged for 5 s fails the connection (a live
# server's kernel acknowledges at once, however busy the server is); keepalives: a connection
# waiting for an answer or a notification is probed after 5 s of silence and fails after 5
# unanswered probes a second apart. A parameter the URL sets wins over these.
CONNECTION_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 5000,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 5,
}


def connection_kwargs(target: PgTarget, **kwargs: Any) -> dict[str, Any]:
    """psycopg.connect's keyword arguments for ``target``: ``kwargs``, the password, and each
    of CONNECTION_DEFAULTS the URL does not set itself."""
    try:
        in_url = conninfo_to_dict(target.url)
    except psycopg.ProgrammingError:
        in_url = {}  # connecting reports the bad URL
    out = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in in_url}
    out["application_name"] = target.application
    if target.password is not None:
        out["password"] = target.password
    return {**out, **kwargs}


# psycopg's pool reports each failed connection attempt through the logging module, in its
# own format, while the server is away: the listener (kds.store.postgres._listen) reports an
# outage once, in the daemon's log format, and calls that fail raise StoreUnavailable.
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)


def lock_key(schema: str) -> int:
    """The advisory lock namespace of one store: 32 bits of its schema name's hash."""
    return int.from_bytes(
        hashlib.blake2b(schema.encode(), digest_size=4).digest(), "big", signed=True
    )


def describe(url: str, schema: str) -> str:
    """host:port/database and schema, for logs and errors: never the password."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return f"postgresql (unparsable URL) schema {schema}"
    host = d.get("host") or d.get("hostaddr") or "localhost"
    return f"postgresql://{host}:{d.get('port') or 5432}/{d.get('dbname') or ''} schema {schema}"


@functools.lru_cache(maxsize=512)
def _paramstyle(query: str) -> str:
    """The shared engines' SQL (``?`` placeholders) in psycopg's style (``%s``); a literal
    ``%`` is doubled, as psycopg reads it as the start of a placeholder."""
    return query.replace("%", "%%").replace("?", "%s")


class PgConn:
    """A psycopg connection taking the shared engines' SQL (kds.store._rows.Conn)."""

    def __init__(self, raw: psycopg.Connection[Any]):
        self.raw = raw

    def execute(self, query: str, params: Any = None, /) -> psycopg.Cursor[Any]:
        return self.raw.execute(_paramstyle(query), params)

    def executemany(self, query: str, params: Iterable[Any], /) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(_paramstyle(query), list(params))


# A zone status's connected_at (globalcp.zones.ZoneState, JSON): the stream it describes.
_CONNECTED_AT = "COALESCE(({0}.status::jsonb->>'connected_at')::float8, 0)"


class Database:
    """One store's schema on a PostgreSQL server: a connection pool and its transactions
    (kds.store._rows.Db)."""

    backend: ClassVar[str] = "postgres"
    NO_LIMIT: ClassVar[int | None] = None
    CONTAINS: ClassVar[str] = "strpos({}, ?) > 0"
    # Saved unless the stored status describes a newer stream (a later ``connected_at``):
    # with several instances, one whose stream of a zone ended must not overwrite the
    # status of the instance that took the zone's new stream.
    STATUS_UPSERT: ClassVar[str] = (
        "INSERT INTO zone_status VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET status=excluded.status WHERE "
        + _CONNECTED_AT.format("excluded")
        + " >= "
        + _CONNECTED_AT.format("zone_status")
    )

    def __init__(self, target: PgTarget, role: str):
        self.target = target
        self._local = threading.local()
        self._tx_serials = itertools.count(1)
        self.role = role
        self.location = describe(target.url, target.schema)
        self.lock = lock_key(target.schema)
        self._kwargs = connection_kwargs(target, autocommit=False)
        self._diagnosis = Diagnosis(target.url, self._kwargs, self.location)
        self.pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        # The last call found the server away (errors()); any call that succeeds clears it.
        self.away = False

    # ------------------------------------------------------------------ connections

    def connect(self) -> psycopg.Connection[Any]:
        """A connection of its own (not from the pool), search_path set; the caller closes it."""
        with self.errors():
            conn = psycopg.connect(self.target.url, **self._kwargs)
            self._configure(conn)
            return conn

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.target.schema)))
        # A write answered is flushed: a server, database or role set to synchronous_commit
        # off would lose acknowledged writes in a crash (stronger settings are kept).
        if conn.execute("SHOW synchronous_commit").fetchone() == ("off",):
            conn.execute("SET synchronous_commit TO on")
        conn.commit()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """PostgreSQL's errors as the store's: the server unreachable, its disk full, a login
        refused or a database missing (kds.store.postgres._refused). Records whether the
        server was reachable (``away``)."""
        try:
            yield
        except psycopg.errors.DiskFull as e:
            self.away = False
            raise StoreFull(
                f"PostgreSQL's disk is full: the write to {self.location} was not made; free "
                "space on the database server"
            ) from e
        except PoolTimeout as e:
            self.away = True
            if (refused := self._diagnosis.refused()) is not None:
                raise StoreUnavailable(
                    f"{refused} (a password file is read at start: restart after changing it)"
                ) from e
            raise StoreUnavailable(
                f"PostgreSQL at {self.location} is unreachable (no connection within the "
                "pool's timeout): nothing was written; the store retries as it comes back"
            ) from e
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            refused = refusal(e, self.target.url, self.location)
            if refused is not None:  # the server answered: a wrong login, no such database
                self.away = False
                raise refused from e
            self.away = connection_lost(e)
            failed = StoreUnavailable(
                f"PostgreSQL at {self.location} failed: {first_line(e)}; retry once it is "
                "back (a write cut off at its commit may have been made: read it back)"
            )
            failed.away = self.away
            raise failed from e
        except psycopg.Error as e:
            self.away = False
            raise StoreError(f"PostgreSQL at {self.location}: {first_line(e)}") from e
        self.away = False

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        assert self.pool is not None
        return self.pool.connection(timeout=AWAY_WAIT_S if self.away else CONNECTION_WAIT_S)

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[PgConn]:
        """One write transaction, serialized with every other writer of this store. Not
        ``durable``: committed without waiting for the server's WAL flush
        (``synchronous_commit=off`` for this transaction only)."""
        self._local.tx = next(self._tx_serials)
        try:
            with self.errors(), self._connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (self.lock, LOCK_WRITE))
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit TO OFF")
                yield PgConn(conn)
        finally:
            self._local.tx = 0

    def tx_serial(self) -> int:
        """A number naming this thread's write transaction in progress, never reused; 0
        outside one (kds.store._rows.Db)."""
        serial: int = getattr(self._local, "tx", 0)
        return serial

    @contextmanager
    def read(self, snapshot: bool = False) -> Iterator[PgConn]:
        """A read-only transaction; ``snapshot``: all of it sees one point in time."""
        with self.errors(), self._connection() as conn, conn.transaction():
            level = "REPEATABLE READ" if snapshot else "READ COMMITTED"
            conn.execute(f"SET TRANSACTION ISOLATION LEVEL {level} READ ONLY")
            yield PgConn(conn)

    def notify(self, conn: Conn, what: str) -> None:
        """Tell every instance listening on this store (kds.store.postgres._listen) that
        ``what`` changed; PostgreSQL delivers it when (and only if) the transaction commits."""
        conn.execute("SELECT pg_notify(?, ?)", (self.target.schema, what))

    def scan(self) -> list[DamagedRow]:
        """Every resources row whose digest does not match (PostgreSQL keeps text valid, so
        the key columns locate a damaged row)."""
        with self.read(snapshot=True) as conn:
            return [
                DamagedRow(0, r[0], r[1], r[2], r[3])
                for r in conn.execute(f"SELECT {COLS} FROM resources")
                if row_digest(r[:DIGEST]) != bytes(r[DIGEST])
            ]

    def delete_rows(self, conn: Conn, rows: Sequence[DamagedRow]) -> None:
        conn.executemany(
            "DELETE FROM resources WHERE kind=? AND mesh=? AND name=? AND origin=?",
            [(d.kind, d.mesh, d.name, d.origin) for d in rows],
        )

    def after_reseal(self) -> None:
        """Nothing: PostgreSQL's old row versions go with VACUUM, as with any update."""

    def open_failed(self, e: BaseException) -> BaseException | None:
        return None  # errors() already made the store's errors

    # ------------------------------------------------------------------ opening

    def open(self, new_store: bool = False) -> str:
        """Create or migrate the schema, check it belongs to this role; the store id."""
        conn = self.connect()
        try:
            with self.errors(), conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (self.lock, LOCK_SCHEMA))
                store_id = self._migrate(conn, new_store)
        finally:
            conn.close()
        if self.target.marker is not None:
            write_marker(self.target.marker, store_id)
        self.pool = ConnectionPool(
            self.target.url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=4,
            configure=self._configure,
            timeout=CONNECTION_WAIT_S,  # each call passes its own wait (_connection)
            reconnect_timeout=RECONNECT_S,
            name=f"kds-{self.role}",
            open=False,
        )
        self.pool.open(wait=False)
        return store_id

    def _migrate(self, raw: psycopg.Connection[Any], new_store: bool) -> str:
        schema = sql.Identifier(self.target.schema)
        raw.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        raw.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
        conn = PgConn(raw)
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema=? AND table_name='meta'",
            (self.target.schema,),
        ).fetchone()
        version = int(get_meta(conn, "schema_version", "0")) if exists else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.location} has schema version {version}, made by a newer kds-sync "
                f"(this one knows up to {SCHEMA_VERSION}): upgrade this instance"
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            step = _MIGRATIONS[v]
            if isinstance(step, str):
                raw.execute(step)
            else:
                step(conn)
            set_meta(conn, "schema_version", v)
        role = get_meta(conn, "role")
        if not role:
            self._check_marker(new_store)
            for key, value in (
                ("role", self.role),
                ("store_id", uuid.uuid4().hex),
                ("head", "0"),
                ("log_floor", "0"),
                ("chain", ""),
                ("floor_chain", ""),
            ):
                set_meta(conn, key, value)
        elif role != self.role:
            raise StoreError(
                f"store {self.location} belongs to a {role} control plane, not a {self.role} one"
            )
        return get_meta(conn, "store_id")

    def _check_marker(self, new_store: bool) -> None:
        marker = self.target.marker
        if marker is None or new_store or not marker.exists():
            return
        held = held_store(marker)
        raise StoreError(
            f"store {self.location} is empty, but {marker} says this instance used store "
            f"{held!r}: point --postgres-url and --postgres-schema at that store, restore it "
            f"from a backup, or start with --new-store (or remove {marker}) to accept a new "
            "empty store"
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close(timeout=1)


def connection_lost(e: psycopg.Error) -> bool:
    """Whether ``e`` says the server is away: no SQLSTATE (the connection broke or was
    refused), a connection exception (class 08) or the server shutting down (57P01-57P03);
    not a statement's error, such as a serialization failure."""
    state = e.sqlstate
    return state is None or state.startswith(("08", "57P"))


def first_line(e: BaseException) -> str:
    """An error's first line, bounded (the lines after it may quote a row's values)."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
