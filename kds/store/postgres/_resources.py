"""The resource rows both roles keep on PostgreSQL: effective-view reads, API puts and
deletes, and the kds.integrity checks inside the writing transaction.

The rules are the SQLite backend's (kds.store.sqlite._resources), with the same row digests
and the same sealing (kds.store.sqlite._digest, ._sealing): a row's digest is over its
stored columns, sealed values are bound to their row. ``PgResourceEngine`` is blocking
(psycopg's synchronous connections): the async stores run it on a writer and a reader
thread, because kds.integrity reads the writing transaction synchronously.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import psycopg
import structlog

from kds import integrity
from kds.crypto import DataCipher
from kds.errors import InvalidReferences, KdsError, NotFound, StoreDamaged
from kds.model import Key, Kind, Resource
from kds.protocol.digest_tree import leaf_digest
from kds.store.interface import OnCommit
from kds.store.postgres._db import Database, PgTarget
from kds.store.postgres._reseal import reseal
from kds.store.results import (
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    Origin,
    Row,
    SyncLeaves,
    WriteResult,
)
from kds.store.sqlite._db import COLS
from kds.store.sqlite._digest import row_digest
from kds.store.sqlite._sealing import Sealer

__all__ = ["UPSERT", "PgResourceEngine", "PgTxView"]

log = structlog.get_logger("kds.store")

Conn = psycopg.Connection[Any]

_COL_NAMES = [c.strip() for c in COLS.split(",")]
# Insert or replace one resources row (COLS, wire, sync_gen).
UPSERT = (
    f"INSERT INTO resources ({COLS}, wire, sync_gen) VALUES ({', '.join(['%s'] * 14)}) "
    "ON CONFLICT (kind, mesh, name, origin) DO UPDATE SET "
    + ", ".join(f"{c}=EXCLUDED.{c}" for c in [*_COL_NAMES[4:], "wire", "sync_gen"])
)


class PgTxView:
    """kds.integrity.TxView over the writing transaction's connection (effective rows)."""

    def __init__(self, engine: PgResourceEngine, conn: Conn):
        self._engine = engine
        self._conn = conn
        self._cache: dict[Key, Resource | None] = {}

    def get(self, key: Key) -> Resource | None:
        if key.kind is Kind.MESH and key in self._cache:
            return self._cache[key]
        rows = self._engine._rows(self._conn, key)
        found = rows.get(ORIGIN_ZONE) or rows.get(ORIGIN_GLOBAL)
        if key.kind is Kind.MESH:
            self._cache[key] = found
        return found

    def secret_meshes(self, name: str) -> list[str]:
        cur = self._conn.execute(
            "SELECT DISTINCT mesh FROM resources WHERE kind='Secret' AND name=%s ORDER BY mesh",
            (name,),
        )
        return [m for (m,) in cur]

    def secret_names(self, mesh: str) -> list[str]:
        cur = self._conn.execute(
            "SELECT DISTINCT name FROM resources WHERE kind='Secret' AND mesh=%s ORDER BY name",
            (mesh,),
        )
        return [n for (n,) in cur]


class PgResourceEngine:
    """One store's resources on PostgreSQL, as a blocking engine; subclassed per role."""

    backend = "postgres"
    role: ClassVar[str]
    origin: ClassVar[Origin]

    def __init__(
        self,
        target: PgTarget,
        *,
        cipher: DataCipher | None = None,
        on_commit: OnCommit | None = None,
        new_store: bool = False,
    ):
        self.db = Database(target, self.role)
        self.location = self.db.location
        self.cipher = cipher
        self.sealer = Sealer(self.location, cipher)
        self._on_commit = on_commit
        try:
            self._store_id = self.db.open(new_store)
            self._check_rows()
            self._reseal()
        except BaseException:
            self.close()
            raise

    @property
    def store_id(self) -> str:
        return self._store_id

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ reads

    def sync_leaves(self) -> SyncLeaves:
        """The anti-entropy leaves of the synced rows (origin global) at this store's
        revision, in one snapshot read; a damaged row is no leaf (logged by key)."""
        with self.db.read(snapshot=True) as conn:
            revision = self._sync_revision(conn)
            rows = conn.execute(f"SELECT {COLS} FROM resources WHERE origin='global'").fetchall()
        leaves = []
        for r in rows:
            try:
                res = self.sealer.resource(r)
            except StoreDamaged as e:
                log.warning("damaged row is no anti-entropy leaf", key=e.key)
                continue
            leaves.append((res.key, leaf_digest(res)))
        return SyncLeaves(revision, leaves)

    def _sync_revision(self, conn: Conn) -> int:
        """Global: its head; a zone: its applied revision."""
        raise NotImplementedError

    def _rows(self, conn: Conn, key: Key, skip_damaged: bool = True) -> dict[str, Resource]:
        cur = conn.execute(
            f"SELECT {COLS} FROM resources WHERE kind=%s AND mesh=%s AND name=%s",
            (str(key.kind), key.mesh, key.name),
        )
        out = {}
        for r in cur:
            try:
                out[r[3]] = self.sealer.resource(r)
            except StoreDamaged as e:
                if not skip_damaged:
                    raise
                log.warning("damaged row left out", key=e.key, origin=r[3], store=self.location)
        return out

    def get(self, key: Key) -> Row | None:
        with self.db.read() as conn:
            rows = self._rows(conn, key, skip_damaged=False)
        if ORIGIN_ZONE in rows:
            return Row(rows[ORIGIN_ZONE], ORIGIN_ZONE, shadows_synced=ORIGIN_GLOBAL in rows)
        if ORIGIN_GLOBAL in rows:
            return Row(rows[ORIGIN_GLOBAL], ORIGIN_GLOBAL)
        return None

    def list_rows(self, kind: Kind, mesh: str | None = None) -> list[Row]:
        return self.page(kind, mesh)[1]

    def page(
        self, kind: Kind, mesh: str | None = None, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Row]]:
        where = "r.kind=%s"
        args: list[Any] = [str(kind)]
        if mesh is not None:
            where += " AND r.mesh=%s"
            args.append(mesh)
        where += (
            " AND (r.origin='zone' OR NOT EXISTS (SELECT 1 FROM resources z WHERE"
            " z.kind=r.kind AND z.mesh=r.mesh AND z.name=r.name AND z.origin='zone'))"
        )
        cols = ", ".join(f"r.{c}" for c in _COL_NAMES)
        with self.db.read(snapshot=True) as conn:
            one = conn.execute(f"SELECT COUNT(*) FROM resources r WHERE {where}", args).fetchone()
            total = int(one[0]) if one else 0
            cur = conn.execute(
                f"SELECT {cols}, r.origin='zone' AND EXISTS (SELECT 1 FROM resources g WHERE"
                " g.kind=r.kind AND g.mesh=r.mesh AND g.name=r.name AND g.origin='global')"
                f" FROM resources r WHERE {where} ORDER BY r.mesh, r.name LIMIT %s OFFSET %s",
                [*args, limit, offset],
            )
            rows = []
            for r in cur:
                try:
                    rows.append(Row(self.sealer.resource(r), r[3], shadows_synced=bool(r[-1])))
                except StoreDamaged as e:
                    total -= 1
                    log.warning(
                        "damaged row left out of a list", key=e.key, origin=r[3], error=str(e)
                    )
        return total, rows

    def conflicts(self) -> list[Key]:
        with self.db.read() as conn:
            cur = conn.execute(
                "SELECT kind, mesh, name FROM resources GROUP BY kind, mesh, name "
                "HAVING COUNT(*) > 1 ORDER BY kind, mesh, name"
            )
            return [Key(Kind(k), m, n) for k, m, n in cur]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {str(k): {"global": 0, "zone": 0} for k in Kind}
        with self.db.read() as conn:
            for kind, origin, n in conn.execute(
                "SELECT kind, origin, COUNT(*) FROM resources GROUP BY kind, origin"
            ):
                out[kind][origin] = int(n)
        return out

    def _mesh_exists(self, conn: Conn, mesh: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM resources WHERE kind='Mesh' AND mesh='' AND name=%s LIMIT 1", (mesh,)
        ).fetchone()
        return row is not None

    def _secrets_in_mesh(self, conn: Conn, mesh: str) -> dict[str, int]:
        out: dict[str, int] = {ORIGIN_GLOBAL: 0, ORIGIN_ZONE: 0}
        for origin, n in conn.execute(
            "SELECT origin, COUNT(*) FROM resources WHERE kind='Secret' AND mesh=%s "
            "GROUP BY origin",
            (mesh,),
        ):
            out[origin] = int(n)
        return out

    # ------------------------------------------------------------------ API writes

    def put(self, resource: Resource, now: str) -> WriteResult:
        results = self.put_many([resource], now)
        return replace(results[0], also=tuple(results[1:]))

    def put_many(self, resources: Sequence[Resource], now: str) -> list[WriteResult]:
        """All in one transaction, or none (see kds.store.interface)."""
        results = []
        with self.db.write() as conn:
            for i, resource in enumerate(resources):
                try:
                    results.append(self._put(conn, resource, now))
                except KdsError as e:
                    e.item_index = i
                    raise
            results += self._after_puts(conn, resources, now)
            self._announce(conn, results)
        return self._committed(results)

    def _after_puts(self, conn: Conn, resources: Sequence[Resource], now: str) -> list[WriteResult]:
        view = PgTxView(self, conn)
        generated = []
        for res in resources:
            if res.kind is Kind.MESH and res.spec:
                for cert, key in integrity.builtin_cas_to_generate(res, view, now):
                    generated += [self._put(conn, cert, now), self._put(conn, key, now)]
        problems = integrity.check_written(view, resources)
        if not problems:
            problems = self._more_problems(view, resources)
        if problems:
            e = InvalidReferences(problems.by_index)
            e.item_index = next(iter(e.by_index))
            raise e
        return generated

    def delete(self, key: Key) -> WriteResult:
        with self.db.write() as conn:
            result = self._delete(conn, key)
            self._announce(conn, [result])
        self._committed([*result.also, result])
        return result

    def _committed(self, results: list[WriteResult]) -> list[WriteResult]:
        changed = [r for r in results if r.changed]
        if self._on_commit is not None and changed:
            try:
                self._on_commit(changed)
            except Exception as e:
                log.error(
                    "on_commit hook failed",
                    error_type=type(e).__name__,
                    stack="".join(traceback.format_tb(e.__traceback__)),
                )
        return results

    def _put(self, conn: Conn, resource: Resource, now: str) -> WriteResult:
        rows = self._rows(conn, resource.key)
        self._check_writable(resource.key, rows, "change")
        old = rows.get(self.origin)
        if resource.kind is Kind.SECRET and not self._mesh_exists(conn, resource.mesh):
            raise NotFound(f"mesh {resource.mesh!r} does not exist")
        if old is not None and old.same_content(resource):
            return WriteResult(old, changed=False, record=None)
        stored = resource.with_meta(
            creation_time=old.creation_time if old else now,
            modification_time=now,
            version=self._next_version(conn, old),
        )
        record, wire_bytes = self._log_put(conn, stored)
        conn.execute(UPSERT, (*self.sealer.row_values(stored, self.origin, wire_bytes), 0))
        return WriteResult(stored, changed=True, record=record, created=old is None)

    def _delete(self, conn: Conn, key: Key) -> WriteResult:
        rows = self._rows(conn, key)
        self._check_writable(key, rows, "delete")
        origin = self.origin
        if origin not in rows:
            raise NotFound(f"{key} not found")
        also: list[WriteResult] = []
        if not self._leaves_a_copy(rows):
            for name in integrity.check_delete(PgTxView(self, conn), key):
                secret = Key(Kind.SECRET, key.name, name)
                if origin in self._rows(conn, secret):
                    also.append(self._delete_row(conn, secret))
        result = self._delete_row(conn, key)
        return replace(result, also=tuple(also), previous=rows[origin])

    def _delete_row(self, conn: Conn, key: Key) -> WriteResult:
        conn.execute(
            "DELETE FROM resources WHERE kind=%s AND mesh=%s AND name=%s AND origin=%s",
            (str(key.kind), key.mesh, key.name, self.origin),
        )
        return WriteResult(None, changed=True, record=self._log_delete(conn, key), deleted=key)

    # ------------------------------------------------------------------ at open

    def _check_rows(self) -> None:
        """Every row's digest checked (as SQLite's start-up scan): damaged rows reported."""
        with self.db.read(snapshot=True) as conn:
            damaged = [
                (r[0], r[1], r[2], r[3])
                for r in conn.execute(f"SELECT {COLS} FROM resources")
                if row_digest(r[:11]) != bytes(r[11])
            ]
        self._after_check(damaged)

    def _after_check(self, damaged: list[tuple[str, str, str, str]]) -> None:
        """Given the (kind, mesh, name, origin) of rows whose digest does not match: report
        them (by key, never a value). A zone also removes its synced ones."""
        for kind, mesh, name, origin in damaged:
            log.error(
                "damaged row in store: it is not served",
                key=f"{kind} {mesh + '/' if mesh else ''}{name}",
                origin=origin,
                store=self.location,
                fix="put the resource again, or restore the store from a backup",
            )

    def _reseal(self) -> None:
        reseal(self.db, self.sealer)

    # ------------------------------------------------------------------ what a role decides

    def _announce(self, conn: Conn, results: Sequence[WriteResult]) -> None:
        """Inside an API write transaction, before it commits: tell other instances."""

    def _notify(self, conn: Conn, what: str) -> None:
        """Tell every instance listening on this store (kds.store.postgres._listen) that
        ``what`` changed; PostgreSQL delivers it when (and only if) the transaction commits."""
        conn.execute("SELECT pg_notify(%s, %s)", (self.db.target.schema, what))

    def _check_writable(self, key: Key, rows: Mapping[str, Resource], verb: str) -> None:
        """Raise when the API may not ``verb`` (change, delete) ``key`` held as ``rows``."""

    def _leaves_a_copy(self, rows: Mapping[str, Resource]) -> bool:
        return False

    def _next_version(self, conn: Conn, old: Resource | None) -> int:
        raise NotImplementedError

    def _log_put(self, conn: Conn, stored: Resource) -> tuple[ChangeRecord | None, bytes | None]:
        return None, None

    def _log_delete(self, conn: Conn, key: Key) -> ChangeRecord | None:
        return None

    def _more_problems(self, view: PgTxView, resources: Sequence[Resource]) -> integrity.Problems:
        return integrity.Problems()
