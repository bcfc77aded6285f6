"""The SQLite file: schema, column migration, a connection per thread, transactions, meta.

Every connection runs in WAL mode with synchronous=FULL, so a committed transaction is on
disk before the call returns, and with secure_delete, so freed pages are zeroed rather than
left readable. Each thread that touches the store gets its own connection (the async stores
use one writer thread and one reader thread). The meta table holds the store's role, its
id and the small per-store values (head, log floor, chains, a zone's applied revision).

Each resources row carries a digest of its stored columns (kds.store._rows,
kds.store.sqlite._digest). Meta records the store's format (``schema_version``, absent
before format 2): a store of a newer format is refused, an older one is migrated at open in
the opening transaction; the role is recorded with the format, so that a release from
before formats were recorded refuses the store instead of misreading it. Beside
the file, a marker (``<file>.id``) holds the store id: a store file found missing or empty
where a marker says one was is refused, not silently replaced by a new empty store. A write
that fails because the disk is full raises StoreFull.
"""

from __future__ import annotations

import errno
import itertools
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from kds.errors import StoreError, StoreFull
from kds.store._changelog import digest_entries
from kds.store._marker import held_store, write_marker
from kds.store._rows import COLS, DIGEST, ROW_FORMAT, Conn, DamagedRow, get_meta, set_meta
from kds.store.sqlite._checkpoint import Checkpointer
from kds.store.sqlite._digest import add_missing_digests, scan, to_format_2

__all__ = [
    "COLS",
    "DIGEST",
    "Database",
    "ReaderBusy",
    "WriterBusy",
    "get_meta",
    "is_disk_full",
    "is_malformed",
    "set_meta",
]

# How long a write waits for another connection's write lock before it fails.
BUSY_TIMEOUT_MS = 10_000
# The WAL's size on disk once it starts over after growing past it. Under steady small writes
# it stays under 8 MB (SQLite's own checkpoint runs at about 1,000 pages), so this only cuts
# back what a large transaction grew.
WAL_SIZE_LIMIT = 16 * 1024 * 1024


class WriterBusy(Exception):
    """Database.write_now: another connection holds the write lock; nothing was done."""


class ReaderBusy(Exception):
    """Database.read_now: the file was locked for a moment no reader may pass (a WAL reset or
    recovery by another connection); nothing was read."""


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
    sealed TEXT NOT NULL DEFAULT '',      -- id of the key change is encrypted with ('': none)
    digest BLOB                           -- of the columns before it (kds.store._rows)
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
CREATE TABLE IF NOT EXISTS zone_events (  -- global: each zone's status history (globalcp.history)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    zone TEXT NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    data TEXT NOT NULL                  -- JSON
);
CREATE INDEX IF NOT EXISTS zone_events_by_zone ON zone_events (zone, kind, id);
"""

# Columns added after the first release: a store made before gets them when opened.
_ADDED_COLUMNS = (
    ("changelog", "committed_at", "REAL NOT NULL DEFAULT 0"),
    ("changelog", "sealed", "TEXT NOT NULL DEFAULT ''"),
    ("resources", "sealed", "TEXT NOT NULL DEFAULT ''"),
    ("internal_secrets", "sealed", "TEXT NOT NULL DEFAULT ''"),
    ("resources", "digest", "BLOB NOT NULL DEFAULT x''"),  # kds.store.sqlite._digest
    ("changelog", "digest", "BLOB"),  # format 3 (kds.store._changelog.digest_entries)
)


def is_malformed(e: BaseException) -> bool:
    """Whether ``e`` says SQLite finds the file itself damaged (not a database, or a
    malformed page), as opposed to one row whose digest does not match."""
    if not isinstance(e, sqlite3.DatabaseError):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    text = str(e)
    return (
        code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
        or "malformed" in text
        or "not a database" in text
    )


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk (or the file's size limit) is full."""
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "database or disk is full" in str(e)
        )
    return isinstance(e, OSError) and e.errno == errno.ENOSPC


def _role_value(role: str) -> str:
    """Meta's role of a store of ROW_FORMAT. Releases before format 2 read no format: they
    compare this value with their role and refuse the store when it differs, quoting it
    ("store PATH belongs to a global (store format 2, made by a newer kds-sync) control
    plane, not a global one"), rather than misread digests they cannot check."""
    return f"{role} (store format {ROW_FORMAT}, made by a newer kds-sync)"


class Database:
    """One store file of ``role``: its connections (one per thread) and its transactions
    (kds.store._rows.Db)."""

    backend: ClassVar[str] = "sqlite"
    NO_LIMIT: ClassVar[int | None] = -1
    CONTAINS: ClassVar[str] = "instr({}, ?) > 0"
    STATUS_UPSERT: ClassVar[str] = (
        "INSERT INTO zone_status VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET status=excluded.status"
    )

    def __init__(self, path: str | Path, role: str):
        self.path = Path(path)
        self.location = str(self.path)
        self.role = role
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._tx_serials = itertools.count(1)
        self.marker = self.path.with_name(self.path.name + ".id")
        self.checkpointer = Checkpointer(self.path)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open("FULL", BUSY_TIMEOUT_MS)
        return conn

    def thread_conns(self) -> list[sqlite3.Connection]:
        """This thread's connections, opened on first use: ``conn``'s and ``write_now``'s."""
        return [self.conn(), self._now_conn()]

    def _now_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "now_conn", None)
        if conn is None:
            conn = self._local.now_conn = self._open("NORMAL", 0)
        return conn

    def _open(self, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        conn.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed, not left readable
        # A large transaction (a snapshot's part, an apply of many resources) grows the WAL
        # past its usual few MB; once the WAL starts over, it is cut back to this size rather
        # than keep that disk for as long as the store is open.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        with self._lock:
            self._conns.append(conn)
        return conn

    @contextmanager
    def tx(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
        self._local.tx = next(self._tx_serials)
        try:
            conn.execute(f"BEGIN {mode}")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
                if mode == "IMMEDIATE":
                    self.checkpointer.committed()
        except (sqlite3.Error, OSError) as e:
            if not is_disk_full(e):
                raise
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            whose = "the zone's" if self.role == "zone" else f"{self.role or 'the'}'s"
            raise StoreFull(
                f"{whose} disk is full: the write to store {self.path} was not made; free "
                "space on that disk"
            ) from e
        finally:
            self._local.tx = 0

    def tx_serial(self) -> int:
        """A number naming this thread's transaction in progress (``tx``), never reused; 0
        outside one. What a writer caches for one transaction is keyed by it, so nothing
        read in a transaction that rolled back outlives it."""
        serial: int = getattr(self._local, "tx", 0)
        return serial

    @contextmanager
    def read(self, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """This thread's connection; ``snapshot``: in a read transaction (one point in time)."""
        conn = self.conn()
        if not snapshot:
            yield conn
            return
        with self.tx(conn, "DEFERRED"):
            yield conn

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (IMMEDIATE: writers queue on the file's lock). Not ``durable``:
        committed with synchronous=NORMAL, for this transaction only (no fsync; a power loss
        may take it)."""
        conn = self.conn()
        if durable:
            with self.tx(conn):
                yield conn
            return
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.tx(conn):
                yield conn
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def write_now(self) -> Iterator[sqlite3.Connection]:
        """write(durable=False), begun only if no other connection holds the write lock: for
        a caller that must not wait (an event loop). Raises WriterBusy, having done nothing,
        if one does. Once begun nothing waits: in WAL mode only BEGIN IMMEDIATE waits for
        another writer. It writes on a connection of its own, opened with busy_timeout=0
        and synchronous=NORMAL, so a batch sets no PRAGMA (four statements of the ten a
        one-change batch ran)."""
        conn = self._now_conn()
        try:
            with self.tx(conn):
                yield conn
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            raise WriterBusy(str(e)) from e  # rolled back by tx: nothing was written

    @contextmanager
    def read_now(self) -> Iterator[sqlite3.Connection]:
        """A connection for a caller that must not wait (an event loop): write_now's, with
        busy_timeout=0. Each statement outside a transaction reads one point in time, and in
        WAL mode a reader never waits for a writer; in the rare moment the file is locked
        against readers too, raises ReaderBusy, having read nothing, instead of waiting."""
        try:
            yield self._now_conn()
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            raise ReaderBusy(str(e)) from e

    def notify(self, conn: Conn, what: str) -> None:
        """No other instance shares a SQLite file: nobody to tell."""

    def scan(self) -> list[DamagedRow]:
        return scan(self.conn())

    def delete_rows(self, conn: Conn, rows: Sequence[DamagedRow]) -> None:
        # By rowid: a damaged row's key columns may be damaged too.
        conn.executemany("DELETE FROM resources WHERE rowid=?", [(d.rowid,) for d in rows])

    def after_reseal(self) -> None:
        """No old page (a value before it was sealed) lingers in the WAL: copy it all into
        the file and empty it. Busy while the checkpoint thread copies: asked again."""
        for _ in range(500):
            busy = self.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return
            time.sleep(0.01)
        raise StoreError(f"store {self.path}: the WAL could not be emptied after re-sealing")

    def open_failed(self, e: BaseException) -> BaseException | None:
        if not isinstance(e, sqlite3.Error | OSError):
            return None
        if is_malformed(e):
            return StoreError(self._malformed(e))
        return StoreError(f"cannot open store {self.path}: {e}")

    def _malformed(self, e: BaseException) -> str:
        """What to do about a file SQLite itself finds damaged (beyond one row's digest):
        no row can be trusted or repaired in place, so the daemon refuses to start."""
        head = f"store {self.path} is damaged beyond repair by row ({e}): "
        if self.role == "zone":
            return head + (
                f"move it aside (mv {self.path} {self.path}.damaged) and start again with "
                "--new-store: the zone takes a full snapshot from global; its zone-local "
                "resources come back only from a backup"
            )
        return head + (
            f"restore it from a backup (or recover what SQLite can: sqlite3 {self.path} "
            "'.recover' | sqlite3 NEW.db); --new-store starts an empty store instead, and "
            "every zone then follows it"
        )

    def open(self, new_store: bool = False) -> str:
        """Create or migrate the schema, check the file belongs to this role; the store id.

        Refused (StoreError) when the file is missing or empty but its marker says this data
        dir held a store, unless ``new_store``: an operator accepts a new empty store."""
        role = self.role
        fresh = not self.path.exists()
        self._check_marker(fresh or self.path.stat().st_size == 0, new_store)
        conn = self.conn()
        if fresh:
            os.chmod(self.path, 0o600)
        conn.executescript(_SCHEMA)
        for table, column, ddl in _ADDED_COLUMNS:
            if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
        with self.tx(conn):
            row = conn.execute("SELECT value FROM meta WHERE key='role'").fetchone()
            if row is None:
                for key, value in (
                    ("role", _role_value(role)),
                    ("store_id", uuid.uuid4().hex),
                    ("head", "0"),
                    ("log_floor", "0"),
                    ("chain", ""),
                    ("floor_chain", ""),
                    ("row_digests", "1"),
                    ("schema_version", ROW_FORMAT),
                ):
                    set_meta(conn, key, value)
            else:
                self._migrate(conn, row[0])
            store_id = get_meta(conn, "store_id")
        write_marker(self.marker, store_id)
        return store_id

    def _migrate(self, conn: sqlite3.Connection, held_role: str) -> None:
        """An existing store: check its role and format, and bring it to ROW_FORMAT, in the
        opening transaction (it happens whole or not at all)."""
        if held_role.split(" ", 1)[0] != self.role:
            raise StoreError(
                f"store {self.path} belongs to a {held_role.split(' ', 1)[0]} control plane, "
                f"not a {self.role} one"
            )
        version = int(get_meta(conn, "schema_version", "1"))
        if version > ROW_FORMAT:
            raise StoreError(
                f"store {self.path} has store format {version}, made by a newer kds-sync "
                f"(this one knows up to {ROW_FORMAT}): upgrade this kds-sync"
            )
        if get_meta(conn, "row_digests") != "1":  # a store made before row digests
            add_missing_digests(conn)
            set_meta(conn, "row_digests", "1")
        elif version < 2:  # row digests that did not cover wire
            to_format_2(conn)
        if version < 3:  # change-log entries without digests
            digest_entries(conn)
        if version < ROW_FORMAT:
            set_meta(conn, "schema_version", ROW_FORMAT)
            set_meta(conn, "role", _role_value(self.role))

    def _check_marker(self, empty: bool, new_store: bool) -> None:
        if not empty or not self.marker.exists() or new_store:
            return
        held = held_store(self.marker)
        what = "missing" if not self.path.exists() else "empty"
        loses = (
            "every zone would take a snapshot of the empty store and delete what it synced"
            if self.role == "global"
            else "the zone-local resources would be gone and everything resynced"
        )
        raise StoreError(
            f"store {self.path} is {what}, but {self.marker} says this data dir held store "
            f"{held!r}: restore {self.path} from a backup, or start with --new-store (or "
            f"remove {self.marker}) to accept a new empty store ({loses})"
        )

    def close(self) -> None:
        self.checkpointer.stop()
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        self._local = threading.local()
        self.checkpointer.close()  # last: it drops the process's locks on the WAL index

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )
