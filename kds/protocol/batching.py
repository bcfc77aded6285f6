"""Coalescing a range of changes and packing it into parts that fit the message limit. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from kds.protocol.records import ChangeRecord, sort_records
from kds.wire import BATCH_OVERHEAD, framed_size

__all__ = ["Part", "coalesce", "pack"]


@dataclass(frozen=True)
class Part:
    records: list[ChangeRecord]
    final: bool


def coalesce(records: Iterable[ChangeRecord]) -> list[ChangeRecord]:
    """Keep the newest change per key; Mesh puts first, Mesh deletes last."""
    latest: dict[object, ChangeRecord] = {}
    for r in records:
        latest.pop(r.key, None)
        latest[r.key] = r
    return sort_records(list(latest.values()))


def pack(records: Sequence[ChangeRecord], max_message_bytes: int) -> Iterator[Part]:
    """Split into parts whose encoded size stays within max_message_bytes.

    Always yields at least one part (an empty final part still carries the revision).
    A single change larger than the limit cannot happen: the API refuses such a resource.
    """
    budget = max_message_bytes - BATCH_OVERHEAD
    current: list[ChangeRecord] = []
    size = 0
    for r in records:
        n = framed_size(len(r.change))
        if current and size + n > budget:
            yield Part(current, final=False)
            current, size = [], 0
        current.append(r)
        size += n
    yield Part(current, final=True)
