"""The PostgreSQL backend: one store per schema, shared by several instances of a role.

``PgGlobalStore`` / ``PgZoneStore`` are the async stores (kds.store.interface) the daemons
use with ``--store postgres``. They keep the SQLite backend's rules and formats (revisions,
change log, history chain, row digests, sealing) and add what sharing one database between
instances needs: every write transaction holds the store's advisory lock, so revisions are
gap-free and commit in order across instances (kds.store.postgres._db).

The engines' logic and SQL are the SQLite backend's, shared (kds.store._engine, ._global,
._zone, ._changelog, ._sealing, ._threads). Modules here, by job: _db (connections, the
versioned schema, transactions, the ``?`` to ``%s`` placeholders, the dialect points,
errors), _refused (a login refused or a database missing at connect), _global and _zone (each role's engine over a schema; a zone's fencing), _stores
(the async stores, with follow and leadership), _listen (LISTEN/NOTIFY wake-ups between
instances), _leader (one zone instance holds the stream, fenced), _import (a SQLite store
moved here, keeping its id and its history or sync state).
"""

from __future__ import annotations

from kds.store.postgres._db import SCHEMA_VERSION, PgTarget, describe
from kds.store.postgres._global import PgGlobalEngine
from kds.store.postgres._import import (
    import_sqlite_global,
    import_sqlite_store,
    require_sqlite_store,
)
from kds.store.postgres._leader import Leadership
from kds.store.postgres._stores import PgGlobalStore, PgZoneStore
from kds.store.postgres._zone import NotLeader, PgZoneEngine

__all__ = [
    "SCHEMA_VERSION",
    "Leadership",
    "NotLeader",
    "PgGlobalEngine",
    "PgGlobalStore",
    "PgTarget",
    "PgZoneEngine",
    "PgZoneStore",
    "describe",
    "import_sqlite_global",
    "import_sqlite_store",
    "require_sqlite_store",
]
