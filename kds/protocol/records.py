"""Change records: one committed change on global, encoded once, shared by every zone. Pure.

Also the sync order of a range or snapshot (``sync_units``), which keeps two promises on
every zone, after every transaction it commits:

1. a Secret's Mesh exists (the zone rejects a Secret whose Mesh it lacks), and
2. a Mesh never names, in an mTLS backend, a Secret the zone lacks.

A range always ends at a state global committed (kds: the hub's head stops only at the end
of a transaction), so in its final state both promises hold. The order gets there through
states that keep them too. Units are never split across messages (kds.protocol.batching):

  phase 1  each Mesh put, followed by the puts of the backend Secrets it names that the same
           range carries: one unit. The Mesh comes first (promise 1); the zone applies the
           unit in one transaction, so the Mesh never stands without its secrets (promise 2).
  phase 2  every other Secret and GlobalSecret change, in revision order. Secret deletes come
           after every Mesh put, so a Mesh that stopped using a secret has stopped before
           the secret goes; a secret some Mesh still uses at the end is not deleted at all.
  phase 3  each Mesh delete, preceded by the deletes of that mesh's Secrets the range
           carries: one unit (its backend secrets go in the same transaction as the Mesh).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kds.model import Key, Kind
from kds.mtls import secret_refs
from kds.wire import frame_change, mesh_spec_of

__all__ = [
    "FOREIGN_KEY",
    "GENESIS_CHAIN",
    "ChangeRecord",
    "next_chain",
    "sort_records",
    "sync_units",
]

# The history chain before the first change.
GENESIS_CHAIN = b""

# The key of a record of a kind this version does not know (ChangeRecord.foreign): no
# resource has it, as no resource's name is empty.
FOREIGN_KEY = Key(Kind.GLOBAL_SECRET, "", "")


def next_chain(previous: bytes, change: bytes) -> bytes:
    """chain(r) = H(chain(r-1) || Change(r)): equal chains mean the same history up to r."""
    return hashlib.blake2b(previous + change, digest_size=16).digest()


@dataclass(frozen=True, slots=True)  # slots: a snapshot holds one per resource
class ChangeRecord:
    revision: int
    key: Key
    deleted: bool
    change: bytes  # encoded kds.v1.Change
    chain: bytes = GENESIS_CHAIN  # global's history chain at this revision
    committed_at: float = 0.0  # wall-clock seconds of the commit on global (0: unknown)
    # A change of a kind this version does not know (a newer instance sharing the store
    # logged it), named here: kept for its revision, chain and time, never sent to a zone
    # (globalcp.snapshot_plan.zone_bound); its key is then FOREIGN_KEY.
    foreign: str = ""
    _framed: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _backend: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def framed(self) -> bytes:
        """The change framed as a Batch.changes entry, computed once and shared by all zones."""
        framed = self._framed
        if framed is None:
            framed = frame_change(self.change)
            object.__setattr__(self, "_framed", framed)
        return framed

    @property
    def backend_secrets(self) -> frozenset[str]:
        """A Mesh put: the names of the Secrets its mTLS backends use (else empty)."""
        names = self._backend
        if names is None:
            names = self._backend_secrets()
            object.__setattr__(self, "_backend", names)
        return names

    def _backend_secrets(self) -> frozenset[str]:
        if self.key.kind is not Kind.MESH or self.deleted:
            return frozenset()
        try:
            return frozenset(
                r.secret for r in secret_refs(self.key.name, mesh_spec_of(self.change))
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return frozenset()  # not a spec global would write; nothing to keep together


def sync_units(records: Iterable[ChangeRecord]) -> list[list[ChangeRecord]]:
    """The records (at most one per key: coalesced, or a snapshot) in sync order, grouped
    into the units that must reach a zone in one message. See the module docstring."""
    by_rev = sorted(records, key=lambda r: r.revision)
    if not any(r.key.kind is Kind.MESH for r in by_rev):
        return [[r] for r in by_rev]  # no Mesh, nothing to keep together (bulk secret writes)
    mesh_puts = [r for r in by_rev if r.key.kind is Kind.MESH and not r.deleted]
    mesh_deletes = [r for r in by_rev if r.key.kind is Kind.MESH and r.deleted]
    deleted_meshes = {r.key.name for r in mesh_deletes}
    claimed = {Key(Kind.SECRET, m.key.name, n) for m in mesh_puts for n in m.backend_secrets}
    with_put: dict[str, list[ChangeRecord]] = {}  # a Mesh put's backend secret puts
    with_delete: dict[str, list[ChangeRecord]] = {}  # a Mesh delete's secret deletes
    rest: list[ChangeRecord] = []
    for r in by_rev:
        if r.key.kind is Kind.MESH:
            continue
        if r.key.kind is Kind.SECRET and not r.deleted and r.key in claimed:
            with_put.setdefault(r.key.mesh, []).append(r)
        elif r.key.kind is Kind.SECRET and r.deleted and r.key.mesh in deleted_meshes:
            with_delete.setdefault(r.key.mesh, []).append(r)
        else:
            rest.append(r)
    units = [[m, *with_put.pop(m.key.name, [])] for m in mesh_puts]
    units += [[r] for r in rest]
    units += [[*with_delete.pop(d.key.name, []), d] for d in mesh_deletes]
    return units


def sort_records(records: Sequence[ChangeRecord]) -> list[ChangeRecord]:
    """The records in sync order (sync_units, flattened)."""
    return [r for unit in sync_units(records) for r in unit]
