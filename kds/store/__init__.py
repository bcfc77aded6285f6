"""Stores behind one typed async interface (kds.store.interface), and how to open one.

Callers open a store with ``open_global_store`` or ``open_zone_store`` and depend only on the
``GlobalStore`` / ``ZoneStore`` Protocols. Two backends: SQLite (kds.store.sqlite), one file
in the data dir, and PostgreSQL (kds.store.postgres), one schema on a server that several
instances of a control plane may share. Both block (SQLite fsyncs on commit; psycopg's
connections are synchronous), so their stores run writes on one thread, serialized, and
reads on another; callers only await their methods. Where the store lives decides the
backend: a file path is SQLite, a ``PgTarget`` is PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from kds.crypto import DataCipher
from kds.store.interface import GlobalStore, OnCommit, ResourceStore, ZoneStore
from kds.store.postgres import PgGlobalEngine, PgGlobalStore, PgTarget, PgZoneEngine, PgZoneStore
from kds.store.results import (
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    Row,
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
    "DEFAULT_LOG_SIZE",
    "ORIGIN_GLOBAL",
    "ORIGIN_ZONE",
    "ChangeRecord",
    "GlobalStore",
    "OnCommit",
    "PgTarget",
    "ResourceStore",
    "Row",
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


def open_global_store(
    path: str | Path | PgTarget,
    *,
    log_size: int = DEFAULT_LOG_SIZE,
    max_message_bytes: int | None = None,
    cipher: DataCipher | None = None,
    on_commit: OnCommit | None = None,
    clock: Callable[[], float] = time.time,
    new_store: bool = False,
) -> GlobalStore:
    """Global's store in the SQLite file ``path``, or on PostgreSQL when ``path`` is a
    PgTarget (made if missing; when a marker says a store was there, only with
    ``new_store``)."""
    if isinstance(path, PgTarget):
        return PgGlobalStore(
            PgGlobalEngine(
                path,
                log_size=log_size,
                max_message_bytes=max_message_bytes,
                cipher=cipher,
                on_commit=on_commit,
                clock=clock,
                new_store=new_store,
            )
        )
    return SqliteGlobalStore(
        GlobalEngine(
            path,
            log_size=log_size,
            max_message_bytes=max_message_bytes,
            cipher=cipher,
            on_commit=on_commit,
            clock=clock,
            new_store=new_store,
        )
    )


def open_zone_store(
    path: str | Path | PgTarget,
    *,
    cipher: DataCipher | None = None,
    on_commit: OnCommit | None = None,
    new_store: bool = False,
) -> ZoneStore:
    """A zone's store in the SQLite file ``path``, or on PostgreSQL when ``path`` is a
    PgTarget (made if missing; when a marker says a store was there, only with
    ``new_store``)."""
    if isinstance(path, PgTarget):
        return PgZoneStore(
            PgZoneEngine(path, cipher=cipher, on_commit=on_commit, new_store=new_store)
        )
    return SqliteZoneStore(
        ZoneEngine(path, cipher=cipher, on_commit=on_commit, new_store=new_store)
    )
