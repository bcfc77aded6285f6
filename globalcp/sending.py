"""What global sends down one zone's stream, and the reads it shares with every other stream.

``SendLoop`` is the writer half of a stream: it asks the zone's session (kds.protocol.session)
what to send next, gets that snapshot or range from ``SendPlans``, and writes it as batches
assembled from pre-framed changes, with a heartbeat whenever the stream has been quiet. It
writes through an async ``send(bytes)`` callable, not a grpc context, so the same loop that
serves zones is the one unit tests drive over in-memory bytes.

``SendPlans`` (globalcp.send_plans) is shared by all the streams of one global: each range
is coalesced and packed once and each snapshot read and cut into framed parts once, however
many zones are sent it; it also holds the turns to send a snapshot (globalcp.admission).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import structlog

from globalcp.admission import Ticket
from globalcp.checks import ZoneChecks
from globalcp.send_plans import SendPlans
from globalcp.snapshot_plan import SnapshotPlan
from globalcp.zones import CHECK_KEYS_KEPT, ZoneHandle
from kds import wire
from kds._pb import sync_pb2 as pb
from kds.errors import ProtocolError
from kds.model import Key
from kds.protocol.anti_entropy import Outcome, Query
from kds.protocol.batching import Part, pack
from kds.protocol.records import ChangeRecord
from kds.protocol.session import GlobalSession, Mode, SendRange, SendSnapshot

__all__ = ["SendLoop"]

log = structlog.get_logger("globalcp.sync")

T = TypeVar("T")
# How long a zone holding a turn to be sent a snapshot may acknowledge nothing. A part is
# 128 KiB: a zone applies one in well under a second, seconds on a loaded machine.
TURN_STALL = 60.0


class _PartKeys:
    """The keys of a part's changes, read from its records when asked: the session keeps one
    per batch in flight without copying the part (shared by every zone sent it)."""

    __slots__ = ("_records",)

    def __init__(self, records: list[ChangeRecord]):
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Key]:
        return (r.key for r in self._records)


@dataclass
class _SnapshotCursor:
    """How far one stream has sent the shared snapshot."""

    plan: SnapshotPlan
    next: int = 0  # the next part to send
    sent: int = 0  # bytes written


class SendLoop:
    """The writer half of one zone's stream: what its session asks for, as soon as it may."""

    def __init__(
        self,
        session: GlobalSession,
        status: ZoneHandle,
        plans: SendPlans,
        send: Callable[[bytes], Awaitable[None]],
        *,
        wake: asyncio.Event,
        ended: Callable[[], bool],
        heartbeat_interval: float,
        checks: ZoneChecks | None = None,
    ):
        self.checks = checks  # anti-entropy (globalcp.checks); None: never checked
        self.session = session
        self.status = status
        self.plans = plans
        self.hub = plans.hub
        self.send = send  # writes one encoded GlobalMessage to the stream
        self.wake = wake  # set when there may be something to send (a publish, an ack, an end)
        self.ended = ended  # true once the stream must end
        self.heartbeat_interval = heartbeat_interval
        # Event loop time of the last write (run() starts it at the loop's time; asyncio's
        # clock is the monotonic one, so a loop driven step by step without run() starts
        # from its creation too).
        self._last_sent = time.monotonic()
        self._first_range = True
        # The turn to send a snapshot (globalcp.admission), held until the zone acknowledged
        # the snapshot's last part (revision ``_turn_until``) or the stream ends.
        self._turn: Ticket | None = None
        self._turn_until = 0
        self._turn_progress: tuple[int, float] | None = None  # (oldest unacked seq, since)
        self._snapshot: _SnapshotCursor | None = None  # a snapshot being sent, part by part

    async def run(self) -> None:
        """Send until ``ended()``, then return: whatever the session asks for, and a heartbeat
        after heartbeat_interval with nothing written."""
        try:
            await self._run()
        finally:
            self._leave_turn()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self.wake
        self._last_sent = loop.time()
        timer: asyncio.TimerHandle | None = None

        def beat() -> None:
            nonlocal timer
            timer = None
            wake.set()

        try:
            while True:
                self._give_turn_back()
                self._check_turn_progress(loop.time())
                if self.ended():
                    return
                if await self.send_next():
                    continue
                wake.clear()
                # Re-check after clearing: a publish (or an end) in between is not lost.
                if self.ended():
                    return
                if await self.send_next():
                    continue
                # (1 ms early at most: a timer may fire a hair before its time)
                if loop.time() - self._last_sent >= self.heartbeat_interval - 0.001:
                    await self._heartbeat()
                    continue
                # One timer per heartbeat interval wakes the loop to check whether a heartbeat
                # is due (a write since moves that, and the timer is then set again), rather
                # than a timeout around every wait: a write to 100 zones is 100 waits ending,
                # and their timeouts (wait_for, then asyncio.timeout) were 6-12% of global's
                # busy time in profiles of single writes to 100 zones.
                if timer is None:
                    timer = loop.call_at(self._last_sent + self.heartbeat_interval, beat)
                await wake.wait()
        finally:
            if timer is not None:
                timer.cancel()

    async def _beating(self, work: Awaitable[T]) -> T:
        """``work``'s result, with a heartbeat each interval while it runs. A check's tree of a
        big store, or a snapshot's plan, can take longer than the zone's silence limit on a
        busy machine (shared by every stream that needs it at the time); the zone must not
        take that for global gone silent, reconnect, and have it all start again."""
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        try:
            while True:
                wait = max(0.0, self._last_sent + self.heartbeat_interval - loop.time())
                done, _ = await asyncio.wait((task,), timeout=wait)
                if done:
                    return task.result()
                await self._heartbeat()
        finally:
            task.cancel()  # only if the stream ended meanwhile (shared reads are shielded)

    async def _heartbeat(self) -> None:
        await self.send(
            pb.GlobalMessage(
                heartbeat=pb.Heartbeat(head_revision=self.hub.head)
            ).SerializeToString()
        )
        self._last_sent = asyncio.get_running_loop().time()

    @property
    def holds_turn(self) -> bool:
        """Whether this stream holds (or waits for) a turn to send a snapshot."""
        return self._turn is not None

    def _check_turn_progress(self, now: float) -> None:
        """A zone holding a turn that acknowledges nothing for TURN_STALL ends its stream, so
        the turn goes to the next zone (the loop runs at least once a heartbeat): zones that
        stopped acknowledging mid-snapshot could otherwise hold every turn for good. It
        resumes its snapshot when it dials again, at the back of the line."""
        oldest = self.session.oldest_unacked
        if self._turn is None or not self._turn.granted or oldest is None:
            self._turn_progress = None
            return
        if self._turn_progress is None or self._turn_progress[0] != oldest:
            self._turn_progress = (oldest, now)
        elif now - self._turn_progress[1] > TURN_STALL:
            raise ProtocolError(
                f"the zone acknowledged nothing for {TURN_STALL:g} s while holding a turn to "
                "be sent a snapshot: the turn goes to the next zone"
            )

    def _give_turn_back(self) -> None:
        """Once the zone acknowledged the snapshot's last part, the next stream may send."""
        if self.session.acked_revision >= self._turn_until:
            self._leave_turn()

    def _leave_turn(self) -> None:
        if self._turn is not None:
            self._turn.leave()
            self._turn = None
            self.plans.turn_given_back()

    async def _wait_turn(self) -> bool:
        """Wait for a turn to send a snapshot, heartbeating meanwhile so the zone's watchdog
        sees global alive; False if the stream must end first."""
        if self._turn is None:
            self._turn = self.plans.turns.ask()
        turn = self._turn
        if not turn.granted:
            log.info("waiting for a turn to send the snapshot", waiting=self.plans.turns.waiting)
        loop = asyncio.get_running_loop()
        while not turn.granted:
            if self.ended():
                return False
            timeout = max(0.0, self.heartbeat_interval - (loop.time() - self._last_sent))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await turn.wait()
            if not turn.granted:
                await self._heartbeat()
        return not self.ended()

    async def send_next(self) -> bool:
        """Send the snapshot or range the session asks for now; False if it asks for none.
        A range that cannot be sent turns into a snapshot the session asks for next."""
        if self._snapshot is not None:
            return await self._continue_snapshot()
        session = self.session
        action = session.next_action(self.hub.head, self.hub.log_floor)
        if action is None:
            return await self._anti_entropy()
        if isinstance(action, SendSnapshot):
            await self._start_snapshot()  # False: the stream ends, and run() sees it
            return True
        if not await self._send_range(action):
            return True
        session.on_done()
        self._last_sent = asyncio.get_running_loop().time()
        return True

    async def _anti_entropy(self) -> bool:
        """Run the stream's anti-entropy check one step (globalcp.checks): start one when due
        and the zone is caught up, send the next query once the zone answered, or finish
        one (log, status, repair). False when there was nothing to do."""
        checks, session = self.checks, self.session
        if checks is None:
            return False
        if checks.check is None:
            if not checks.due() or not session.can_check(self.hub.head):
                return False
            first = await self._beating(checks.start(session.acked_revision))
            if first is None:
                return False
            await self.send(first)
            return True
        if checks.pending is None:
            return False  # waiting for the zone's answer
        step = await self._beating(checks.advance())
        if isinstance(step, Query):
            await self.send(wire.query_to_pb(step))
            return True
        await self._finish_check(step)
        return True

    async def _finish_check(self, out: Outcome) -> None:
        records: list[ChangeRecord] = []
        if self.checks and out.result == "repair":
            records = await self._beating(self.checks.repairs(out))
        differed = [n.label() for n in out.differed]
        repaired = [str(r.key) for r in records]
        fields = {
            "result": out.result,
            "revision": out.revision,
            "rounds": out.rounds,
            "differed": differed[:10],
            "repaired": repaired[:20],
            "repaired_count": len(repaired),
            "deferred": out.deferred,
        }
        if records:
            log.warning("anti-entropy: repairing the zone's synced copies", **fields)
        elif out.result == "equal":
            log.info("anti-entropy: the zone's synced copies are equal to global's", **fields)
        else:
            log.info("anti-entropy check", reason=out.reason, **fields)
        self.status.check_done(
            {
                "result": out.result,
                "revision": out.revision,
                "rounds": out.rounds,
                "differed": differed[:CHECK_KEYS_KEPT],
                "repaired": repaired[:CHECK_KEYS_KEPT],
                "repairedCount": len(repaired),
                "deferred": out.deferred,
                "reason": out.reason,
            }
        )
        if not records:
            return
        if self.checks is not None:
            self.checks.repairing({r.key for r in records}, out.deferred)
        session = self.session
        revision = session.start_repair()
        parts = pack(records, self.plans.max_message_bytes, wire.PART_BYTES)
        for part in parts:
            seq = session.next_seq()
            data = wire.assemble_batch(
                seq=seq,
                from_revision=revision,
                revision=revision,
                snapshot=False,
                final=True,
                head_revision=self.hub.head,
                framed_changes=[r.framed for r in part.records],
                repair=True,
            )
            session.on_sent(seq, revision, True, _PartKeys(part.records), len(data))
            self.status.batch_sent(seq, part.kind_counts)
            await self.send(data)
        session.on_done()

    async def _start_snapshot(self) -> bool:
        """Take the shared snapshot and send its first parts; False if the stream must end
        while waiting for a turn."""
        if not await self._wait_turn():
            return False
        snap = await self._beating(self.plans.snapshot())
        self._turn_until = snap.revision
        self._snapshot = _SnapshotCursor(snap)
        await self._continue_snapshot()
        return True

    async def _continue_snapshot(self) -> bool:
        """Send the snapshot's next parts while the zone's window has room (the zone
        acknowledges snapshot parts at once); True if it sent any or finished. Written
        ahead of the zone's acks, a snapshot's parts piled up in grpc's buffers for a zone
        that applies slower than global writes: megabytes per stream in a storm."""
        cur, session = self._snapshot, self.session
        assert cur is not None
        snap, did = cur.plan, False
        while cur.next < len(snap.parts) and not session.window_full():
            part = snap.parts[cur.next]
            seq = session.next_seq()
            data = wire.assemble_batch(
                seq=seq,
                from_revision=0,
                revision=snap.revision,
                snapshot=True,
                final=part.final,
                head_revision=self.hub.head,
                framed_changes=(part.body,),
                chain=snap.chain if part.final else b"",
            )
            session.on_sent(seq, snap.revision, part.final, part.sent_keys(), len(data))
            self.status.batch_sent(seq, part.kind_counts)
            cur.next += 1
            await self.send(data)
            cur.sent += len(data)
            did = True
        if cur.next < len(snap.parts):
            return did
        log.info("snapshot sent", revision=snap.revision, resources=snap.resources, bytes=cur.sent)
        self._snapshot = None
        self._first_range = False
        session.on_done()
        self._last_sent = asyncio.get_running_loop().time()
        return True

    async def _send_range(self, action: SendRange) -> bool:
        """Send the range; False if it has to be a snapshot instead (the session is told)."""
        session = self.session
        plan = await self.plans.range_plan(action)
        if plan is None:
            log.info("zone fell behind the change log: sending a snapshot")
            session.on_failed_range()
            return False
        if plan.split_unit:
            # A Mesh and the secrets it uses must reach the zone in one message; a
            # snapshot applies deletions in its last part, so it never needs that.
            log.info("a mesh change does not fit one message: sending a snapshot")
            session.on_failed_range()
            return False
        sent = await self._send_parts(
            plan.parts,
            action.from_revision,
            action.to_revision,
            plan.chain,
        )
        if self._first_range and session.mode is Mode.RESUME:
            log.info(
                "resumed zone from its revision",
                from_revision=action.from_revision,
                to_revision=action.to_revision,
                changes=plan.changes,
                bytes=sent,
            )
        self._first_range = False
        return True

    async def _send_parts(
        self,
        parts: list[Part],
        from_revision: int,
        revision: int,
        chain: bytes,
    ) -> int:
        """Write the parts as batches; return the bytes written."""
        total = 0
        session = self.session
        for part in parts:
            seq = session.next_seq()
            data = wire.assemble_batch(
                seq=seq,
                from_revision=from_revision,
                revision=revision,
                snapshot=False,
                final=part.final,
                head_revision=self.hub.head,
                # Range records are shared through the hub's cache, so their framing is kept.
                framed_changes=[r.framed for r in part.records],
                chain=chain if part.final else b"",
            )
            session.on_sent(seq, revision, part.final, _PartKeys(part.records), len(data))
            self.status.batch_sent(seq, part.kind_counts)
            await self.send(data)
            total += len(data)
        return total
