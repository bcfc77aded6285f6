"""Where a PostgreSQL store lives (``PgTarget``), apart from the backend itself.

Configuration and the SQLite daemons name a PostgreSQL store without loading the driver:
psycopg and its pool add about 7 MB to a daemon's resident memory, which a daemon on the
SQLite store never uses. kds.store.postgres (the backend, which imports psycopg) is loaded
only when a store is opened on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PgTarget"]


@dataclass(frozen=True)
class PgTarget:
    """Where a PostgreSQL store lives: a libpq URL (``sslmode``, ``sslrootcert`` and the
    other libpq parameters pass through), the schema, and optionally the password read from
    a file. ``marker``: a file in the daemon's data dir holding the store id, so a database
    found empty where this instance used a store is refused (as the SQLite marker is)."""

    url: str
    schema: str
    # Left out of the repr: a target shown in an error or a traceback never shows it.
    password: str | None = field(default=None, repr=False)
    marker: Path | None = None
    application: str = "kds-sync"
