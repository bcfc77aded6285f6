"""Stores behind one typed async interface (kds.store.interface), and how to open one.

Callers open a store with ``open_global_store`` or ``open_zone_store`` and depend only on the
``GlobalStore`` / ``ZoneStore`` Protocols. Two backends: SQLite (kds.store.sqlite), one file
in the data dir, and PostgreSQL (kds.store.postgres), one schema on a server that several
instances of a control plane may share. Both block (SQLite fsyncs on commit; psycopg's
connections are synchronous), so one generic store (kds.store._threads) runs each
backend's engine with writes on one thread, serialized, and reads on another; callers only
await their methods. The engines' logic and SQL are written once (kds.store._engine,
._global, ._zone) over a small database interface each backend implements (``Db`` in
kds.store._rows: connections, transactions, schema, a few dialect points). Where the store
lives decides the backend: a file path is SQLite, a ``PgTarget`` is PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from kds.store._global import GlobalOptions
from kds.store._zone import ZoneOptions
from kds.store.interface import GlobalStore, OnCommit, ResourceStore, ZoneStore
from kds.store.pg_target import PgTarget
from kds.store.results import (
    ANY,
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    Clause,
    Row,
    Selection,
    Snapshot,
    SyncLeaves,
    SyncState,
    WriteResult,
    ZoneApplyResult,
    ZoneEvent,
)
from kds.store.sqlite import (
    DEFAULT_LOG_SIZE,
    GlobalEngine,
    SqliteGlobalStore,
    SqliteZoneStore,
    ZoneEngine,
)

__all__ = [
    "ANY",
    "DEFAULT_LOG_SIZE",
    "ORIGIN_GLOBAL",
    "ORIGIN_ZONE",
    "ChangeRecord",
    "Clause",
    "GlobalStore",
    "OnCommit",
    "PgTarget",
    "ResourceStore",
    "Row",
    "Selection",
    "Snapshot",
    "SqliteGlobalStore",
    "SqliteZoneStore",
    "SyncLeaves",
    "SyncState",
    "WriteResult",
    "ZoneApplyResult",
    "ZoneEvent",
    "ZoneStore",
    "open_global_store",
    "open_zone_store",
]


def open_global_store(path: str | Path | PgTarget, **options: Unpack[GlobalOptions]) -> GlobalStore:
    """Global's store in the SQLite file ``path``, or on PostgreSQL when ``path`` is a
    PgTarget (made if missing; when a marker says a store was there, only with
    ``new_store``). Options: kds.store._global.GlobalOptions (log_size, max_message_bytes,
    clock, cipher, on_commit, new_store)."""
    if isinstance(path, PgTarget):
        from kds.store.postgres import PgGlobalEngine, PgGlobalStore  # psycopg: only here

        return PgGlobalStore(PgGlobalEngine(path, **options))
    return SqliteGlobalStore(GlobalEngine(path, **options))


def open_zone_store(path: str | Path | PgTarget, **options: Unpack[ZoneOptions]) -> ZoneStore:
    """A zone's store in the SQLite file ``path``, or on PostgreSQL when ``path`` is a
    PgTarget (made if missing; when a marker says a store was there, only with
    ``new_store``). Options: kds.store._zone.ZoneOptions (cipher, on_commit, new_store)."""
    if isinstance(path, PgTarget):
        from kds.store.postgres import PgZoneEngine, PgZoneStore  # psycopg: only here

        return PgZoneStore(PgZoneEngine(path, **options))
    return SqliteZoneStore(ZoneEngine(path, **options))
