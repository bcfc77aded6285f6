"""Fan-out on global: learns of every committed change and wakes each zone's stream.

The hub holds global's head revision, the log floor, and a bounded cache of the newest
change records (their encoded bytes, shared by every zone). The bound counts what a cached
record holds once it has been sent: its encoded change and that change framed as a batch
entry (kds.protocol.records.ChangeRecord.framed, made on the first send and kept). It never queues per zone: each
stream keeps its own position (kds.protocol.session) and reads the range it needs from the
cache, or from the store's change log when the cache no longer covers it. So a slow zone
costs the hub nothing and never delays another zone.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from kds.store import ChangeRecord
from kds.wire import framed_size

__all__ = ["Hub"]


class Hub:
    def __init__(self, head: int, log_floor: int, log_size: int, cache_bytes: int = 64 << 20):
        self.head = head
        self.log_floor = log_floor
        self._log_size = log_size
        self._cache: OrderedDict[int, ChangeRecord] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self._pending: dict[int, ChangeRecord] = {}
        self._waiters: set[asyncio.Event] = set()

    def subscribe(self) -> asyncio.Event:
        ev = asyncio.Event()
        self._waiters.add(ev)
        return ev

    def unsubscribe(self, ev: asyncio.Event) -> None:
        self._waiters.discard(ev)

    def publish(self, record: ChangeRecord) -> None:
        self.publish_many([record])

    def publish_many(self, records: list[ChangeRecord]) -> None:
        """Called after a transaction committed, with its records. Transactions may arrive
        out of order; head moves only over a gap-free prefix, and a transaction's records
        arrive in one call, so head never stops inside a transaction: every range a zone is
        sent ends at a state global committed (a Mesh with the secrets it uses, say)."""
        for record in records:
            if record.revision > self.head:
                self._pending[record.revision] = record
        moved = False
        while self.head + 1 in self._pending:
            rec = self._pending.pop(self.head + 1)
            self.head = rec.revision
            self._cache[rec.revision] = rec
            self._cache_bytes += _held_bytes(rec)
            moved = True
        if not moved:
            return
        self.log_floor = max(self.log_floor, self.head - self._log_size)
        while self._cache and (
            self._cache_bytes > self._cache_limit or len(self._cache) > self._log_size
        ):
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= _held_bytes(old)
        for ev in self._waiters:
            ev.set()

    def jump(self, head: int, log_floor: int) -> None:
        """Move to ``head`` without the records in between (another instance sharing the
        store committed them, and the log no longer holds them all): the cache is emptied,
        and a zone behind the new floor takes a snapshot, as after any pruned log."""
        if head <= self.head:
            return
        self.head = head
        self.log_floor = max(self.log_floor, log_floor)
        self._pending = {r: rec for r, rec in self._pending.items() if r > head}
        self._cache.clear()
        self._cache_bytes = 0
        for ev in self._waiters:
            ev.set()

    def cached_range(self, after: int, upto: int) -> list[ChangeRecord] | None:
        """The records (after, upto] if the cache holds all of them, else None."""
        if upto <= after:
            return []
        first = next(iter(self._cache), None)
        if first is None or first > after + 1 or upto > self.head:
            return None
        return [self._cache[r] for r in range(after + 1, upto + 1)]

    def commit_time(self, revision: int) -> float | None:
        """When ``revision`` was committed, if the cache still holds it (and knows)."""
        rec = self._cache.get(revision)
        return rec.committed_at if rec is not None and rec.committed_at else None


def _held_bytes(record: ChangeRecord) -> int:
    """What a cached record holds once sent: its change, and the framed copy every range
    send uses. Counted up front, without framing it: the framed copy is made on the first
    send (the cache is there to be sent from), and counting it then would let the bound be
    passed by the records already admitted."""
    return len(record.change) + framed_size(len(record.change))
