"""A zone's engine on PostgreSQL: zone-local writes, global's copies read-only, applying
sync batches; the rules are the SQLite backend's (kds.store.sqlite._zone).

API writes make origin ``zone`` rows, versioned locally; a key held only as global's copy is
read-only. ``apply_batch`` plans a batch with kds.protocol.applier against the rows it
touches and executes the plan and records the applied revision in one transaction, committed
without waiting for the server's WAL flush (``synchronous_commit=off`` for that transaction
only): a server crash may lose the last batches with their revision, and global resends them.

Several zonecp instances may share the store; writers hold the store's advisory lock. Only
the leader applies batches: with ``fencing`` set, each batch first checks that the store's
leader epoch is still the one this instance took, in the applying transaction, so an old
leader that was paused past its lease cannot apply after a new leader took over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from kds.errors import ReadOnlySynced, StoreError
from kds.model import Key, Kind, Resource
from kds.mtls import secret_refs
from kds.protocol.applier import DecodedBatch, Plan, ZoneView, plan_batch
from kds.store.postgres._db import get_meta, set_meta
from kds.store.postgres._resources import UPSERT, Conn, PgResourceEngine
from kds.store.results import ORIGIN_GLOBAL, ORIGIN_ZONE, SyncState, WriteResult, ZoneApplyResult

log = structlog.get_logger("kds.store")

__all__ = ["NotLeader", "PgZoneEngine"]


class NotLeader(StoreError):
    """This zone instance no longer leads: another took the stream (its batch not applied)."""


class PgZoneEngine(PgResourceEngine):
    """A zone's store on PostgreSQL as a blocking engine."""

    role = "zone"
    origin = ORIGIN_ZONE
    # The leader epoch this instance holds (kds.store.postgres._leader); None: no check
    # (a single instance, or the tests).
    fencing: int | None = None

    def _check_writable(self, key: Key, rows: Mapping[str, Resource], verb: str) -> None:
        if ORIGIN_GLOBAL in rows and ORIGIN_ZONE not in rows:
            raise ReadOnlySynced(
                f"{key} is synced from global and read-only on this zone: {verb} it on global"
            )

    def _leaves_a_copy(self, rows: Mapping[str, Resource]) -> bool:
        return ORIGIN_GLOBAL in rows

    def _next_version(self, conn: Conn, old: Resource | None) -> int:
        return old.version + 1 if old else 1

    def _announce(self, conn: Conn, results: Sequence[WriteResult]) -> None:
        # A zone-local write may start or end a name conflict: the leader tells global.
        if any(r.changed for r in results):
            self._notify(conn, "local")

    def _after_check(self, damaged: list[tuple[str, str, str, str]]) -> None:
        local = [d for d in damaged if d[3] == ORIGIN_ZONE]
        synced = [d for d in damaged if d[3] != ORIGIN_ZONE]
        super()._after_check(local)
        if not synced:
            return
        with self.db.write() as conn:
            for kind, mesh, name, origin in synced:
                conn.execute(
                    "DELETE FROM resources WHERE kind=%s AND mesh=%s AND name=%s AND origin=%s",
                    (kind, mesh, name, origin),
                )
            for k in ("synced_store_id", "applied_chain", "applied_at", "snapshot_tag"):
                set_meta(conn, k, "")
            set_meta(conn, "applied_revision", 0)
        log.error(
            "damaged synced rows removed: the zone takes a snapshot from global to repair them",
            count=len(synced),
            store=self.location,
        )

    # ------------------------------------------------------------------ sync

    def _sync_revision(self, conn: Conn) -> int:
        return int(get_meta(conn, "applied_revision", "0"))

    def sync_state(self) -> SyncState:
        with self.db.read(snapshot=True) as conn:
            return SyncState(
                get_meta(conn, "synced_store_id"),
                int(get_meta(conn, "applied_revision", "0")),
                get_meta(conn, "applied_at"),
                bytes.fromhex(get_meta(conn, "applied_chain")),
            )

    def apply_batch(self, batch: DecodedBatch, global_store_id: str, now: str) -> ZoneApplyResult:
        with self.db.write() as conn:
            conn.execute("SET LOCAL synchronous_commit TO OFF")
            if self.fencing is not None:
                held = get_meta(conn, "leader_epoch", "0")
                if held != str(self.fencing):
                    raise NotLeader(
                        f"this instance led the zone's stream at epoch {self.fencing}, but the "
                        f"store is at epoch {held}: another instance took over; batch not applied"
                    )
            gen = self._snapshot_gen(conn, batch, global_store_id) if batch.snapshot else 0
            view = self._zone_view(conn, batch, gen)
            plan = plan_batch(batch, view)
            self._execute(conn, plan, gen)
            applied = int(get_meta(conn, "applied_revision", "0"))
            if plan.record_revision is not None:
                applied = plan.record_revision
                set_meta(conn, "applied_revision", applied)
                set_meta(conn, "synced_store_id", global_store_id)
                set_meta(conn, "applied_chain", batch.chain.hex())
                set_meta(conn, "applied_at", now)
        return ZoneApplyResult(
            applied_revision=applied,
            rejected=plan.rejected,
            new_conflicts=plan.new_conflicts,
            resolved_conflicts=plan.resolved_conflicts,
            removed_stale=plan.stale_removed,
        )

    def _snapshot_gen(self, conn: Conn, batch: DecodedBatch, store_id: str) -> int:
        """The generation every part of one snapshot stamps (kds.store.sqlite._zone)."""
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
                "SELECT kind, mesh, name FROM resources WHERE origin='global' AND sync_gen != %s",
                (gen,),
            )
            stale = [k for k in (Key(Kind(a), b, c) for a, b, c in cur) if k not in keys]
        local: set[Key] = set()
        synced: set[Key] = set()
        for key in keys | set(stale):
            rows = self._rows(conn, key)
            if ORIGIN_ZONE in rows:
                local.add(key)
            if ORIGIN_GLOBAL in rows:
                synced.add(key)
        local_meshes: set[str] = set()
        synced_meshes: set[str] = set()
        for name, origin in conn.execute("SELECT name, origin FROM resources WHERE kind='Mesh'"):
            (local_meshes if origin == ORIGIN_ZONE else synced_meshes).add(name)
        deleted_meshes = {
            k.name
            for k in (set(stale) | {c.key for c in batch.changes if c.deleted and c.key})
            if k.kind is Kind.MESH
        }
        per_mesh = {}
        backend_secrets = {}
        for m in deleted_meshes:
            n = self._secrets_in_mesh(conn, m)
            per_mesh[m] = (n[ORIGIN_ZONE], n[ORIGIN_GLOBAL])
            synced_mesh = self._rows(conn, Key(Kind.MESH, "", m)).get(ORIGIN_GLOBAL)
            if synced_mesh is not None:
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
            stale=tuple(stale),
        )

    def _execute(self, conn: Conn, plan: Plan, gen: int) -> None:
        for key in plan.deletes:
            conn.execute(
                "DELETE FROM resources WHERE kind=%s AND mesh=%s AND name=%s AND origin='global'",
                (str(key.kind), key.mesh, key.name),
            )
        if plan.puts:
            with conn.cursor() as cur:
                cur.executemany(
                    UPSERT, [self.sealer.row_values(r, ORIGIN_GLOBAL, None, gen) for r in plan.puts]
                )
