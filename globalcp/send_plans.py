"""The plans every zone stream of one global sends from (globalcp.sending's send loops).

Zones in step ask for the same ranges, and a fleet catching up asks for the same snapshot, so
each range is coalesced and packed once and each snapshot read and cut into framed parts once
(globalcp.snapshot_plan), however many zones are sent it. The turns to send a snapshot
(globalcp.admission) are kept here too, with the snapshot they share.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from globalcp.admission import SnapshotTurns
from globalcp.hub import Hub
from globalcp.snapshot_plan import PlanBuilder, SnapshotPlan, zone_bound
from kds import memory, wire
from kds.protocol.batching import Part, coalesce, pack
from kds.protocol.session import SendRange
from kds.store import GlobalStore

__all__ = ["RANGE_PLANS_KEPT", "SNAPSHOT_STREAMS", "RangePlan", "SendPlans"]

# Range plans kept for the next stream that asks (a few bulk writes' worth for a fleet in step).
RANGE_PLANS_KEPT = 64
# Streams sending a snapshot at once, unless told otherwise (globalcp.admission).
SNAPSHOT_STREAMS = 20


@dataclass(frozen=True)
class RangePlan:
    """A range of the change log coalesced and cut into parts: the same for every zone that
    is sent it, so it is made once and shared (zones in step ask for the same ranges)."""

    parts: list[Part]
    changes: int  # resources in it, after coalescing
    chain: bytes  # the history chain at its last revision
    split_unit: bool  # a unit did not fit one message: send a snapshot instead


class SendPlans:
    """The snapshot and the range plans every stream of one global sends from."""

    def __init__(
        self,
        store: GlobalStore,
        hub: Hub,
        max_message_bytes: int,
        snapshot_streams: int = SNAPSHOT_STREAMS,
        spill_dir: Path | None = None,
    ):
        self.store = store
        self.hub = hub
        self.max_message_bytes = max_message_bytes
        self.spill_dir = spill_dir  # where snapshot parts are kept (None: the temp directory)
        # Turns to send a snapshot: the others wait, heartbeating (globalcp.admission).
        self.turns = SnapshotTurns(snapshot_streams)
        self._shared_snapshot: weakref.ref[SnapshotPlan] | None = None
        # The snapshot kept while streams hold or wait for a turn to send it: between one
        # turn's streams finishing and the next ones starting, no stream holds it, and reading
        # it again per turn cost seconds each.
        self._kept: SnapshotPlan | None = None
        self._snapshot_read: asyncio.Future[SnapshotPlan] | None = None
        self._range_plans: OrderedDict[tuple[int, int], RangePlan] = OrderedDict()

    async def snapshot(self) -> SnapshotPlan:
        """The current snapshot cut into parts, shared by every stream that needs one at the
        same time: when a fleet of zones needs one at once (a new global, a long outage),
        global reads and holds one copy, not one per zone. A read in progress is joined; a
        finished one is held weakly, so it is freed when the last stream sending it is done."""
        shared = self._shared_snapshot() if self._shared_snapshot else None
        if shared is not None and shared.revision == self.hub.head:
            self._kept = shared
            return shared
        if self._snapshot_read is None or self._snapshot_read.done():
            self._snapshot_read = asyncio.ensure_future(self._read_snapshot())
        read = self._snapshot_read
        snap = await asyncio.shield(read)  # one stream ending must not cancel the others' read
        if self._shared_snapshot is None or self._shared_snapshot() is not snap:
            self._shared_snapshot = weakref.ref(snap)
            # Once the last stream sending it is done, give its memory back to the system.
            weakref.finalize(snap, memory.release_soon, asyncio.get_running_loop())
        if self._snapshot_read is read:
            self._snapshot_read = None  # the future would keep the snapshot alive
        self._kept = snap
        return snap

    def turn_given_back(self) -> None:
        """A stream gave its snapshot turn back: once no stream holds or waits for one, the
        snapshot is no longer kept (it is freed when the last stream sending it is done)."""
        if self.turns.sending == 0 and self.turns.waiting == 0:
            self._kept = None

    async def _read_snapshot(self) -> SnapshotPlan:
        # Cut into parts as it is read (globalcp.snapshot_plan.PlanBuilder): no record per
        # resource is ever held, and the memory the read used is given back after it.
        builder = PlanBuilder(self.max_message_bytes, wire.PART_BYTES, self.spill_dir)
        revision, chain = await self.store.snapshot_units(builder.take)
        plan = builder.finish(revision, chain)
        await asyncio.to_thread(memory.release)
        return plan

    async def range_plan(self, action: SendRange) -> RangePlan | None:
        """The range coalesced and packed, made once for all the streams sending it (the
        profile of 10,000 secrets to 100 zones had 60% of global's time in re-doing this per
        zone); None when the range has left the change log."""
        key = (action.from_revision, action.to_revision)
        plan = self._range_plans.get(key)
        if plan is not None:
            self._range_plans.move_to_end(key)
            return plan
        records = await self._range(action)
        if records is None:
            return None
        changes = coalesce(zone_bound(records))  # what zones are not sent, out first
        parts = list(pack(changes, self.max_message_bytes, wire.PART_BYTES))
        plan = RangePlan(
            parts=parts,
            changes=len(changes),
            chain=records[-1].chain if records else b"",
            split_unit=any(p.split_unit for p in parts),
        )
        self._range_plans[key] = plan
        while len(self._range_plans) > RANGE_PLANS_KEPT:
            self._range_plans.popitem(last=False)
        return plan

    async def _range(self, action: SendRange) -> list[Any] | None:
        records = self.hub.cached_range(action.from_revision, action.to_revision)
        if records is not None:
            return records
        records = await self.store.changes_after(action.from_revision, action.to_revision)
        if len(records) != action.to_revision - action.from_revision:
            return None  # pruned meanwhile
        return records
