"""One accepted zone stream on global, from the welcome to its end.

The servicer (globalcp.servicer) authenticates and admits a zone, then hands its stream to a
``ZoneStream``: it writes the welcome and runs two tasks on one event loop, a reader that
feeds the zone's acks and status reports to the session, and a writer (globalcp.sending's
``SendLoop``) that sends what the session asks for. They share only the session. When either
ends, the stream ends with a status saying why, and the other task is cancelled. Another
task may end the stream too (``ZoneLink.end_with``: a token revoked or expired, the stream
replaced): the call is then aborted with the status given, whatever its tasks are doing.

What the zone sends is checked before it is used: a message that does not decode ends the
stream with INVALID_ARGUMENT; an ack's rejections must name changes of the batch it
acknowledges (kds.protocol.session), a status report's conflicts known kinds and valid names
and its problem text its bound (kds.protocol.limits), or the stream ends with
FAILED_PRECONDITION. The reader reads against the stream's byte budget
(kds.protocol.read_budget): a zone sending more than it allows is read slower, never cut off;
that is logged at most once per READ_WAIT_LOG_INTERVAL per stream. An ack with rejections
is one log line however many it holds; conflict reports are logged when they change, at most
CONFLICT_LOG_BURST lines per CONFLICT_LOG_INTERVAL seconds per stream (a changed problem
too, under its own key); reasons, problems and names are bounded and escaped (kds.text) before they are logged or kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from globalcp.checks import ZoneChecks
from globalcp.send_plans import SendPlans
from globalcp.sending import SendLoop
from globalcp.zone_state import key_label
from globalcp.zones import CONFLICTS_KEPT, ZoneHandle
from kds import wire
from kds._pb import sync_pb2 as pb
from kds.errors import KdsError, ProtocolError
from kds.model import Key
from kds.protocol.limits import REASON_CHARS, check_key, check_problem
from kds.protocol.read_budget import ReadBudget
from kds.protocol.session import Ack, GlobalSession
from kds.text import safe_text
from kds.throttle import Throttle

__all__ = ["ZoneLink", "ZoneStream", "decode_zone_message"]

log = structlog.get_logger("globalcp.sync")

# Rejections (key and reason) named in the one line an ack with rejections is logged as.
REJECTIONS_LOGGED = 5
# Conflict names in a "zone reported conflicts" line.
CONFLICTS_LOGGED = 10
# Changed conflict reports logged per stream: this many per interval, then one line saying how
# many were not.
CONFLICT_LOG_BURST = 10
CONFLICT_LOG_INTERVAL = 60.0
# A stream's status reports are taken at most once per STATUS_EVERY; one sent sooner is held
# (a newer one replaces it: each says the zone's whole state) and taken when due. A zone
# sending 19,000 small reports a second kept global at 84% CPU, a history row each.
STATUS_EVERY = 1.0
# A stream read slower for its byte budget is logged once per this many seconds.
READ_WAIT_LOG_INTERVAL = 60.0


def decode_zone_message(data: bytes) -> pb.ZoneMessage | None:
    """The zone's message, or None if the bytes are not one."""
    try:
        return pb.ZoneMessage.FromString(data)
    except DecodeError:
        return None


@dataclass(frozen=True)
class StreamEnd:
    """Why global ends a stream, and the status the call is aborted with."""

    code: grpc.StatusCode
    reason: str
    quiet: bool = False  # an expected end (replaced): logged at info, not as a warning


@dataclass
class ZoneLink:
    """One zone's live stream; its status is kept by globalcp.zones through ``status``."""

    zone: str
    instance_id: str
    stream_id: str
    connected_at: str
    session: GlobalSession
    status: ZoneHandle
    token_id: str = ""
    key_name: str = ""  # the signing key of its token
    task: asyncio.Task[Any] | None = None
    wake: asyncio.Event | None = None
    # Set to end the stream with this status (token revoked, expired, or its key removed; the
    # stream replaced by a new one).
    end: StreamEnd | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def end_with(self, code: grpc.StatusCode, reason: str, *, quiet: bool = False) -> None:
        if self.end is None:
            self.end = StreamEnd(code, reason, quiet)
        self.ended.set()
        if self.wake is not None:
            self.wake.set()


class _EndStream(KdsError):
    """The writer ends the stream on purpose, with the link's ``end`` status (its token was
    revoked, expired or lost its signing key). Private to this module: it never leaves the
    stream that raised it."""


class _Undecodable(ProtocolError):
    """A message from the zone that is not a ZoneMessage: the stream ends INVALID_ARGUMENT."""


class ZoneStream:
    """The reader and the writer of one zone's stream, and their teardown."""

    def __init__(
        self,
        link: ZoneLink,
        context: grpc.aio.ServicerContext,
        plans: SendPlans,
        *,
        welcome: bytes,
        heartbeat_interval: float,
        ack_delay_ms: int = 0,
        checks: ZoneChecks | None = None,
    ):
        self.checks = checks  # anti-entropy (globalcp.checks)
        self.link = link
        self.context = context
        self.plans = plans
        self.hub = plans.hub
        self.welcome = welcome
        self.heartbeat_interval = heartbeat_interval
        self.ack_delay_ms = ack_delay_ms  # the longest the zone may hold an ack (welcome)
        # Why the stream ended, as its zone's status and the "zone disconnected" log say.
        self.reason = "zone closed the stream"
        self._conflict_log = Throttle(CONFLICT_LOG_INTERVAL, burst=CONFLICT_LOG_BURST)
        self._reports = 0  # status reports read on this stream
        self._status_due = 0.0  # when the next report may be taken (loop time)
        self._held_status: tuple[str, list[str], int] | None = None
        self._status_timer: asyncio.TimerHandle | None = None
        self._sender: SendLoop | None = None  # the writer's send loop, once it runs
        self._read_wait_log = Throttle(READ_WAIT_LOG_INTERVAL)

    async def run(self) -> None:
        """Write the welcome, then read and write until one side ends the stream; aborts the
        call with a status when global ends it. Returns, or raises, once both tasks are done
        with: ``reason`` then says why."""
        link, context = self.link, self.context
        reader: asyncio.Task[None] | None = None
        writer: asyncio.Task[None] | None = None
        ender: asyncio.Task[bool] | None = None
        wake = link.wake = self.hub.subscribe()
        # Every exit goes through the finally below: no task outlives the stream.
        try:
            await context.write(self.welcome)
            wake.set()
            reader = asyncio.create_task(self._read(wake), name=f"read-{link.stream_id}")
            writer = asyncio.create_task(self._write(wake), name=f"write-{link.stream_id}")
            # Ended from elsewhere: the call is aborted even if the writer is stuck in a write.
            ender = asyncio.create_task(link.ended.wait(), name=f"end-{link.stream_id}")
            for half in (reader, writer):
                # The one that did not end the stream may fail while being cancelled (a write
                # on a closed call): its error is the stream's end, already handled here.
                half.add_done_callback(_consume_outcome)
            done, _ = await asyncio.wait(
                {reader, writer, ender}, return_when=asyncio.FIRST_COMPLETED
            )
            if link.end is not None:
                await self._ended_by(_EndStream())
            else:
                for t in done:
                    await self._ended_by(t.exception())
        finally:
            for task in (reader, writer, ender):
                if task is not None:
                    task.cancel()
            if self._status_timer is not None:
                self._status_timer.cancel()  # the next stream starts with a report anyway
            self.hub.unsubscribe(wake)

    async def _ended_by(self, exc: BaseException | None) -> None:
        """Record why the stream ended and, when global ends it, abort the call saying so."""
        link = self.link
        if isinstance(exc, _EndStream) and link.end is not None:
            self.reason = link.end.reason
            if not link.end.quiet:
                log.warning("ending the zone's stream", reason=self.reason)
                link.status.error(self.reason)
            await self.context.abort(link.end.code, self.reason)
        elif isinstance(exc, _Undecodable):
            self.reason = f"protocol error: {exc}"
            log.warning("zone broke the protocol", reason=str(exc))
            link.status.error(self.reason)
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        elif isinstance(exc, ProtocolError):
            self.reason = f"protocol error: {exc}"
            log.warning("zone broke the protocol", reason=str(exc))
            link.status.error(self.reason)
            await self.context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        elif exc is not None:
            self.reason = f"{type(exc).__name__}"
            log.info("stream ended", reason=repr(exc))

    async def _read(self, wake: asyncio.Event) -> None:
        context = self.context
        status = self.link.status
        count = 1  # messages read on this stream: the hello was the first
        loop = asyncio.get_running_loop()
        budget = ReadBudget(loop.time())
        wait = 0.0
        while True:
            if wait > 0:
                self._read_wait(wait, budget)
                await asyncio.sleep(wait)
            data = await context.read()
            if data is grpc.aio.EOF:
                return
            count += 1
            wait = budget.charge(len(data), loop.time())
            msg = decode_zone_message(data)
            if msg is None:
                raise _Undecodable(f"message {count} on the stream is not a ZoneMessage")
            status.message_received()
            kind = msg.WhichOneof("msg")
            if kind == "ack":
                # The send loop has something new to do only if the window was full or an
                # anti-entropy check is due (it waits for the zone to acknowledge the head):
                # waking it for every ack cost global a wasted turn of it per ack.
                # A stream holding a snapshot turn is woken too: it gives the turn back (to
                # the next zone waiting) as soon as the snapshot's last part is acknowledged.
                was_full = self.link.session.window_full()
                self._on_ack(msg.ack)
                if (
                    was_full
                    or (self.checks is not None and self.checks.due())
                    or (self._sender is not None and self._sender.holds_turn)
                ):
                    wake.set()
            elif kind == "status":
                self._on_status(self._checked_status(msg.status))
            elif kind == "digest_answer" and self.checks is not None:
                self.checks.on_answer(msg.digest_answer)
                wake.set()
            else:
                raise ProtocolError(f"unexpected {kind} after hello")

    def _read_wait(self, wait: float, budget: ReadBudget) -> None:
        """The reader waits ``wait`` seconds before the next message: logged (throttled)
        with the budget it is over, and counted in the zone's read_slowed seconds."""
        self.link.status.read_slowed(wait)
        held_back = self._read_wait_log.allow("wait")
        if held_back is not None:
            log.warning(
                "zone sends more than its stream's budget: reading it slower",
                wait_seconds=round(wait, 3),
                budget_bytes_per_second=int(budget.rate),
                burst_bytes=int(budget.burst),
                message_cost_bytes=budget.message_cost,
                waits_not_logged=held_back,
            )

    def _on_ack(self, ack: pb.Ack) -> None:
        """Give the ack to the session (which checks its rejections against the batch), then
        record and log it: one line for all its rejections."""
        status = self.link.status
        session = self.link.session
        rejected: tuple[Key | None, ...] = ()
        if ack.rejected:
            # Counted before a key is read: building 440,000 keys of a 4 MiB ack took the
            # event loop over a second, before the session found them beyond the batch.
            allowed = session.rejections_allowed(ack.seq)
            if allowed is not None and len(ack.rejected) > allowed:
                raise ProtocolError(
                    f"ack for batch {ack.seq} rejects {len(ack.rejected)} resources but the "
                    f"batch allows {allowed}"
                )
            if allowed is not None:  # otherwise the session refuses the ack for its seq
                rejected = tuple(_rejected_key(r) for r in ack.rejected)
        acked = session.on_ack(Ack(ack.seq, ack.applied_revision, rejected))
        done = acked[-1]
        refusals = status.refusals(create=bool(ack.rejected))
        if refusals:
            # The changes the zone applied end whatever it refused of those keys before.
            refused = set(rejected)
            for batch in acked:
                refusals.forget(k for k in batch.keys if k not in refused)
        if ack.rejected:
            assert refusals is not None  # made for an ack with rejections
            # The session checked each key is one the batch held: valid, known names.
            entries = [
                (key, _key_label(r.key), safe_text(r.reason, REASON_CHARS))
                for key, r in zip(rejected, ack.rejected, strict=True)
                if key is not None
            ]
            pairs = [(key, reason) for key, _, reason in entries]
            again = refusals.repeats(pairs) if done.repair else set()
            refusals.record(pairs)
            if done.repair and self.checks is not None:
                self.checks.refused(key for key, _ in pairs)
            if again:
                log.info(
                    "zone still refuses resources anti-entropy sent again, for the reasons "
                    "logged before",
                    count=len(again),
                    first=[label for key, label, _ in entries if key in again][:REJECTIONS_LOGGED],
                    revision=done.revision,
                )
                status.rejections(
                    [(key.kind, label, reason) for key, label, reason in entries if key in again],
                    repeated=True,
                )
            items = [
                (key.kind, label, reason) for key, label, reason in entries if key not in again
            ]
            if len(items) == 1:
                _, label, reason = items[0]
                log.warning(
                    "zone rejected a resource", key=label, reason=reason, revision=done.revision
                )
            elif items:
                log.warning(
                    "zone rejected resources",
                    count=len(items),
                    first=[f"{label}: {reason}" for _, label, reason in items[:REJECTIONS_LOGGED]],
                    revision=done.revision,
                )
            status.rejections(items)
        if refusals is not None:
            status.refusals_changed()
        # Propagation latency is observed for the batch the ack names, less the time the
        # zone held the ack (at most the delay global allows): the earlier batches it covers
        # were applied sooner, by an amount global cannot know.
        held = min(ack.held_ms, self.ack_delay_ms) / 1000
        finals = [b.revision for b in acked if b.final]
        status.batches_acked(
            [b.seq for b in acked],
            finals[-1] if finals else None,
            self.hub.commit_time(done.revision) if done.final else None,
            held,
        )

    def _checked_status(self, report: pb.ZoneStatus) -> tuple[str, list[str], int]:
        """The report's problem, its first CONFLICTS_KEPT conflicts (each checked: a bad one
        ends the stream) and their count. The others are counted, not read: a report of
        280,000 conflicts took 0.3 s of global's loop to check them all."""
        problem = check_problem(report.problem)
        if problem is not None:
            raise ProtocolError(str(problem))
        conflicts: list[str] = []
        for i, k in enumerate(report.conflicts[:CONFLICTS_KEPT]):
            problem = check_key(
                wire.PB_TO_KIND.get(k.kind), k.mesh, k.name, f"status.conflicts[{i}]"
            )
            if problem is not None:
                raise ProtocolError(str(problem))
            conflicts.append(_key_label(k))
        # A zone lists its first 1,000 conflicts and counts them all (an older one lists
        # them all): the count is a number the zone says about itself, taken as it is.
        return report.problem, conflicts, max(len(report.conflicts), report.conflict_count)

    def _on_status(self, checked: tuple[str, list[str], int]) -> None:
        """Take a checked report now if one is due, else hold it until it is (STATUS_EVERY)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._status_due:
            self._held_status = checked
            if self._status_timer is None:
                self._status_timer = loop.call_at(self._status_due, self._take_held_status)
            return
        self._status_due = now + STATUS_EVERY
        self._take_status(*checked)

    def _take_held_status(self) -> None:
        self._status_timer = None
        held, self._held_status = self._held_status, None
        if held is not None:
            self._on_status(held)

    def _take_status(self, problem_text: str, conflicts: list[str], total: int) -> None:
        """Record the report's problem and conflicts, and log the report when it changes
        what global holds (throttled); the problem also becomes the zone's last error."""
        status = self.link.status
        if status.problem(problem_text):
            held_back = self._conflict_log.allow("problem")
            if held_back is not None:
                shown = status.problem_text
                if shown:
                    log.warning(
                        "zone reports a problem", problem=shown, reports_not_logged=held_back
                    )
                else:
                    log.info("zone reports its problem is over", reports_not_logged=held_back)
        self._reports += 1
        changed = status.conflicts(conflicts, total)
        # Every stream starts with a report; an empty one that changes nothing is noise.
        if not (changed or (self._reports == 1 and total)):
            return
        held_back = self._conflict_log.allow("conflicts")
        if held_back is not None:
            log.info(
                "zone reported conflicts",
                conflicts=conflicts[:CONFLICTS_LOGGED],
                count=total,
                reports_not_logged=held_back,
            )

    async def _write(self, wake: asyncio.Event) -> None:
        link = self.link
        self._sender = SendLoop(
            link.session,
            link.status,
            self.plans,
            self.context.write,
            wake=wake,
            ended=lambda: link.end is not None,
            heartbeat_interval=self.heartbeat_interval,
            checks=self.checks,
        )
        await self._sender.run()
        raise _EndStream()


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _rejected_key(r: pb.Rejection) -> Key | None:
    """The resource a rejection names; None for none this version knows."""
    kind = wire.PB_TO_KIND.get(r.key.kind) if r.HasField("key") else None
    return None if kind is None else Key(kind, r.key.mesh, r.key.name)


def _key_label(k: pb.ResourceKey) -> str:
    """'Secret:mesh/name' or 'GlobalSecret:name'; a kind this version does not know shows
    as its number (a newer zone may report one)."""
    kind = wire.PB_TO_KIND.get(k.kind)
    return key_label(str(kind) if kind is not None else f"kind-{k.kind}", k.mesh, k.name)
