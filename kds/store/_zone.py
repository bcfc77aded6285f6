"""A zone's engine, on either backend: zone-local writes, global's copies read-only, and
applying sync batches.

API writes make origin ``zone`` rows, versioned locally (1, 2, ...), with no change log. A
key held only as global's copy is read-only here: a write of it that changes nothing is
answered as unchanged, any other is refused (ReadOnlySynced). ``apply_batch`` plans a batch with
kds.protocol.applier against the rows it touches, then executes the plan and records the
applied revision in the same transaction, committed without waiting for the flush to disk
(``Db.write(durable=False)``): a crash may lose the last batches, but the applied revision
goes with them and global sends them again at the next connection.

At open, synced rows found damaged (kds.store._rows) are removed and the recorded sync
state cleared, so the zone takes a snapshot from global at its next connection instead of
resuming: the snapshot rewrites every synced row through ``apply_batch``. Damaged
zone-local rows cannot come back from global: they are reported and never served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import structlog

from kds import integrity
from kds.crypto import DataCipher
from kds.errors import ReadOnlySynced
from kds.model import Key, Kind, Resource
from kds.mtls import secret_refs, synced_mtls_problems
from kds.protocol.applier import DecodedBatch, OwnMtls, Plan, ZoneView, plan_batch
from kds.store._engine import ResourceEngine
from kds.store._kinds import known_kind
from kds.store._rows import UPSERT_RESOURCE, Conn, DamagedRow, get_meta, set_meta, set_metas
from kds.store._select import select_key_rows
from kds.store.interface import OnCommit
from kds.store.results import ORIGIN_GLOBAL, ORIGIN_ZONE, SyncState, WriteResult, ZoneApplyResult

log = structlog.get_logger("kds.store")

__all__ = ["ZoneEngine", "ZoneOptions"]


class ZoneOptions(TypedDict, total=False):
    """ZoneEngine's options, as each backend's engine takes them."""

    cipher: DataCipher | None
    on_commit: OnCommit | None
    new_store: bool


class ZoneEngine(ResourceEngine):
    """A zone's store as a blocking engine (one call at a time per thread)."""

    role = "zone"
    origin = ORIGIN_ZONE

    # ------------------------------------------------------------------ zone-local writes

    def _check_writable(self, key: Key, rows: Mapping[str, Resource], verb: str) -> None:
        if ORIGIN_GLOBAL in rows and ORIGIN_ZONE not in rows:
            raise ReadOnlySynced(
                f"{key} is synced from global and read-only on this zone: {verb} it on global"
            )

    def _put(
        self, conn: Conn, resource: Resource, now: str, rows: Mapping[str, Resource] | None = None
    ) -> WriteResult:
        if rows is None:
            rows = self._rows(conn, resource.key)
        synced = rows.get(ORIGIN_GLOBAL)
        if ORIGIN_ZONE not in rows and synced is not None and synced.same_content(resource):
            # Global's copy written back as it is (a listing applied again): nothing changes,
            # so it is answered as unchanged; any change to it is refused (_check_writable).
            return WriteResult(synced, changed=False, record=None)
        return super()._put(conn, resource, now, rows)

    def _leaves_a_copy(self, rows: Mapping[str, Resource]) -> bool:
        # A local row that shadows a synced copy leaves that copy in its place.
        return ORIGIN_GLOBAL in rows

    def _next_version(self, conn: Conn, old: Resource | None) -> int:
        return old.version + 1 if old else 1

    def _before_commit(self, conn: Conn, results: Sequence[WriteResult]) -> None:
        # A zone-local write may start or end a name conflict: the leader tells global.
        if any(r.changed for r in results):
            self.db.notify(conn, "local")

    # ------------------------------------------------------------------ damage

    def _after_check(self, damaged: list[DamagedRow]) -> None:
        local = [d for d in damaged if d.origin == ORIGIN_ZONE]
        synced = [d for d in damaged if d.origin != ORIGIN_ZONE]
        for d in local:
            log.error(
                "damaged zone-local row: global cannot repair it; it is not served",
                key=d.key,
                store=self.location,
                fix="put the resource again on this zone, or restore the store from a backup",
            )
        if not synced:
            return
        with self.db.write() as conn:
            self.db.delete_rows(conn, synced)
            for k in ("synced_store_id", "applied_chain", "applied_at", "snapshot_tag"):
                set_meta(conn, k, "")
            set_meta(conn, "applied_revision", 0)
        log.error(
            "damaged synced rows removed: the zone takes a snapshot from global to repair them",
            keys=sorted({d.key for d in synced})[:100],
            count=len(synced),
            store=self.location,
        )

    # ------------------------------------------------------------------ sync

    def _sync_revision(self, conn: Conn) -> int:
        return int(get_meta(conn, "applied_revision", "0"))

    def bind_zone(self, zone: str) -> str:
        """The zone this store serves: ``zone``, recorded now if the store names none yet (a
        new store, or one from a release that did not record it), else the one recorded."""
        with self.db.write() as conn:
            held = get_meta(conn, "zone")
            if not held:
                set_meta(conn, "zone", zone)
            return held or zone

    def sync_state(self) -> SyncState:
        with self.db.read(snapshot=True) as conn:
            return SyncState(
                get_meta(conn, "synced_store_id"),
                int(get_meta(conn, "applied_revision", "0")),
                get_meta(conn, "applied_at"),
                bytes.fromhex(get_meta(conn, "applied_chain")),
            )

    def apply_batch(self, batch: DecodedBatch, global_store_id: str, now: str) -> ZoneApplyResult:
        """Plan (kds.protocol.applier) and apply one batch in one transaction, committed
        without waiting for the flush to disk (zone-local API writes keep it: a 50-zone
        fleet spent 30% of its time in this fsync)."""
        with self.db.write(durable=False) as conn:
            return self._apply_in(conn, batch, global_store_id, now)

    def _apply_in(
        self, conn: Conn, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        """apply_batch's work, inside the write transaction ``conn`` is in."""
        self._before_apply(conn)
        gen = self._snapshot_gen(conn, batch, global_store_id) if batch.snapshot else 0
        view = self._zone_view(conn, batch, gen)
        plan = plan_batch(batch, view)
        self._execute(conn, plan, gen)
        applied = view.applied_revision or 0  # read at the start of this transaction
        if plan.record_revision is not None:
            applied = plan.record_revision
            values = {
                "applied_revision": applied,
                "synced_store_id": global_store_id,
                "applied_chain": batch.chain.hex(),
                "applied_at": now,
            }
            set_metas(conn, values)
        return ZoneApplyResult(
            applied_revision=applied,
            rejected=plan.rejected,
            new_conflicts=plan.new_conflicts,
            resolved_conflicts=plan.resolved_conflicts,
            removed_stale=plan.stale_removed,
            already_gone=plan.already_gone,
        )

    def _before_apply(self, conn: Conn) -> None:
        """First in each applying transaction: raise to refuse the batch (kds.store.postgres
        checks that this instance still leads the zone's stream)."""

    def _snapshot_gen(self, conn: Conn, batch: DecodedBatch, store_id: str) -> int:
        """The generation stamped by every part of one snapshot; a new snapshot gets a new one.

        A counter, not the revision: a snapshot from a new global store may share the revision
        (0 for an empty store) with rows written earlier, and those must still go stale.
        """
        tag = f"{store_id}@{batch.revision}"
        gen = int(get_meta(conn, "snapshot_gen", "0"))
        if get_meta(conn, "snapshot_tag") != tag:
            gen += 1
            set_meta(conn, "snapshot_gen", gen)
            set_meta(conn, "snapshot_tag", tag)
        return gen

    def _zone_view(self, conn: Conn, batch: DecodedBatch, gen: int) -> ZoneView:
        keys = {c.key for c in batch.changes if c.key is not None}
        stale: list[Key] = []
        if batch.snapshot and batch.final:
            cur = conn.execute(
                "SELECT kind, mesh, name FROM resources WHERE origin='global' AND sync_gen != ?",
                (gen,),
            )
            for k, m, n in cur:
                kind = known_kind(k, self.location)  # else left to the version that knows it
                if kind is not None and Key(kind, m, n) not in keys:
                    stale.append(Key(kind, m, n))
        local: set[Key] = set()
        synced: set[Key] = set()
        local_meshes: set[str] = set()
        synced_meshes: set[str] = set()
        # Which origins hold each key is all the plan needs: the rows themselves are not
        # read back (nor their digests checked), which was about a third of applying a
        # one-change batch. Of the Meshes, only those the batch's resources live in are
        # read, in the same statements: reading every Mesh made a one-change batch on a
        # zone with 1,000 meshes cost 8 times what it did with one.
        wanted = keys | set(stale)
        meshes = {Key(Kind.MESH, "", k.mesh) for k in wanted if k.mesh}
        for kind, mesh, (name, origin) in select_key_rows(conn, "name, origin", wanted | meshes):
            key = Key(kind, mesh, name)
            if kind is Kind.MESH:
                (local_meshes if origin == ORIGIN_ZONE else synced_meshes).add(name)
            if key not in wanted:
                continue
            if origin == ORIGIN_ZONE:
                local.add(key)
            elif origin == ORIGIN_GLOBAL:
                synced.add(key)
        deleted_keys = set(stale) | {c.key for c in batch.changes if c.deleted and c.key}
        deleted_meshes = {k.name for k in deleted_keys if k.kind is Kind.MESH}
        per_mesh = {}
        backend_secrets = {}
        # The zone's own Meshes whose secrets the batch deletes: which secrets they use.
        local_backend = {}
        for m in {k.mesh for k in deleted_keys if k.kind is Kind.SECRET} & local_meshes:
            own = self._rows(conn, Key(Kind.MESH, "", m)).get(ORIGIN_ZONE)
            if own is not None:
                local_backend[m] = frozenset(r.secret for r in secret_refs(m, own.spec))
        for m in deleted_meshes:
            n = self._secrets_in_mesh(conn, m)
            per_mesh[m] = (n[ORIGIN_ZONE], n[ORIGIN_GLOBAL])
            synced_mesh = self._rows(conn, Key(Kind.MESH, "", m)).get(ORIGIN_GLOBAL)
            # A Mesh stored before its mTLS was checked on arrival may not be readable.
            if synced_mesh is not None and not synced_mtls_problems(m, synced_mesh.spec):
                refs = secret_refs(m, synced_mesh.spec)
                backend_secrets[m] = frozenset(r.secret for r in refs)
        return ZoneView(
            applied_revision=int(get_meta(conn, "applied_revision", "0")),
            local=frozenset(local),
            synced=frozenset(synced),
            local_meshes=frozenset(local_meshes),
            synced_meshes=frozenset(synced_meshes),
            secrets_per_mesh=per_mesh,
            backend_secrets=backend_secrets,
            local_backend_secrets=local_backend,
            own_mtls=self._own_mtls(conn, batch, local, local_meshes),
            stale=tuple(stale),
        )

    def _own_mtls(
        self, conn: Conn, batch: DecodedBatch, local: set[Key], local_meshes: set[str]
    ) -> dict[str, OwnMtls]:
        """The zone's own Meshes whose mTLS backends use global's copies the batch puts,
        each with the Secrets its backends use as this zone serves them now."""
        if not local_meshes:  # the common case: no own Mesh, no pass over the changes
            return {}
        put: dict[str, set[str]] = {}
        for c in batch.changes:
            k = c.key
            # A Secret the zone holds itself stays in place of global's copy: not one of them.
            if c.resource is None or k is None or k.kind is not Kind.SECRET or k in local:
                continue
            if k.mesh in local_meshes:
                put.setdefault(k.mesh, set()).add(k.name)
        # Read in bulk (each statement is a round trip on PostgreSQL): the zone's own Meshes,
        # then the Secrets of those whose backends use what the batch puts.
        meshes = self._rows_of(conn, [Key(Kind.MESH, "", m) for m in put])
        used: dict[str, tuple[Resource, set[str]]] = {}
        for m, names in put.items():
            own = meshes.get(Key(Kind.MESH, "", m), {}).get(ORIGIN_ZONE)
            refs = {r.secret for r in secret_refs(m, own.spec)} if own is not None else set()
            if own is not None and not refs.isdisjoint(names):
                used[m] = (own, refs)
        keys = [Key(Kind.SECRET, m, n) for m, (_, refs) in used.items() for n in refs]
        rows = self._rows_of(conn, keys)
        out = {}
        for m, (own, refs) in used.items():
            secrets = {}
            for name in refs:
                found = rows.get(Key(Kind.SECRET, m, name), {})
                if (row := found.get(ORIGIN_ZONE) or found.get(ORIGIN_GLOBAL)) is not None:
                    secrets[name] = row
            out[m] = OwnMtls(own, secrets, integrity.check_written)
        return out

    def _execute(self, conn: Conn, plan: Plan, gen: int) -> None:
        for key in plan.deletes:
            conn.execute(
                "DELETE FROM resources WHERE kind=? AND mesh=? AND name=? AND origin='global'",
                (str(key.kind), key.mesh, key.name),
            )
        if plan.puts:
            conn.executemany(
                UPSERT_RESOURCE,
                [self.sealer.row_values(r, ORIGIN_GLOBAL, None, gen) for r in plan.puts],
            )
