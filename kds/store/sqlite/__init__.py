"""The SQLite backend: one file in the data dir, WAL, synchronous=FULL.

Every write the API acknowledges is committed (and fsynced by the WAL) before the answer is
sent, so it survives a crash. A global write, its change-log entry and the new head revision
commit in one transaction; a zone applies a batch and records the applied revision in one.

``SqliteGlobalStore`` / ``SqliteZoneStore`` are the async stores (kds.store.interface) the
daemons use. They run a blocking engine, ``GlobalEngine`` / ``ZoneEngine``, on one writer
thread and one reader thread, each with its own connection; the engines are not
thread-safe by themselves, and tests may drive them directly on one thread.

The engines' logic and SQL are shared with the PostgreSQL backend (kds.store._engine,
._global, ._zone, ._changelog, ._sealing, ._threads); this package holds what is SQLite's
own: _db (file, schema, column migration, connections, transactions, the store marker, the
dialect points), _digest (the start-up scan of row digests), _engines (the engines and
stores over a file).
"""

from __future__ import annotations

from kds.store._global import DEFAULT_LOG_SIZE
from kds.store.sqlite._engines import GlobalEngine, SqliteGlobalStore, SqliteZoneStore, ZoneEngine

__all__ = ["DEFAULT_LOG_SIZE", "GlobalEngine", "SqliteGlobalStore", "SqliteZoneStore", "ZoneEngine"]
