"""One accepted zone stream on global, from the welcome to its end.

The servicer (globalcp.servicer) authenticates and admits a zone, then hands its stream to a
``ZoneStream``: it writes the welcome and runs two tasks on one event loop, a reader that
feeds the zone's acks and status reports to the session, and a writer (globalcp.sending's
``SendLoop``) that sends what the session asks for. They share only the session. When either
ends, the stream ends with a status saying why, and the other task is cancelled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from globalcp.sending import SendLoop, SendPlans
from globalcp.tokens import TokenRefused
from globalcp.zones import ZoneHandle
from kds import wire
from kds._pb import sync_pb2 as pb
from kds.errors import KdsError, ProtocolError
from kds.protocol.session import Ack, GlobalSession

__all__ = ["ZoneLink", "ZoneStream"]

log = structlog.get_logger("globalcp.sync")


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
    # Set to end the stream with this status (token revoked, expired, or its key removed).
    end: TokenRefused | None = None

    def end_with(self, refusal: TokenRefused) -> None:
        self.end = refusal
        if self.wake is not None:
            self.wake.set()


class _EndStream(KdsError):
    """The writer ends the stream on purpose, with the link's ``end`` status (its token was
    revoked, expired or lost its signing key). Private to this module: it never leaves the
    stream that raised it."""


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
    ):
        self.link = link
        self.context = context
        self.plans = plans
        self.hub = plans.hub
        self.welcome = welcome
        self.heartbeat_interval = heartbeat_interval
        # Why the stream ended, as its zone's status and the "zone disconnected" log say.
        self.reason = "zone closed the stream"

    async def run(self) -> None:
        """Write the welcome, then read and write until one side ends the stream; aborts the
        call with a status when global ends it. Returns, or raises, once both tasks are done
        with: ``reason`` then says why."""
        link, context = self.link, self.context
        reader: asyncio.Task[None] | None = None
        writer: asyncio.Task[None] | None = None
        wake = link.wake = self.hub.subscribe()
        # Every exit goes through the finally below: neither task outlives the stream.
        try:
            await context.write(self.welcome)
            wake.set()
            reader = asyncio.create_task(self._read(wake), name=f"read-{link.stream_id}")
            writer = asyncio.create_task(self._write(wake), name=f"write-{link.stream_id}")
            for half in (reader, writer):
                # The one that did not end the stream may fail while being cancelled (a write
                # on a closed call): its error is the stream's end, already handled here.
                half.add_done_callback(_consume_outcome)
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                await self._ended_by(t.exception())
        finally:
            for task in (reader, writer):
                if task is not None:
                    task.cancel()
            self.hub.unsubscribe(wake)

    async def _ended_by(self, exc: BaseException | None) -> None:
        """Record why the stream ended and, when global ends it, abort the call saying so."""
        link = self.link
        if isinstance(exc, _EndStream) and link.end is not None:
            self.reason = link.end.reason
            log.warning("ending the zone's stream", reason=self.reason)
            link.status.error(self.reason)
            await self.context.abort(link.end.code, self.reason)
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
        session = self.link.session
        status = self.link.status
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            status.message_received()
            kind = msg.WhichOneof("msg")
            if kind == "ack":
                done = session.on_ack(Ack(msg.ack.seq, msg.ack.applied_revision))
                for rej in msg.ack.rejected:
                    label = _key_label(rej.key)
                    log.warning(
                        "zone rejected a resource",
                        key=label,
                        reason=rej.reason,
                        revision=done.revision,
                    )
                    status.rejected(wire.PB_TO_KIND.get(rej.key.kind), label, rej.reason)
                status.batch_acked(
                    done.seq,
                    done.revision if done.final else None,
                    self.hub.commit_time(done.revision) if done.final else None,
                )
                wake.set()
            elif kind == "status":
                conflicts = [_key_label(k) for k in msg.status.conflicts]
                # Every stream starts with a report; an empty one that changes nothing is noise.
                report = log.info if conflicts or status.conflict_count else log.debug
                report("zone reported conflicts", conflicts=conflicts)
                status.conflicts(conflicts)
            else:
                raise ProtocolError(f"unexpected {kind} after hello")

    async def _write(self, wake: asyncio.Event) -> None:
        link = self.link
        await SendLoop(
            link.session,
            link.status,
            self.plans,
            self.context.write,
            wake=wake,
            ended=lambda: link.end is not None,
            heartbeat_interval=self.heartbeat_interval,
        ).run()
        raise _EndStream()


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _key_label(k: pb.ResourceKey) -> str:
    """'Secret:mesh/name' or 'GlobalSecret:name'; a kind this version does not know shows
    as its number (a newer zone may report one)."""
    kind = wire.PB_TO_KIND.get(k.kind)
    label = str(kind) if kind is not None else f"kind-{k.kind}"
    return f"{label}:{k.mesh}/{k.name}" if k.mesh else f"{label}:{k.name}"
