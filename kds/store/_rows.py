"""What both backends store alike: the resources row's columns and digest, meta, and the
SQL both dialects accept.

The shared engines (kds.store._engine, ._global, ._zone) write their SQL once, with ``?``
placeholders and only what SQLite and PostgreSQL both understand (``INSERT ... ON
CONFLICT ... DO UPDATE``, ``IN (?, ?)``); the PostgreSQL backend's connections turn ``?``
into psycopg's ``%s`` (kds.store.postgres._db.PgConn). The few points where the dialects
differ are attributes of each backend's Database (``NO_LIMIT``, ``STATUS_UPSERT``).

Each resources row carries a digest (BLAKE2b, 16 bytes) of its stored columns (the data and
global's encoded change, ``wire``, as stored, sealed or not), written with the row and checked whenever the row is read: a row
that does not match is damaged, and is never served as if it were right. The digest is not
a MAC: it catches damage (a disk, a bad copy), not a forger who rewrites the digest too;
encryption at rest (kds.store._sealing) authenticates sealed data.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from kds.model import Kind, Resource

__all__ = [
    "COLS",
    "COL_NAMES",
    "DIGEST",
    "LOG_COLS",
    "ROW_FORMAT",
    "UPSERT_RESOURCE",
    "WIRE",
    "Conn",
    "Cursor",
    "DamagedRow",
    "Db",
    "get_meta",
    "log_digest",
    "redigested",
    "row_digest",
    "row_digest_v1",
    "row_to_resource",
    "row_values",
    "set_meta",
]


class Cursor(Protocol):
    """What the engines use of a DB-API cursor (sqlite3's and psycopg's alike)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection in a transaction, taking ``?`` placeholders."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...


# The resources columns a Resource is read from and written to, in this order; the last,
# digest, is the digest of the twelve before it as stored (``wire`` included: the encoded
# change global sends every zone must not be damaged unnoticed either).
COLS = (
    "kind, mesh, name, origin, data, labels, spec, creation_time, modification_time, version, "
    "sealed, wire, digest"
)
COL_NAMES = [c.strip() for c in COLS.split(",")]
WIRE = 11  # wire's position in COLS (global: the encoded Change; a zone: NULL)
DIGEST = 12  # the digest's position in COLS

# The row format stores record (SQLite: meta ``schema_version``; PostgreSQL: schema versions
# 3 and 4): 2 is the digest over ``wire`` too (format 1 digested the columns before wire);
# 3: change-log entries carry a digest too (LOG_COLS).
ROW_FORMAT = 3

# The changelog columns an entry is read from and written to; the last, digest, is the
# digest of the ones before it as stored (log_digest), checked whenever an entry is read.
LOG_COLS = "revision, kind, mesh, name, deleted, change, chain, committed_at, sealed, digest"

# Insert or replace one resources row (COLS, sync_gen): SQLite and PostgreSQL alike.
UPSERT_RESOURCE = (
    f"INSERT INTO resources ({COLS}, sync_gen) VALUES ({', '.join(['?'] * 14)}) "
    "ON CONFLICT (kind, mesh, name, origin) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in [*COL_NAMES[4:], "sync_gen"])
)

_NULL = b"\xff\xff\xff\xff"


_BYTES_LIKE = (bytes, bytearray, memoryview)


def _digest(person: bytes, values: Sequence[Any]) -> bytes:
    # Each value length-prefixed (None as _NULL), hashed as one joined buffer: every row
    # written or read is digested, and hashing value by value with a type test each cost a
    # zone about 9 us per row (a third of applying 10,000 synced secrets).
    parts: list[bytes] = []
    add = parts.append
    for v in values:
        t = type(v)
        if t is str:
            b = v.encode("utf-8", "surrogatepass")
        elif t is bytes:
            b = v
        elif v is None:
            add(_NULL)
            continue
        elif isinstance(v, _BYTES_LIKE):
            b = bytes(v)
        elif isinstance(v, str):
            b = v.encode("utf-8", "surrogatepass")
        else:
            b = str(v).encode()
        add(len(b).to_bytes(4, "big"))
        add(b)
    return hashlib.blake2b(b"".join(parts), digest_size=16, person=person).digest()


def row_digest(values: Sequence[Any]) -> bytes:
    """The digest of one row's stored COLS values before the digest, ``wire`` included
    (text, integers and blobs alike: each as the bytes SQLite would give for it cast to a
    blob, so a scan can read raw bytes)."""
    return _digest(b"kds-row-v2", values)


def log_digest(values: Sequence[Any]) -> bytes:
    """The digest of one change-log entry's stored LOG_COLS values before the digest, as
    row_digest is of a row (``deleted`` as 0 or 1, which both backends' types give)."""
    rev, kind, mesh, name, deleted, *rest = values
    return _digest(b"kds-log-v1", (int(rev), kind, mesh, name, int(bool(deleted)), *rest))


def row_digest_v1(values: Sequence[Any]) -> bytes:
    """Format 1's digest, over the columns before ``wire`` (read only to migrate)."""
    return _digest(b"kds-row-v1", values)


def redigested(rows: Iterable[Sequence[Any]]) -> list[tuple[bytes, Any]]:
    """Migrating format 1 to 2: given rows selected as (where, *COLS), the new digest and
    ``where`` of each row whose format-1 digest matches. A row that does not match keeps
    its old digest, which cannot match the new one: damage found before the migration is
    still damage after it, never laundered into a valid digest."""
    out = []
    for r in rows:
        values, digest = r[1 : 1 + DIGEST], r[1 + DIGEST]
        if digest is not None and row_digest_v1(values[:WIRE]) == bytes(digest):
            out.append((row_digest(values), r[0]))
    return out


@dataclass(frozen=True)
class DamagedRow:
    """A row whose digest does not match: where it is (``rowid``, SQLite's; 0 where the key
    columns locate it) and what it claims to be."""

    rowid: int
    kind: str
    mesh: str
    name: str
    origin: str

    @property
    def key(self) -> str:
        """The key as the damaged row reads (its key columns may be damaged too)."""
        return f"{self.kind} {self.mesh + '/' if self.mesh else ''}{self.name}"


def row_to_resource(r: Sequence[Any], data: bytes) -> Resource:
    """A resources row selected as COLS, with ``data`` already opened."""
    return Resource(
        kind=Kind(r[0]),
        mesh=r[1],
        name=r[2],
        data=data,
        labels=json.loads(r[5]),
        spec=json.loads(r[6]),
        creation_time=r[7],
        modification_time=r[8],
        version=int(r[9]),
    )


def _json_map(m: Any) -> str:
    return json.dumps(dict(m), sort_keys=True) if m else "{}"


def row_values(
    r: Resource, origin: str, data: bytes, sealed: str, wire: bytes | None
) -> tuple[Any, ...]:
    """The values of COLS for one row (``data`` and ``wire`` as stored: sealed or not)."""
    values = (
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
        wire,
    )
    return (*values, row_digest(values))


def get_meta(conn: Conn, key: str, default: str = "") -> str:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return str(row[0]) if row else default


_SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value"


def set_meta(conn: Conn, key: str, value: object) -> None:
    conn.execute(_SET_META, (key, str(value)))


def set_metas(conn: Conn, values: Mapping[str, object]) -> None:
    """set_meta for each, in one statement of one row per value (executemany ran the
    statement once per value: four per batch a zone applies)."""
    if values:
        conn.execute(
            _set_metas_sql(len(values)), [x for k, v in values.items() for x in (k, str(v))]
        )


@functools.lru_cache(maxsize=8)
def _set_metas_sql(n: int) -> str:
    rows = ", ".join(["(?, ?)"] * n)
    return f"INSERT INTO meta VALUES {rows} ON CONFLICT (key) DO UPDATE SET value=excluded.value"


class Db(Protocol):
    """One store's database, as a backend provides it to the shared engines."""

    backend: ClassVar[str]
    location: str  # for logs and errors: never a password
    role: str
    # LIMIT's value meaning "no limit" in this dialect.
    NO_LIMIT: ClassVar[int | None]
    # "The text {} holds ?" (a str.format template over a column): position, not a pattern.
    CONTAINS: ClassVar[str]
    # Save one zone status (name, JSON status): kds.store.interface.GlobalStore.
    STATUS_UPSERT: ClassVar[str]

    def open(self, new_store: bool) -> str:
        """Create or migrate the schema, check the store is this role's; its store id."""
        ...

    def open_failed(self, e: BaseException) -> BaseException | None:
        """What to raise instead of ``e`` that failed the open (None: ``e`` itself)."""
        ...

    def read(self, snapshot: bool = False) -> AbstractContextManager[Conn]:
        """A read; ``snapshot``: all of it sees one point in time."""
        ...

    def write(self, durable: bool = True) -> AbstractContextManager[Conn]:
        """One write transaction, serialized with every other writer of the store; not
        ``durable``: its commit may skip the flush to disk (a crash may lose it)."""
        ...

    def tx_serial(self) -> int:
        """A number naming this thread's write transaction in progress, never reused; 0
        outside one. What a writer caches for one transaction is keyed by it."""
        ...

    def notify(self, conn: Conn, what: str) -> None:
        """Tell other instances sharing the store that ``what`` changed, at commit."""
        ...

    def scan(self) -> list[DamagedRow]:
        """Every resources row whose digest does not match its stored columns."""
        ...

    def delete_rows(self, conn: Conn, rows: Sequence[DamagedRow]) -> None:
        """Delete the given damaged rows."""
        ...

    def after_reseal(self) -> None:
        """After values were re-sealed: drop old copies the database may keep."""
        ...

    def close(self) -> None: ...
