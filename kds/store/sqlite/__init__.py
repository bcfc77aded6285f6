"""The SQLite backend: one file in the data dir, WAL, synchronous=FULL.

Every write the API acknowledges is committed (and fsynced by the WAL) before the answer is
sent, so it survives a crash. A global write, its change-log entry and the new head revision
commit in one transaction; a zone applies a batch and records the applied revision in one.

``SqliteGlobalStore`` / ``SqliteZoneStore`` are the async stores (kds.store.interface) the
daemons use. They run a blocking engine, ``GlobalEngine`` / ``ZoneEngine``, on one writer
thread and one reader thread, each with its own connection; the engines are not
thread-safe by themselves, and tests may drive them directly on one thread.

Modules, by job: _db (file, schema, connections, transactions, meta, the store marker),
_digest (row digests: noticing damaged rows), _sealing (encryption at rest), _resources (rows both roles share, API writes), _changelog (global's change log
and history chain), _global and _zone (each role's engine), _stores (the async stores).
"""

from __future__ import annotations

from kds.store.sqlite._global import DEFAULT_LOG_SIZE, GlobalEngine
from kds.store.sqlite._stores import SqliteGlobalStore, SqliteZoneStore
from kds.store.sqlite._zone import ZoneEngine

__all__ = ["DEFAULT_LOG_SIZE", "GlobalEngine", "SqliteGlobalStore", "SqliteZoneStore", "ZoneEngine"]
