"""Coalescing a range of changes and packing it into parts that fit the message limit. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from kds.protocol.records import ChangeRecord, sort_records, sync_units
from kds.wire import BATCH_OVERHEAD, framed_size

__all__ = ["Packer", "Part", "coalesce", "count_kinds", "pack"]


@dataclass(frozen=True)
class Part:
    records: list[ChangeRecord]
    final: bool
    split_unit: bool = False  # a unit (kds.protocol.records) too large for one message

    @cached_property
    def kind_counts(self) -> dict[str, int]:
        """How many of its changes are of each kind, counted once: a range's parts are
        shared by every stream sending them, and each records what it sent by kind."""
        return count_kinds(self.records)


def count_kinds(records: Iterable[ChangeRecord]) -> dict[str, int]:
    """How many of ``records`` are of each kind, by the kind's name."""
    return dict(Counter(str(r.key.kind) for r in records))


def coalesce(records: Iterable[ChangeRecord]) -> list[ChangeRecord]:
    """Keep the newest change per key, in sync order (records.sync_units)."""
    latest: dict[object, ChangeRecord] = {}
    for r in records:
        latest.pop(r.key, None)
        latest[r.key] = r
    return sort_records(list(latest.values()))


def pack(
    records: Sequence[ChangeRecord], max_message_bytes: int, part_bytes: int | None = None
) -> Iterator[Part]:
    """Split into parts whose encoded size stays within max_message_bytes, in sync order,
    never splitting a unit (records.sync_units) unless the unit alone cannot fit: then it
    is split and its parts say so (``split_unit``), so the caller can choose a snapshot.

    With ``part_bytes``, a part is closed once the next unit would take it past that size
    (a unit larger than it goes whole, in a part of its own, up to the message limit).

    Always yields at least one part (an empty final part still carries the revision).
    A single change larger than the limit cannot happen: the API refuses such a resource.
    """
    packer = Packer(max_message_bytes, part_bytes)
    for unit in sync_units(records):
        yield from packer.add(unit)
    yield packer.finish()


class Packer:
    """``pack`` one unit at a time, for units that arrive already in sync order (a snapshot
    read row by row): the parts closed so far are handed out as they close, so only the
    part being filled is held."""

    def __init__(self, max_message_bytes: int, part_bytes: int | None = None):
        self.budget = max_message_bytes - BATCH_OVERHEAD
        self.target = min(self.budget, part_bytes - BATCH_OVERHEAD) if part_bytes else self.budget
        self._current: list[ChangeRecord] = []
        self._size = 0
        self._split = False

    def add(self, unit: Sequence[ChangeRecord]) -> Iterator[Part]:
        """Take the next unit; the parts it closed."""
        n = sum(framed_size(len(r.change)) for r in unit)
        if self._current and self._size + n > self.target:
            yield Part(self._current, final=False, split_unit=self._split)
            self._current, self._size, self._split = [], 0, False
        if n <= self.budget:
            self._current += unit
            self._size += n
            return
        for r in unit:  # too large for any message: split, and say so
            m = framed_size(len(r.change))
            if self._current and self._size + m > self.budget:
                yield Part(self._current, final=False, split_unit=True)
                self._current, self._size = [], 0
            self._current.append(r)
            self._size += m
        self._split = True

    def finish(self) -> Part:
        """The last part (final; empty if nothing was added since the last part closed)."""
        part = Part(self._current, final=True, split_unit=self._split)
        self._current, self._size, self._split = [], 0, False
        return part
