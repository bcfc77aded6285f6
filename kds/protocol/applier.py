"""Zone side of the protocol: turn one received batch into a plan the store applies at once.

Pure: fed a decoded batch and a view of the zone's current rows, returns a Plan (synced
copies to put and delete, rejections, conflicts that began or ended, the revision to record).
The store runs the plan in the same transaction that read the view, so nothing can slip in
between; see kds.store.interface.ZoneStore.apply_batch.

Rules:
- A zone-local row is never written or deleted here; a synced put for a key the zone holds
  locally is kept aside (a name conflict: reported once, when it begins).
- A Secret needs its Mesh on the zone (synced or zone-local) or it is rejected.
- A resource's creation and modification times must be RFC 3339 timestamps, or it is
  rejected: the zone stores and serves them as global sent them.
- A Mesh whose mTLS backends this version cannot read is rejected (fields it does not know
  are not a reason: a newer global may send them).
- A synced Secret the zone's own Mesh of that name uses in its mTLS is not deleted: rejected,
  so a zone-local Mesh never names a Secret the zone lacks. Nor is it changed to what would
  leave that Mesh's backend without a valid CA (the check global's API makes of a Secret a
  backend uses, on the batch's final state): rejected too, so that Mesh keeps a usable CA.
- A synced Mesh is not deleted while Secrets still live in it on the zone; rejected instead.
  The deletes of the Secrets its mTLS backends use are then rejected too, so the Mesh that
  stays never names a Secret the zone lacks (global sends those deletes with the Mesh delete,
  in one part: kds.protocol.records).
- A rejection is reported in the ack and the revision still advances: never retried in a loop.
- An anti-entropy repair batch (``repair``) starts and ends at the zone's revision and is
  applied by the same rules; it records nothing (the revision and chain stay).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kds.errors import FieldViolation, InvalidResource, ProtocolError
from kds.model import Key, Kind, Limits, Resource, validate
from kds.mtls import secret_refs, synced_mtls_problems

__all__ = ["DecodedBatch", "Incoming", "OwnMtls", "Plan", "ZoneView", "plan_batch"]


@dataclass(frozen=True)
class Incoming:
    revision: int
    key: Key | None  # None: the change could not be decoded (e.g. a kind from a newer global)
    resource: Resource | None = None  # set for a put
    error: str = ""

    @property
    def deleted(self) -> bool:
        return self.resource is None


@dataclass(frozen=True)
class DecodedBatch:
    seq: int
    from_revision: int
    revision: int
    snapshot: bool
    final: bool
    head_revision: int
    changes: tuple[Incoming, ...]
    chain: bytes = b""  # final parts: global's history chain at ``revision``
    repair: bool = False  # anti-entropy: applied like any batch; records no revision


class _Problems(Protocol):
    """kds.integrity.Problems: field errors per written resource, by its index."""

    @property
    def by_index(self) -> Mapping[int, Sequence[FieldViolation]]: ...


@dataclass(frozen=True)
class OwnMtls:
    """The zone's own Mesh (kept in place of global's) of a mesh the batch puts Secrets in,
    when its mTLS backends use some of them; ``secrets``: the Secrets its backends use, as
    the zone serves them before the batch (its own, or global's copies). ``check`` is
    kds.integrity.check_written, which global's API runs on a Secret a backend uses: the
    store gives it, as it needs the cryptography package, which this pure core does not
    load."""

    mesh: Resource
    secrets: Mapping[str, Resource]
    check: Callable[[_OwnMtlsView, Sequence[Resource]], _Problems]


class _OwnMtlsView:
    """kds.integrity's view (a TxView) of the zone's own Mesh and the Secrets its backends
    use, with ``written`` (global's copies the batch puts) in place of the zone's rows."""

    def __init__(self, own: OwnMtls, written: Mapping[str, Resource]):
        self._own = own
        self._written = written

    def get(self, key: Key) -> Resource | None:
        mesh = self._own.mesh
        if key == mesh.key:
            return mesh
        if key.kind is not Kind.SECRET or key.mesh != mesh.name:
            return None
        return self._written.get(key.name) or self._own.secrets.get(key.name)

    def secret_meshes(self, name: str) -> list[str]:
        return []  # asked only to say where a missing secret lives instead

    def secret_names(self, mesh: str) -> list[str]:
        return []  # asked only before a Mesh delete


@dataclass(frozen=True)
class ZoneView:
    local: frozenset[Key] = frozenset()  # batch keys that have a zone-local row
    synced: frozenset[Key] = frozenset()  # batch keys that have a synced row
    # Meshes with a zone-local (synced) row: at least those the batch's keys name or live in
    local_meshes: frozenset[str] = frozenset()
    synced_meshes: frozenset[str] = frozenset()
    # for meshes the batch deletes: (zone-local secrets, synced secrets) living in them
    secrets_per_mesh: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # for meshes the batch deletes: the Secrets their synced copy's mTLS backends use
    backend_secrets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # for meshes the batch deletes Secrets of: the Secrets the zone's own Mesh's backends use
    local_backend_secrets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # for meshes the batch puts Secrets in: the zone's own Mesh, when its backends use them
    own_mtls: Mapping[str, OwnMtls] = field(default_factory=dict)
    stale: tuple[Key, ...] = ()  # final snapshot part: synced keys the snapshot did not carry
    applied_revision: int | None = None  # the zone's recorded revision (None: not checked)


@dataclass
class Plan:
    puts: list[Resource] = field(default_factory=list)
    deletes: list[Key] = field(default_factory=list)
    rejected: list[tuple[Key, str]] = field(default_factory=list)
    new_conflicts: list[Key] = field(default_factory=list)
    resolved_conflicts: list[Key] = field(default_factory=list)
    record_revision: int | None = None
    stale_removed: int = 0
    # Keys whose only changes were deletes this zone had nothing to delete for (deletes are
    # idempotent): nothing done, nothing to report as done.
    already_gone: list[Key] = field(default_factory=list)


# Zones accept what global accepted; the size limit is global's business.
_ZONE_LIMITS = Limits(max_data_bytes=1 << 62)

# A synced resource's times: RFC 3339, as global writes them (kds.clock.rfc3339:
# 2026-11-30T00:00:00.000Z) or as an older or newer global could (no fraction or one of up to
# nine digits, an offset for the Z), at most 35 characters. Used with fullmatch only ("$"
# would also match before a final newline); ASCII, so no other script's digits pass.
_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_TIME_CHARS = 35


def _time_problems(res: Resource) -> list[FieldViolation]:
    """The times of ``res`` that are not RFC 3339 timestamps (kdsctl, for one, could not
    read them), named and never shown."""
    return [
        FieldViolation(name, "must be an RFC 3339 timestamp such as 2006-01-02T15:04:05.000Z")
        for name, value in (
            ("creation_time", res.creation_time),
            ("modification_time", res.modification_time),
        )
        if not _is_time(value)
    ]


def _is_time(value: str) -> bool:
    if len(value) > _TIME_CHARS or not _TIME_RE.fullmatch(value):
        return False
    try:  # the shape is right; the ranges (month, day of that month, hour, offset) too?
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def plan_batch(batch: DecodedBatch, view: ZoneView) -> Plan:
    """Raise ProtocolError if a range does not start where the zone is: a gap would
    silently lose changes, so the stream is dropped and the zone resumes from its revision."""
    if (
        not batch.snapshot
        and view.applied_revision is not None
        and batch.from_revision != view.applied_revision
    ):
        raise ProtocolError(
            f"batch {batch.seq} covers revisions ({batch.from_revision}, {batch.revision}] "
            f"but this zone is at revision {view.applied_revision}"
        )
    plan = Plan()
    synced = set(view.synced)
    local = view.local
    synced_meshes = set(view.synced_meshes)
    secrets = {m: list(c) for m, c in view.secrets_per_mesh.items()}
    put_here: set[Key] = set()
    gone: list[Key] = []
    # Kept by key, as lists until the end: a batch putting and deleting the same keys
    # (which no global sends, as ranges are coalesced) rebuilt the list of puts at each
    # delete, and 16,000 such pairs in a 570 KB batch held the zone's store for 100 s.
    puts: dict[Key, Resource] = {}
    deletes: dict[Key, None] = {}
    new_conflicts: dict[Key, None] = {}
    resolved: dict[Key, None] = {}

    def mesh_present(mesh: str) -> bool:
        return mesh in synced_meshes or mesh in view.local_meshes

    def delete(key: Key) -> None:
        if key not in synced:
            gone.append(key)  # deletes are idempotent
            return
        if key.kind is Kind.MESH:
            local_n, synced_n = secrets.get(key.name, [0, 0])
            if key.name not in view.local_meshes and (local_n or synced_n):
                plan.rejected.append(
                    (key, f"mesh still holds {local_n} zone-local and {synced_n} synced secrets")
                )
                keep_backend_secrets(key.name)
                return
            synced_meshes.discard(key.name)
        elif (
            key.kind is Kind.SECRET
            and key not in local
            and key.name in view.local_backend_secrets.get(key.mesh, ())
        ):
            # Global's copy is the Secret the zone's own Mesh (same name as global's, kept in
            # its place) uses in its mTLS: deleting it would leave that Mesh without its CA.
            plan.rejected.append((key, f"this zone's own mesh {key.mesh!r} uses it in its mTLS"))
            return
        elif key.kind is Kind.SECRET and key.mesh in secrets:
            secrets[key.mesh][1] -= 1
        synced.discard(key)
        if key in put_here:  # an uncoalesced range put it earlier in this batch: undo that
            put_here.discard(key)
            del puts[key]
        deletes[key] = None
        if key in new_conflicts:
            del new_conflicts[key]  # began and ended in this batch: nothing to report
        elif key in local:
            resolved[key] = None

    def keep_backend_secrets(mesh: str) -> None:
        """The Mesh stays: undo this batch's deletes of the Secrets its backends use."""
        for name in sorted(view.backend_secrets.get(mesh, frozenset())):
            key = Key(Kind.SECRET, mesh, name)
            if key not in deletes:
                continue
            del deletes[key]
            resolved.pop(key, None)
            synced.add(key)
            plan.rejected.append((key, f"mesh {mesh!r} stays on this zone and its mTLS uses it"))

    for ch in batch.changes:
        if ch.key is None:
            plan.rejected.append((Key(Kind.SECRET, "", ""), ch.error or "undecodable change"))
            continue
        if ch.error:
            plan.rejected.append((ch.key, ch.error))
            continue
        if ch.resource is None:
            delete(ch.key)
            continue
        res = ch.resource
        try:
            validate(res, _ZONE_LIMITS)
        except InvalidResource as e:
            plan.rejected.append((ch.key, f"invalid resource: {e}"))
            continue
        if times := _time_problems(res):
            plan.rejected.append((ch.key, f"invalid resource: {times[0]}"))
            continue
        if res.kind is Kind.MESH and (problems := synced_mtls_problems(res.name, res.spec)):
            plan.rejected.append((ch.key, f"invalid resource: {problems[0]}"))
            continue
        if res.kind is Kind.SECRET and not mesh_present(res.mesh):
            plan.rejected.append((ch.key, f"mesh {res.mesh!r} does not exist on this zone"))
            continue
        if ch.key in local and ch.key not in synced:
            new_conflicts[ch.key] = None
        if res.kind is Kind.MESH:
            synced_meshes.add(res.name)
        elif res.kind is Kind.SECRET and res.mesh in secrets and ch.key not in synced:
            secrets[res.mesh][1] += 1
        synced.add(ch.key)
        put_here.add(ch.key)
        puts.pop(ch.key, None)  # put again: the last put stands
        puts[ch.key] = res

    for own in view.own_mtls.values():
        used = {r.secret for r in secret_refs(own.mesh.name, own.mesh.spec)}
        written = {
            k.name: r
            for k, r in puts.items()
            if k.kind is Kind.SECRET
            and k.mesh == own.mesh.name
            and k.name in used
            and k not in local  # the zone's own Secret stays in place of global's copy
        }
        for key, reason in _own_ca_refusals(own, written):
            del puts[key]
            put_here.discard(key)
            plan.rejected.append((key, reason))

    if batch.snapshot and batch.final:
        # Secrets before meshes, so a stale mesh's stale secrets go first.
        for key in sorted(view.stale, key=lambda k: k.kind is Kind.MESH):
            before = len(deletes)
            delete(key)
            plan.stale_removed += len(deletes) - before
    plan.puts, plan.deletes = list(puts.values()), list(deletes)
    plan.new_conflicts, plan.resolved_conflicts = list(new_conflicts), list(resolved)
    if batch.final and not batch.repair:
        plan.record_revision = batch.revision
    if gone:
        done = put_here.union(deletes)
        plan.already_gone = [k for k in dict.fromkeys(gone) if k not in done]
    return plan


def _own_ca_refusals(own: OwnMtls, written: dict[str, Resource]) -> list[tuple[Key, str]]:
    """The puts of ``written`` (by name) that would leave a backend of the zone's own Mesh
    without a valid CA, each with the first problem. Refusing one may break a backend that
    another put mended (a cert two backends share): the check runs again on the puts left
    until it refuses none."""
    refused: list[tuple[Key, str]] = []
    while written:
        resources = list(written.values())
        problems = own.check(_OwnMtlsView(own, written), resources).by_index
        if not problems:
            break
        for i, errors in problems.items():
            res = resources[i]
            # "mesh 'm' mTLS backend 'b' uses this secret: <field>: <problem>"
            refused.append((res.key, f"this zone's own {errors[0].message}"))
            del written[res.name]
    return refused
