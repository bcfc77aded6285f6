"""A snapshot as global sends it: cut into message parts once, each part's changes framed and
joined into one bytes object, and the store's record per resource dropped.

A fleet of new zones (a new global, a long outage) all take the same snapshot at once, and
global holds it for as long as the slowest of them takes: 100,000 secrets held as records
(a key, a record and the encoded change each) took about 47 MB, the framed parts 13 MB. Each
stream then writes a part as its batch header and that one body, instead of framing every
change again for every zone. The keys of a part, which a stream needs only to check an
acknowledgement that rejects some, are decoded from the body when asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat

from kds import wire
from kds._pb import sync_pb2 as pb
from kds.model import Key, Kind, stays_on_global
from kds.protocol.batching import pack
from kds.protocol.records import ChangeRecord
from kds.store import Snapshot

__all__ = ["SnapshotPart", "SnapshotPlan", "plan_snapshot", "zone_bound"]


def zone_bound(records: list[ChangeRecord]) -> list[ChangeRecord]:
    """The records zones are sent: Kuma's system GlobalSecrets (kds.resource.stays_on_global)
    stay on global. A range's revisions and chain still cover what was left out."""
    if not any(stays_on_global(r.key) for r in records):
        return records  # the common case: no copy of a large list
    return [r for r in records if not stays_on_global(r.key)]


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    body: bytes  # the part's changes, each framed as a Batch.changes entry, joined
    count: int  # changes in it
    kind_counts: tuple[tuple[Kind, int], ...]
    final: bool

    def kinds(self) -> Iterator[Kind]:
        """The kind of each change in it (for the zone's sent counts)."""
        for kind, n in self.kind_counts:
            yield from repeat(kind, n)

    def sent_keys(self) -> PartKeys:
        return PartKeys(self.body, self.count)


class PartKeys:
    """The keys of a part's changes, decoded from its body when asked (sized, iterable)."""

    __slots__ = ("_body", "_count")

    def __init__(self, body: bytes, count: int):
        self._body = body
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Key]:
        for change in pb.Batch.FromString(self._body).changes:
            if change.WhichOneof("op") == "delete":
                yield wire.key_from_pb(change.delete)
            else:
                yield wire.resource_from_pb(change.put).key


@dataclass(frozen=True, slots=True, weakref_slot=True)
class SnapshotPlan:
    revision: int
    chain: bytes  # the history chain at ``revision``
    parts: list[SnapshotPart]

    @property
    def resources(self) -> int:
        return sum(p.count for p in self.parts)


def plan_snapshot(snap: Snapshot, max_message_bytes: int, part_bytes: int) -> SnapshotPlan:
    """Cut ``snap`` into parts as zones are sent it (blocking: run off the event loop)."""
    parts = []
    for part in pack(zone_bound(snap.changes), max_message_bytes, part_bytes):
        records = part.records
        kinds = Counter(r.key.kind for r in records)
        body = b"".join([wire.frame_change(r.change) for r in records])
        parts.append(SnapshotPart(body, len(records), tuple(kinds.items()), part.final))
    return SnapshotPlan(snap.revision, snap.chain, parts)
