"""Change records: one committed change on global, encoded once, shared by every zone. Pure."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from kds.model import Key, Kind
from kds.wire import frame_change

__all__ = ["GENESIS_CHAIN", "ChangeRecord", "next_chain", "sort_records"]

# The history chain before the first change.
GENESIS_CHAIN = b""


def next_chain(previous: bytes, change: bytes) -> bytes:
    """chain(r) = H(chain(r-1) || Change(r)): equal chains mean the same history up to r."""
    return hashlib.blake2b(previous + change, digest_size=16).digest()


@dataclass(frozen=True)
class ChangeRecord:
    revision: int
    key: Key
    deleted: bool
    change: bytes  # encoded kds.v1.Change
    chain: bytes = GENESIS_CHAIN  # global's history chain at this revision
    committed_at: float = 0.0  # wall-clock seconds of the commit on global (0: unknown)

    @functools.cached_property
    def framed(self) -> bytes:
        """The change framed as a Batch.changes entry, computed once and shared by all zones."""
        return frame_change(self.change)


def sort_records(records: Sequence[ChangeRecord]) -> list[ChangeRecord]:
    """Mesh puts first, Mesh deletes last, the rest in revision order between."""

    def rank(r: ChangeRecord) -> tuple[int, int]:
        if r.key.kind is Kind.MESH:
            return (2 if r.deleted else 0, r.revision)
        return (1, r.revision)

    return sorted(records, key=rank)
