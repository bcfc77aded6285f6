"""What a store returns: rows, write results, snapshots and sync state (plain records).

A row is keyed by (kind, mesh, name, origin): origin ``global`` is, on global, every
resource and, on a zone, a copy synced from global; origin ``zone`` is a zone-local resource.
The rules that connect them (conflicts, the change log and its floor) are the interface's:
kds.store.interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from kds.model import Key, Resource

if TYPE_CHECKING:
    from kds.protocol.batching import Part
from kds.protocol.records import ChangeRecord, sort_records

__all__ = [
    "ANY",
    "ORIGIN_GLOBAL",
    "ORIGIN_ZONE",
    "ChangeRecord",
    "Clause",
    "LeafChanges",
    "Row",
    "Selection",
    "Snapshot",
    "SyncLeaves",
    "SyncState",
    "WriteResult",
    "ZoneApplyResult",
    "ZoneEvent",
    "sort_records",
]

Origin = Literal["global", "zone"]
ORIGIN_GLOBAL: Origin = "global"
ORIGIN_ZONE: Origin = "zone"


@dataclass(frozen=True)
class Row:
    """A resource as a control plane serves it."""

    resource: Resource
    origin: Origin
    shadows_synced: bool = False  # zone-local and global's copy is kept aside


@dataclass(frozen=True)
class Clause:
    """What a row of one origin must be to be selected: its exact name and mesh (None: any)
    and stored labels (exact values, all of them)."""

    name: str | None = None
    mesh: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


ANY: Clause = Clause()


@dataclass(frozen=True)
class Selection:
    """Which rows a list selects (ResourceStore.page): names containing ``name_part``
    (case-sensitive; "" selects all), and per origin what its rows must match; an origin
    absent from ``origins`` selects none of its rows."""

    name_part: str = ""
    origins: Mapping[Origin, Clause] = field(
        default_factory=lambda: {ORIGIN_GLOBAL: ANY, ORIGIN_ZONE: ANY}
    )


@dataclass(frozen=True)
class WriteResult:
    resource: Resource | None  # None for a delete
    changed: bool
    record: ChangeRecord | None  # global only: what the hub pushes to zones
    created: bool = False  # a put that created the resource (for this origin)
    # written in the same transaction as a consequence: a builtin backend's CA secrets
    # (put), or a deleted Mesh's builtin CA secrets (delete)
    also: tuple[WriteResult, ...] = ()
    deleted: Key | None = None  # a delete: the key deleted
    previous: Resource | None = None  # a delete: the row it deleted


@dataclass(frozen=True)
class Snapshot:
    revision: int
    store_id: str
    changes: list[ChangeRecord]  # one put per resource, in sync order
    chain: bytes = b""  # the history chain at ``revision``
    # Global: the snapshot cut into message parts, made once and shared by every stream that
    # sends this snapshot (a fleet of zones taking it at once holds one copy, not one each).
    parts: dict[tuple[int, int], list[Part]] = field(
        default_factory=dict, compare=False, repr=False
    )


@dataclass(frozen=True)
class SyncLeaves:
    """The anti-entropy leaves of a store's synced resources at one revision: each key with
    kds.protocol.digest_tree.leaf_digest of its resource. A damaged row is no leaf."""

    revision: int  # global: its head; a zone: its applied revision
    leaves: list[tuple[Key, bytes]]


@dataclass(frozen=True)
class LeafChanges:
    """The anti-entropy leaves that changed since a revision, up to ``revision``: each key
    with its leaf digest now, or None where it is no leaf any more."""

    revision: int
    leaves: list[tuple[Key, bytes | None]]


@dataclass(frozen=True)
class ZoneEvent:
    """One entry of a zone's status history on global (globalcp.history): ``kind`` says
    which series it belongs to (each is bounded on its own), ``time`` is wall-clock seconds
    and ``data`` JSON text, bounded by its writer."""

    zone: str
    kind: str
    time: float
    data: str


@dataclass(frozen=True)
class SyncState:
    global_store_id: str
    applied_revision: int
    applied_at: str
    chain: bytes = b""  # global's history chain at applied_revision


@dataclass
class ZoneApplyResult:
    applied_revision: int
    rejected: list[tuple[Key, str]] = field(default_factory=list)
    new_conflicts: list[Key] = field(default_factory=list)
    resolved_conflicts: list[Key] = field(default_factory=list)
    removed_stale: int = 0
    already_gone: list[Key] = field(default_factory=list)  # deletes of keys not held here
