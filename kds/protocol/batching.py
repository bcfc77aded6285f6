"""Coalescing a range of changes and packing it into parts that fit the message limit. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from kds.protocol.records import ChangeRecord, sort_records, sync_units
from kds.wire import BATCH_OVERHEAD, framed_size

__all__ = ["Part", "coalesce", "pack"]


@dataclass(frozen=True)
class Part:
    records: list[ChangeRecord]
    final: bool
    split_unit: bool = False  # a unit (kds.protocol.records) too large for one message


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
    budget = max_message_bytes - BATCH_OVERHEAD
    target = min(budget, part_bytes - BATCH_OVERHEAD) if part_bytes else budget
    current: list[ChangeRecord] = []
    size = 0
    split = False
    for unit in sync_units(records):
        n = sum(framed_size(len(r.change)) for r in unit)
        if current and size + n > target:
            yield Part(current, final=False, split_unit=split)
            current, size, split = [], 0, False
        if n <= budget:
            current += unit
            size += n
            continue
        for r in unit:  # too large for any message: split, and say so
            m = framed_size(len(r.change))
            if current and size + m > budget:
                yield Part(current, final=False, split_unit=True)
                current, size = [], 0
            current.append(r)
            size += m
        split = True
    yield Part(current, final=True, split_unit=split)
