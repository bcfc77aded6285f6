"""The resource rows both roles keep, on either backend: the effective-view reads, API puts
and deletes, and the kds.integrity checks inside the writing transaction.

``ResourceEngine`` is the blocking engine every store builds on (kds.store._global and
._zone, then each backend's thin subclasses); it reaches its database only through ``Db`` (kds.store._rows),
which each backend implements (kds.store.sqlite._db, kds.store.postgres._db): connections,
transactions, the schema, the start-up scan and the few dialect points. A role supplies, as
overrides, only what differs: which origin the API writes, how a write is versioned and
logged, whether a synced copy is read-only. Calls block; the async stores
(kds.store._async) run them on their writer and reader threads.

A damaged row (kds.store._rows) is never served: ``get`` raises StoreDamaged naming its
key, a list leaves it out with a warning, and a write treats it as missing (so putting the
resource again repairs it). At open every row is checked (``_after_check``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import structlog

from kds import integrity
from kds.crypto import DataCipher
from kds.errors import InvalidReferences, KdsError, NotFound, StoreDamaged
from kds.model import Key, Kind, Resource
from kds.store._kinds import foreign_row, known_kind
from kds.store._names import check_kubernetes_names
from kds.store._rows import COL_NAMES, COLS, UPSERT_RESOURCE, Conn, DamagedRow, Db
from kds.store._sealing import Sealer, reseal
from kds.store._select import select_key_rows, selected_sql
from kds.store.interface import OnCommit
from kds.store.results import (
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    Origin,
    Row,
    Selection,
    SyncLeaves,
    WriteResult,
)

__all__ = ["ResourceEngine", "TxView"]

log = structlog.get_logger("kds.store")


class TxView:
    """kds.integrity.TxView over the writing transaction's connection (effective rows)."""

    def __init__(self, engine: ResourceEngine, conn: Conn):
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
            "SELECT DISTINCT mesh FROM resources WHERE kind='Secret' AND name=? ORDER BY mesh",
            (name,),
        )
        return [m for (m,) in cur]

    def secret_names(self, mesh: str) -> list[str]:
        cur = self._conn.execute(
            "SELECT DISTINCT name FROM resources WHERE kind='Secret' AND mesh=? ORDER BY name",
            (mesh,),
        )
        return [n for (n,) in cur]


class ResourceEngine:
    """One store's resources, as a blocking engine; subclassed per role and backend."""

    role: ClassVar[str]  # recorded in a new store; a store of the other role is refused
    origin: ClassVar[Origin]  # the origin of the rows the API writes

    def __init__(
        self,
        db: Db,
        *,
        cipher: DataCipher | None = None,
        on_commit: OnCommit | None = None,
        new_store: bool = False,
    ):
        self.db = db
        self.backend = db.backend
        self.location = db.location
        self.cipher = cipher  # encrypts secret data at rest (kds.crypto); None: plaintext
        self.sealer = Sealer(self.location, cipher)
        self._meshes_found: tuple[int, set[str]] = (0, set())  # (tx serial, meshes)
        # Called once per committed API write transaction with its changed results, in
        # revision order (writes are serialized), right after the commit, on this thread.
        # Global's daemon hands the change records to the hub with call_soon_threadsafe, so
        # no commit can be missed by the zones' fan-out and the hub's head only ever stops
        # at a transaction's end (never inside one); a zone's re-reads its conflicts.
        self._on_commit = on_commit
        try:
            self._store_id = db.open(new_store)
            self.damaged = db.scan()
            self._after_check(self.damaged)
            reseal(db, self.sealer)
        except BaseException as e:
            self.close()
            instead = db.open_failed(e)
            if instead is not None:
                raise instead from e
            raise

    @property
    def store_id(self) -> str:
        return self._store_id

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ reads

    def _rows(self, conn: Conn, key: Key, skip_damaged: bool = True) -> dict[str, Resource]:
        """The rows of ``key`` by origin; a damaged one is left out (logged), or raises
        StoreDamaged when not ``skip_damaged``."""
        cur = conn.execute(
            f"SELECT {COLS} FROM resources WHERE kind=? AND mesh=? AND name=?",
            (str(key.kind), key.mesh, key.name),
        )
        out = {}
        for r in cur:
            resource = self._resource(r, skip_damaged)
            if resource is not None:
                out[r[3]] = resource
        return out

    def _resource(self, r: Sequence[Any], skip_damaged: bool = True) -> Resource | None:
        """A resource row read back; a damaged one is None (logged), or raises StoreDamaged
        when not ``skip_damaged``."""
        try:
            return self.sealer.resource(r)
        except StoreDamaged as e:
            if not skip_damaged:
                raise
            log.warning("damaged row left out", key=e.key, origin=r[3], store=self.location)
            return None

    def _rows_of(self, conn: Conn, keys: Iterable[Key]) -> dict[Key, dict[str, Resource]]:
        """``_rows`` of many keys at once (a key with no row is absent): one statement per
        mesh and kind and up to 500 names (kds.store._select.select_key_rows), where a zone
        applying 10,000 changes ran one SELECT per key (0.022 of its 0.165 CPU seconds)."""
        out: dict[Key, dict[str, Resource]] = {}
        for kind, mesh, r in select_key_rows(conn, COLS, keys):
            if (resource := self._resource(r)) is not None:
                out.setdefault(Key(kind, mesh, r[2]), {})[r[3]] = resource
        return out

    def get(self, key: Key) -> Row | None:
        with self.db.read() as conn:
            return self._get_in(conn, key)

    def _get_in(self, conn: Conn, key: Key) -> Row | None:
        """get's work, on ``conn``."""
        rows = self._rows(conn, key, skip_damaged=False)
        if ORIGIN_ZONE in rows:
            return Row(rows[ORIGIN_ZONE], ORIGIN_ZONE, shadows_synced=ORIGIN_GLOBAL in rows)
        if ORIGIN_GLOBAL in rows:
            return Row(rows[ORIGIN_GLOBAL], ORIGIN_GLOBAL)
        return None

    def list_rows(self, kind: Kind, mesh: str | None = None) -> list[Row]:
        return self.page(kind, mesh)[1]

    def page(
        self,
        kind: Kind,
        mesh: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        select: Selection | None = None,
    ) -> tuple[int, list[Row]]:
        """(total, rows) of the effective view, ordered by mesh and name, selected
        (kds.store._select) and paged in SQL: a zone-local row hides the synced copy of its
        key and is marked as shadowing it."""
        where = "r.kind=?"
        args: list[Any] = [str(kind)]
        if mesh is not None:
            where += " AND r.mesh=?"
            args.append(mesh)
        where += (
            " AND (r.origin='zone' OR NOT EXISTS (SELECT 1 FROM resources z WHERE"
            " z.kind=r.kind AND z.mesh=r.mesh AND z.name=r.name AND z.origin='zone'))"
        )
        if select is not None:
            cond, more = selected_sql(select, self.db.CONTAINS)
            where += f" AND {cond}"
            args += more
        cols = ", ".join(f"r.{c}" for c in COL_NAMES)
        with self.db.read(snapshot=True) as conn:
            one = conn.execute(f"SELECT COUNT(*) FROM resources r WHERE {where}", args).fetchone()
            total = int(one[0]) if one else 0
            cur = conn.execute(
                f"SELECT {cols}, r.origin='zone' AND EXISTS (SELECT 1 FROM resources g WHERE"
                " g.kind=r.kind AND g.mesh=r.mesh AND g.name=r.name AND g.origin='global')"
                f" FROM resources r WHERE {where} ORDER BY r.mesh, r.name LIMIT ? OFFSET ?",
                [*args, self.db.NO_LIMIT if limit is None else limit, offset],
            )
            rows = []
            for r in cur:
                try:
                    rows.append(Row(self.sealer.resource(r), r[3], shadows_synced=bool(r[-1])))
                except StoreDamaged as e:  # this row only: the rest of the list is served
                    total -= 1
                    log.warning(
                        "damaged row left out of a list", key=e.key, origin=r[3], error=str(e)
                    )
        return total, rows

    def sync_leaves(self) -> SyncLeaves:
        """The anti-entropy leaves of the synced rows (origin global) at this store's
        revision, in one snapshot read; a damaged row is no leaf (logged by key)."""
        leaves: list[tuple[Key, bytes]] = []
        revision = self.sync_leaves_into(lambda k, d: leaves.append((k, d)))
        return SyncLeaves(revision, leaves)

    def sync_leaves_into(self, take: Callable[[Key, bytes], None]) -> int:
        """``sync_leaves`` handed to ``take`` leaf by leaf as the rows are read (a caller
        building a tree as they come never holds a list of every leaf); the revision."""
        with self.db.read(snapshot=True) as conn:
            revision = self._sync_revision(conn)
            # Row by row, not fetchall: every row of a large store held at once took over
            # 100 MB for 100,000 secrets, where only each key and its digest are kept.
            for r in conn.execute(f"SELECT {COLS} FROM resources WHERE origin='global'"):
                if foreign_row(r, self.location):
                    continue  # no zone holds it either (kds.store._kinds)
                leaf = self._leaf(r)
                if leaf is not None:
                    take(*leaf)
        return revision

    def _leaf(self, r: Sequence[Any]) -> tuple[Key, bytes] | None:
        """A row's key and leaf digest (Sealer.leaf); None, logged by key, if damaged."""
        try:
            return self.sealer.leaf(r)
        except StoreDamaged as e:
            log.warning("damaged row is no anti-entropy leaf", key=e.key)
            return None

    def _sync_revision(self, conn: Conn) -> int:
        """Global: its head; a zone: its applied revision."""
        raise NotImplementedError

    def conflicts(self) -> list[Key]:
        with self.db.read() as conn:
            cur = conn.execute(
                "SELECT kind, mesh, name FROM resources GROUP BY kind, mesh, name "
                "HAVING COUNT(*) > 1 ORDER BY kind, mesh, name"
            )
            found = ((known_kind(k, self.location), m, n) for k, m, n in cur)
            return [Key(kind, m, n) for kind, m, n in found if kind is not None]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {str(k): {"global": 0, "zone": 0} for k in Kind}
        with self.db.read() as conn:
            for kind, origin, n in conn.execute(
                "SELECT kind, origin, COUNT(*) FROM resources GROUP BY kind, origin"
            ):
                if known_kind(kind, self.location) is not None:
                    out[kind][origin] = int(n)
        return out

    def _mesh_exists(self, conn: Conn, mesh: str) -> bool:
        """Whether the mesh has a row. A mesh found is remembered for the rest of the
        transaction (nothing in a writing transaction deletes a mesh and then puts into it):
        an apply of 10,000 secrets asked 10,000 times."""
        serial = self.db.tx_serial()
        if serial and self._meshes_found[0] == serial and mesh in self._meshes_found[1]:
            return True
        found = (
            conn.execute(
                "SELECT 1 FROM resources WHERE kind='Mesh' AND mesh='' AND name=? LIMIT 1", (mesh,)
            ).fetchone()
            is not None
        )
        if found and serial:
            if self._meshes_found[0] != serial:
                self._meshes_found = (serial, set())
            self._meshes_found[1].add(mesh)
        return found

    def _secrets_in_mesh(self, conn: Conn, mesh: str) -> dict[str, int]:
        out: dict[str, int] = {ORIGIN_GLOBAL: 0, ORIGIN_ZONE: 0}
        for origin, n in conn.execute(
            "SELECT origin, COUNT(*) FROM resources WHERE kind='Secret' AND mesh=? GROUP BY origin",
            (mesh,),
        ):
            out[origin] = int(n)
        return out

    # ------------------------------------------------------------------ API writes

    def put(self, resource: Resource, now: str) -> WriteResult:
        """Write one resource; builtin CA secrets it needs are in ``result.also``."""
        results = self.put_many([resource], now)
        return replace(results[0], also=tuple(results[1:]))

    def put_many(
        self, resources: Sequence[Resource], now: str, kubernetes: Collection[int] = ()
    ) -> list[WriteResult]:
        """Write all resources in one transaction: all of them, or none.

        A failure raises the error of the first resource that failed, with its position in
        ``item_index``; nothing is written. On global each changed resource still gets its
        own revision (so zones see ordinary changes), all committed at once. Builtin CA
        secrets generated for the Meshes written follow the results of ``resources``. The
        mTLS rules (kds.integrity) are checked on the transaction's final state: a Mesh and
        the secrets it uses may come in any order. ``kubernetes``: the positions of the
        resources written in the Kubernetes form, whose names kds.kubernetes_names checks on
        the transaction's state once they are written.
        """
        results = []
        with self.db.write() as conn:
            # Many resources: every key's rows read at once (a 10,000-secret apply ran one
            # SELECT each); a key given twice reads its rows again, after its first write.
            found = self._rows_of(conn, [r.key for r in resources]) if len(resources) > 1 else None
            seen: set[Key] = set()
            for i, resource in enumerate(resources):
                key = resource.key
                rows = found.get(key, {}) if found is not None and key not in seen else None
                seen.add(key)
                try:
                    results.append(self._put(conn, resource, now, rows))
                except KdsError as e:
                    e.item_index = i
                    raise
            check_kubernetes_names(conn, self.origin, resources, results, kubernetes)
            results += self._after_puts(conn, resources, now)
            self._before_commit(conn, results)
        return self._committed(results)

    def _after_puts(self, conn: Conn, resources: Sequence[Resource], now: str) -> list[WriteResult]:
        view = TxView(self, conn)
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
        """Delete one resource; a Mesh's builtin CA secrets deleted with it are in ``also``."""
        with self.db.write() as conn:
            result = self._delete(conn, key)
            self._before_commit(conn, [result])
        self._committed([*result.also, result])
        return result

    def _committed(self, results: list[WriteResult]) -> list[WriteResult]:
        """Runs after the transaction committed, on the writing thread, in commit order."""
        changed = [r for r in results if r.changed]
        if self._on_commit is not None and changed:
            try:
                self._on_commit(changed)
            except Exception as e:  # the write is committed: a failed hook must not undo it
                log.error(
                    "on_commit hook failed",
                    error_type=type(e).__name__,
                    stack="".join(traceback.format_tb(e.__traceback__)),
                )
        return results

    def _put(
        self, conn: Conn, resource: Resource, now: str, rows: Mapping[str, Resource] | None = None
    ) -> WriteResult:
        """Write one resource; ``rows``: its key's rows when already read (``_rows``)."""
        if rows is None:
            rows = self._rows(conn, resource.key)
        # A missing mesh first: the API answers it before any other problem with a Secret.
        if resource.kind is Kind.SECRET and not self._mesh_exists(conn, resource.mesh):
            raise NotFound(f"mesh {resource.mesh!r} does not exist")
        self._check_writable(resource.key, rows, "change")
        old = rows.get(self.origin)
        if old is not None and old.same_content(resource):
            return WriteResult(old, changed=False, record=None)
        stored = resource.with_meta(
            creation_time=old.creation_time if old else now,
            modification_time=now,
            version=self._next_version(conn, old),
        )
        record, wire_bytes = self._log_put(conn, stored)
        conn.execute(UPSERT_RESOURCE, self.sealer.row_values(stored, self.origin, wire_bytes, 0))
        return WriteResult(stored, changed=True, record=record, created=old is None)

    def _delete(self, conn: Conn, key: Key) -> WriteResult:
        rows = self._rows(conn, key)
        self._check_writable(key, rows, "delete")
        origin = self.origin
        if origin not in rows:
            raise NotFound(f"{key} not found")
        also: list[WriteResult] = []
        if not self._leaves_a_copy(rows):
            for name in integrity.check_delete(TxView(self, conn), key):
                secret = Key(Kind.SECRET, key.name, name)
                if origin in self._rows(conn, secret):
                    also.append(self._delete_row(conn, secret))
        result = self._delete_row(conn, key)
        return replace(result, also=tuple(also), previous=rows[origin])

    def _delete_row(self, conn: Conn, key: Key) -> WriteResult:
        conn.execute(
            "DELETE FROM resources WHERE kind=? AND mesh=? AND name=? AND origin=?",
            (str(key.kind), key.mesh, key.name, self.origin),
        )
        return WriteResult(None, changed=True, record=self._log_delete(conn, key), deleted=key)

    # ------------------------------------------------------------------ what a role decides

    def _after_check(self, damaged: list[DamagedRow]) -> None:
        """At open, given the rows whose digest does not match: report them (by key, never
        a value). A zone also removes its synced ones (kds.store._zone)."""
        for d in damaged:
            log.error(
                "damaged row in store: it is not served",
                key=d.key,
                origin=d.origin,
                store=self.location,
                fix="put the resource again, or restore the store from a backup",
            )

    def _before_commit(self, conn: Conn, results: Sequence[WriteResult]) -> None:
        """The last step of an API write transaction (put_many, delete), before it commits:
        global writes its change log's head there; instances sharing the store are told."""

    def _check_writable(self, key: Key, rows: Mapping[str, Resource], verb: str) -> None:
        """Raise when the API may not ``verb`` (change, delete) ``key`` held as ``rows``."""

    def _leaves_a_copy(self, rows: Mapping[str, Resource]) -> bool:
        """Whether deleting the API's row of a key leaves another row of it in its place."""
        return False

    def _next_version(self, conn: Conn, old: Resource | None) -> int:
        """The version of a changed resource whose previous row (of this origin) is ``old``."""
        raise NotImplementedError

    def _log_put(self, conn: Conn, stored: Resource) -> tuple[ChangeRecord | None, bytes | None]:
        """Record a changed resource: (its change record, the encoded change kept with it)."""
        return None, None

    def _log_delete(self, conn: Conn, key: Key) -> ChangeRecord | None:
        """Record a deleted resource: its change record."""
        return None

    def _more_problems(self, view: TxView, resources: Sequence[Resource]) -> integrity.Problems:
        """Rules a role adds to kds.integrity's, checked when those pass."""
        return integrity.Problems()
