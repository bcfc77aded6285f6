"""A snapshot as global sends it: cut into message parts once, each part's changes framed and
joined into one body, and the store's record per resource dropped.

A fleet of new zones (a new global, a long outage) all take the same snapshot at once, and
global holds it for as long as the slowest of them takes: 100,000 secrets held as records
(a key, a record and the encoded change each) took about 47 MB, the framed parts 13 MB. Each
stream then writes a part as its batch header and that one body, instead of framing every
change again for every zone. The keys of a part, which a stream needs only to check an
acknowledgement that rejects some, are decoded from the body when asked.

The bodies are kept in an unlinked temporary file (``spill_dir``: global's data directory),
not on global's heap: each stream reads a part back as it sends it (``os.pread``, served
from the page cache, which the kernel may reclaim under pressure, unlike the heap). Held on
the heap, those 13 MB were most of what a snapshot storm added to global's resident memory.
If the file cannot be made or written (a full disk), the remaining bodies stay in memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kds import wire
from kds._pb import sync_pb2 as pb
from kds.model import Key, stays_on_global
from kds.protocol.batching import Packer, Part, count_kinds
from kds.protocol.records import ChangeRecord, sync_units
from kds.store import Snapshot

__all__ = ["PlanBuilder", "SnapshotPart", "SnapshotPlan", "plan_snapshot", "zone_bound"]


def zone_bound(records: list[ChangeRecord]) -> list[ChangeRecord]:
    """The records zones are sent: Kuma's system GlobalSecrets (kds.resource.stays_on_global)
    stay on global, and changes of a kind this version does not know (ChangeRecord.foreign)
    are never sent. A range's revisions and chain still cover what was left out."""
    if not any(r.foreign or stays_on_global(r.key) for r in records):
        return records  # the common case: no copy of a large list
    return [r for r in records if not (r.foreign or stays_on_global(r.key))]


class _Spill:
    """Bodies written one after the other to an unlinked temporary file, read back by offset.
    Written by one thread (the store's reader), read only once the plan is finished.

    Each body is sealed (AES-256-GCM) with a key made for this file and held only in memory:
    the bodies carry secret values in the clear, and blocks a deleted file leaves on disk
    are not zeroed (the store's are, with secure_delete, and sealed with
    --encryption-key-file); what is left on the disk cannot be read without the key, which
    goes with the process."""

    def __init__(self, directory: Path | None):
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (lives with the plan)
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._end = 0

    def add(self, body: bytes) -> tuple[int, int]:
        start = self._end  # a body's offset is its nonce: unique within the file and the key
        sealed = self._aead.encrypt(start.to_bytes(12, "big"), body, None)
        # Flushed at once: a failed write (a full disk) then loses no earlier body.
        self._file.write(sealed)
        self._file.flush()
        self._end += len(sealed)
        return start, len(sealed)

    def read(self, start: int, size: int) -> bytes:
        data = os.pread(self._file.fileno(), size, start)
        if len(data) != size:
            raise OSError(f"snapshot spill file: {len(data)} bytes at {start}, {size} written")
        try:
            return self._aead.decrypt(start.to_bytes(12, "big"), data, None)
        except InvalidTag:
            raise OSError(f"snapshot spill file: the part at {start} was changed") from None


class _Kept:
    """Bodies kept in memory (the spill file could not be made or written)."""

    def __init__(self) -> None:
        self._bodies: list[bytes] = []

    def add(self, body: bytes) -> tuple[int, int]:
        self._bodies.append(body)
        return len(self._bodies) - 1, len(body)

    def read(self, start: int, size: int) -> bytes:
        return self._bodies[start]


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    where: _Spill | _Kept  # holds the body
    start: int
    size: int
    count: int  # changes in it
    kind_counts: Mapping[str, int]  # its changes of each kind (for the zone's sent counts)
    final: bool

    @property
    def body(self) -> bytes:
        """The part's changes, each framed as a Batch.changes entry, joined (read back)."""
        return self.where.read(self.start, self.size)

    def sent_keys(self) -> PartKeys:
        return PartKeys(self)


class PartKeys:
    """The keys of a part's changes, decoded from its body when asked (sized, iterable)."""

    __slots__ = ("_part",)

    def __init__(self, part: SnapshotPart):
        self._part = part

    def __len__(self) -> int:
        return self._part.count

    def __iter__(self) -> Iterator[Key]:
        for change in pb.Batch.FromString(self._part.body).changes:
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


class PlanBuilder:
    """A SnapshotPlan made from units handed over one at a time in sync order (the store's
    ``snapshot_units`` calls ``take``): each part is framed as soon as it closes and its
    records dropped, so at most one part's records are held, never one per resource (the
    read and the cut together peaked at about 70 MB over the 13 MB plan for 100,000
    secrets when the whole snapshot was read as records first)."""

    def __init__(self, max_message_bytes: int, part_bytes: int, spill_dir: Path | None = None):
        self._packer = Packer(max_message_bytes, part_bytes)
        self._parts: list[SnapshotPart] = []
        self._where: _Spill | _Kept
        try:
            self._where = _Spill(spill_dir)
        except OSError:
            self._where = _Kept()

    def take(self, unit: list[ChangeRecord]) -> None:
        if any(stays_on_global(r.key) for r in unit):
            unit = zone_bound(unit)
            if not unit:
                return
        for part in self._packer.add(unit):
            self._parts.append(self._framed(part))

    def finish(self, revision: int, chain: bytes) -> SnapshotPlan:
        self._parts.append(self._framed(self._packer.finish()))
        parts, self._parts = self._parts, []
        return SnapshotPlan(revision, chain, parts)

    def _framed(self, part: Part) -> SnapshotPart:
        records = part.records
        body = b"".join([wire.frame_change(r.change) for r in records])
        try:
            start, size = self._where.add(body)
        except OSError:  # the disk is full: the rest stays in memory
            self._where = _Kept()
            start, size = self._where.add(body)
        return SnapshotPart(
            self._where, start, size, len(records), count_kinds(records), part.final
        )


def plan_snapshot(
    snap: Snapshot, max_message_bytes: int, part_bytes: int, spill_dir: Path | None = None
) -> SnapshotPlan:
    """Cut ``snap`` into parts as zones are sent it (blocking: run off the event loop)."""
    builder = PlanBuilder(max_message_bytes, part_bytes, spill_dir)
    for unit in sync_units(snap.changes):
        builder.take(unit)
    return builder.finish(snap.revision, snap.chain)
