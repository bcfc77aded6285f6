"""Moving a SQLite store to PostgreSQL, keeping its store id and history (a global's) or its
sync state (a zone's).

Zones hold global's store id and their revision with its history chain; a store moved with
the same id, head, change log and chains is, for them, the same store: they resume where
they were instead of taking a snapshot. Likewise a zone's store moved with its id, the
global store it follows, its applied revision and chain is, for global, the same zone at
the same revision: it resumes, keeping its zone-local resources and the synced copies its
name conflicts keep aside. So the import copies every table as stored:
values sealed at rest stay sealed (a sealed value is bound to its table and key, not to the
backend, so it opens with the same key file), row digests are kept (the PostgreSQL store
checks them at its first start), and meta's head, log floor and chains (a zone's sync
state) are the SQLite store's. It runs in one transaction into an empty schema: it happens whole or not at all,
and a schema that already holds a store is refused. The SQLite file is only read.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kds.errors import StoreError
from kds.store._rows import LOG_COLS, ROW_FORMAT
from kds.store.postgres._db import (
    LOCK_SCHEMA,
    LOCK_WRITE,
    Database,
    PgConn,
    PgTarget,
    get_meta,
    set_meta,
)

__all__ = ["import_sqlite_global", "import_sqlite_store"]

# Table -> the columns copied, as both backends name them.
_TABLES = {
    "resources": (
        "kind, mesh, name, origin, data, labels, spec, creation_time, modification_time, "
        "version, sealed, digest, wire, sync_gen"
    ),
    "changelog": LOG_COLS,
    "internal_secrets": "name, data, created, sealed",
    "zone_tokens": "id, zone, key_name, issued_at, expires_at, revoked_at",
    "zone_status": "name, status",
    "zone_events": "zone, kind, time, data",  # in the order added (by id)
}
# Meta kept by role: global's head, log floor and chains; a zone's sync state (the global
# store it follows, its applied revision and chain, its snapshot generation).
_META = {
    "global": ("store_id", "head", "log_floor", "chain", "floor_chain"),
    "zone": (
        "store_id",
        "synced_store_id",
        "applied_revision",
        "applied_chain",
        "applied_at",
        "snapshot_gen",
        "snapshot_tag",
        "zone",
    ),
}


def import_sqlite_global(path: Path, target: PgTarget) -> tuple[str, dict[str, int]]:
    """Copy the SQLite global store at ``path`` into ``target``'s (empty) schema: its store
    id, and the rows copied per table (and the head revision as ``head``)."""
    return import_sqlite_store(path, target, "global")


def require_sqlite_store(path: Path, role: str) -> None:
    """StoreError unless the SQLite store of ``role`` to copy is at ``path``."""
    if not path.is_file():
        raise StoreError(f"{path} does not exist: give the SQLite {role}'s --data-dir")


def import_sqlite_store(path: Path, target: PgTarget, role: str) -> tuple[str, dict[str, int]]:
    """Copy the SQLite store of ``role`` at ``path`` into ``target``'s (empty) schema: its
    store id, and the rows copied per table (and, for global, the head revision as ``head``;
    for a zone, its applied revision as ``applied_revision``)."""
    require_sqlite_store(path, role)
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _copy(src, path, target, role)
    except sqlite3.Error as e:
        raise StoreError(f"cannot read {path}: {e}") from e
    finally:
        src.close()


def _copy(
    src: sqlite3.Connection, path: Path, target: PgTarget, want: str
) -> tuple[str, dict[str, int]]:
    meta = dict(src.execute("SELECT key, value FROM meta").fetchall())
    role = str(meta.get("role", "")).split(" ", 1)[0]
    if role != want:
        raise StoreError(f"{path} is not a {want} store (role {role[:40]!r})")
    if meta.get("row_digests") != "1" or meta.get("schema_version") != str(ROW_FORMAT):
        raise StoreError(
            f"{path} was made by an older kds-sync (its row digests are of another format): "
            f"start this {'globalcp' if want == 'global' else 'zonecp'} on it once, then migrate"
        )
    db = Database(target, want)
    conn = db.connect()
    counts: dict[str, int] = {}
    try:
        with db.errors(), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (db.lock, LOCK_SCHEMA))
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (db.lock, LOCK_WRITE))
            if _holds_a_store(conn, target.schema):
                raise StoreError(
                    f"{db.location} already holds a store: migrate into an empty schema "
                    "(another --postgres-schema, or drop this one)"
                )
            db._migrate(conn, new_store=True)
            held = {n for (n,) in src.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table, cols in _TABLES.items():
                if table not in held:  # a store from before the table existed
                    counts[table] = 0
                    continue
                order = " ORDER BY id" if table == "zone_events" else ""
                rows = src.execute(f"SELECT {cols} FROM {table}{order}").fetchall()
                if table == "changelog":
                    rows = [(*r[:4], bool(r[4]), *r[5:]) for r in rows]
                marks = ", ".join(["%s"] * len(cols.split(",")))
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
                counts[table] = len(rows)
            for key in _META[want]:
                if key in meta or want == "global":
                    set_meta(PgConn(conn), key, meta.get(key, ""))
            counts["head"] = int(get_meta(PgConn(conn), "head") or "0")
            counts["applied_revision"] = int(get_meta(PgConn(conn), "applied_revision", "0"))
    finally:
        conn.close()
    return meta["store_id"], counts


def _holds_a_store(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema=%s AND table_name='meta'",
        (schema,),
    ).fetchone()
    if row is None:
        return False
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    return bool(get_meta(PgConn(conn), "role"))
