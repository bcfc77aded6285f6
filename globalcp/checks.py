"""Anti-entropy on global: one zone stream's hash-tree checks, and the repairs they find.

The stream's writer (globalcp.sending.SendLoop) runs a check when its session is idle and the
zone has acknowledged everything up to the head: at the stream's start (once the zone caught
up) and then every ``interval`` seconds; right after a check that repaired something or left
ranges for later, at once again (up to RECHECKS_AT_ONCE times in a row), so a big divergence
is repaired in a few rounds and every repair is verified by the next check. The reader
(globalcp.stream) hands each answer to ``on_answer``, which checks its shape
(kds.wire.answer_from_pb); its sense is checked by kds.protocol.anti_entropy.GlobalCheck.

A repair is global's current state of each key found to differ, if that state is not newer
than the check's revision (a newer one is on its way in a range); a key only the zone holds
is deleted if global still lacks it. It is packed in sync order (kds.protocol.batching) and
sent as batches with ``repair`` set, which the zone applies by its normal apply path, each
part in one transaction. The log names the check's outcome and the repaired keys, never a
value. The protocol: proto/kds/v1/sync.proto ("Anti-entropy").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import structlog

from kds import memory, wire
from kds._pb import sync_pb2 as pb
from kds.errors import ProtocolError, StoreDamaged
from kds.model import Key, stays_on_global
from kds.protocol.anti_entropy import GlobalCheck, Outcome, Query
from kds.protocol.digest_tree import DigestTree, TreeBuilder
from kds.protocol.records import ChangeRecord
from kds.store import GlobalStore

__all__ = ["RECHECKS_AT_ONCE", "REPAIR_BYTES", "GlobalTrees", "ZoneChecks"]

log = structlog.get_logger("globalcp.sync")

# Checks run at once after one that repaired or deferred something, before the interval
# applies again (a zone that keeps diverging must not keep global busy).
RECHECKS_AT_ONCE = 3
# The puts one check's repair reads and sends, in encoded bytes (one more resource may pass
# it): what the zone's window lets be in flight.
REPAIR_BYTES = wire.WINDOW_BYTES


class GlobalTrees:
    """Global's tree, shared by every zone stream's checks: read and built once per head
    revision, however many zones are checked at it (a read in progress is joined), so a
    fleet checked at the same revision costs global one read of its leaves.

    The tree is kept (5.7 MB for 100,000 secrets with 9-character names) and brought forward
    when the head moves: the change log names the keys written since the tree's revision,
    and only their rows are read again (``DigestTree.updated``). Reading every row costs
    about 2 s of CPU per 100,000 resources; with writes coming steadily, the checks of zones
    connected at different times, spread over the interval, would each find the head moved
    and pay it again. The whole store is read only at the first check, after more changes
    than half the tree's leaves, or when the log no longer reaches back to the tree's
    revision."""

    def __init__(self, store: GlobalStore):
        self.store = store
        self._tree: tuple[int, DigestTree] | None = None
        self._building: asyncio.Future[tuple[int, DigestTree]] | None = None

    async def at(self, revision: int) -> DigestTree | None:
        """The tree at ``revision``; None if the store's head is elsewhere now."""
        held = self._tree
        if held is not None and held[0] == revision:
            return held[1]
        if self._building is None or self._building.done():
            self._building = asyncio.ensure_future(self._build())
        built = await asyncio.shield(self._building)
        self._tree = built
        return built[1] if built[0] == revision else None

    async def _build(self) -> tuple[int, DigestTree]:
        held = self._tree
        if held is not None:
            changed = await self.store.sync_leaves_since(held[0], len(held[1]) // 2)
            if changed is not None:
                # What zones are sent only (see take below).
                leaves = [(k, d) for k, d in changed.leaves if not stays_on_global(k)]
                if not leaves:
                    return changed.revision, held[1]
                return changed.revision, await asyncio.to_thread(held[1].updated, leaves)
        builder = TreeBuilder()

        def take(key: Key, digest: bytes) -> None:
            # What zones are sent: Kuma's system GlobalSecrets stay on global, so they are
            # no leaf of global's tree (a zone holding one has it deleted, never one put).
            if not stays_on_global(key):
                builder.add(key, digest)

        # Leaves go into the tree as the rows are read (no list of every leaf is held), and
        # the memory the read and the build used is given back to the system after them.
        revision = await self.store.sync_leaves_into(take)
        return revision, await asyncio.to_thread(_build_and_release, builder)


def _build_and_release(builder: TreeBuilder) -> DigestTree:
    tree = builder.build()
    memory.release()
    return tree


class ZoneChecks:
    """The anti-entropy checks of one zone stream (see the module docstring)."""

    def __init__(
        self,
        store: GlobalStore,
        interval: float,
        clock: Callable[[], float],
        trees: GlobalTrees | None = None,
        after_snapshot: bool = False,
    ):
        self.store = store
        self.trees = trees or GlobalTrees(store)
        self.interval = interval  # seconds between checks; 0: never
        self.clock = clock
        self.check: GlobalCheck | None = None
        self.pending: pb.DigestAnswer | None = None
        # The first check as soon as the zone caught up, except on a stream that began with a
        # snapshot: that replaced every synced resource the zone held, so there is nothing to
        # compare yet, and a hundred new zones each reading back what they just wrote would
        # slow each other's snapshots; their first check comes one interval later.
        self._next_at = clock() + (interval if after_snapshot else 0.0)
        self._ids = 0
        self._at_once = 0
        # The keys the last check's repair sent (if it left nothing for later), and those of
        # them the zone refused: a repair refused whole is not checked again at once.
        self._repairing: set[Key] = set()
        self._refused: set[Key] = set()
        self._repaired_at = 0.0

    def on_answer(self, msg: pb.DigestAnswer) -> None:
        """The zone's answer (the reader's side); ProtocolError when none was asked for."""
        if self.check is None or self.pending is not None:
            raise ProtocolError("digest answer global did not ask for")
        self.pending = msg  # read in advance(), on a worker thread

    def due(self) -> bool:
        if self.interval <= 0 or self.check is not None:
            return False
        if self._repairing and self._repairing <= self._refused:
            # The zone refused every change the repair sent (kds.protocol.refusals): it keeps
            # those copies on purpose, and checking again at once would only have the same
            # changes sent and refused again. The next check comes after the interval, and
            # repairs what the zone will take by then.
            self._next_at = max(self._next_at, self._repaired_at + self.interval)
            self._at_once = 0
            self._repairing.clear()
        return self.clock() >= self._next_at

    def repairing(self, keys: set[Key], deferred: int) -> None:
        """The check just over sends a repair of ``keys`` (and left ``deferred`` for later)."""
        self._repairing = keys if not deferred else set()
        self._refused = set()
        self._repaired_at = self.clock()

    def refused(self, keys: Iterable[Key]) -> None:
        """The zone refused these changes of a repair."""
        if self._repairing:
            self._refused.update(keys)

    async def start(self, revision: int) -> bytes | None:
        """Begin a check at ``revision`` (the zone's acknowledged one, equal to global's
        head): the first query's bytes, or None if the head moved meanwhile (tried later)."""
        tree = await self.trees.at(revision)
        if tree is None:
            self._next_at = self.clock() + min(self.interval, 1.0)
            return None
        self._ids += 1
        self.check = GlobalCheck(self._ids, revision, tree)
        return wire.query_to_pb(self.check.first_query())

    async def advance(self) -> Query | Outcome:
        """Take the pending answer: the next query, or the outcome (the check is over)."""
        check, ans = self.check, self.pending
        assert check is not None and ans is not None
        self.pending = None
        # Its shape and its sense are checked off the event loop: an answer may name
        # thousands of nodes, each checked in Python.
        step = await asyncio.to_thread(lambda: check.on_answer(wire.answer_from_pb(ans)))
        if isinstance(step, Outcome):
            self.check = None
            again = step.result == "repair" or step.deferred > 0
            self._at_once = self._at_once + 1 if again else 0
            wait = 0.0 if again and self._at_once <= RECHECKS_AT_ONCE else self.interval
            if step.result == "inconclusive":
                wait = min(self.interval, 1.0)
            self._next_at = self.clock() + wait
        return step

    async def repairs(self, outcome: Outcome) -> list[ChangeRecord]:
        """Global's state of the keys the check found different, as change records (puts at
        the resource's version, deletes at the check's revision); keys changed since the
        check's revision are left to the ranges that carry them. Puts stop once their
        changes reach REPAIR_BYTES (the rest are counted in ``outcome.deferred``, for the
        next check): the repair is read and written to the stream at once, and a zone that
        answered "I hold nothing" for 1,000 large secrets had global hold them all for it."""
        records = []
        budget = REPAIR_BYTES
        for i, key in enumerate(outcome.puts):
            if budget <= 0:
                outcome.deferred += len(outcome.puts) - i
                break
            if stays_on_global(key):
                continue  # never sent to a zone (not in global's tree: a safeguard)
            try:
                row = await self.store.get(key)
            except StoreDamaged as e:  # global's own row is damaged: nothing right to send
                log.error("cannot repair a zone from a damaged row", key=e.key)
                continue
            if row is None or row.resource.version > outcome.revision:
                continue
            res = row.resource
            change = wire.change_put(res.version, res)
            budget -= len(change)
            records.append(ChangeRecord(res.version, key, False, change))
        for key in outcome.deletes:
            with contextlib.suppress(StoreDamaged):  # damaged here: exists, so never deleted
                if await self.store.get(key) is not None:
                    continue
                change = wire.change_delete(outcome.revision, key)
                records.append(ChangeRecord(outcome.revision, key, True, change))
        return records
