"""The gRPC edge on global: one handler per zone stream.

It decodes zone messages, feeds them to the pure session (kds.protocol.session), asks the
session what to send next, reads that from the hub's cache or the store, encodes it once
(kds.wire.assemble_batch over pre-encoded changes) and writes it. Reading and writing run as
two tasks of one stream; they share only the session object, on one event loop.

One zone name, one live stream: a new stream for a zone that already has one replaces it;
the old stream is ended with ABORTED, so two streams never report for one zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from globalcp.hub import Hub
from globalcp.tokens import TokenInfo, TokenRefused, ZoneTokens
from globalcp.zones import ZoneHandle, ZoneTracker
from kds import wire
from kds._pb import sync_pb2 as pb
from kds.clock import rfc3339, utcnow
from kds.errors import ProtocolError
from kds.model import validate_name
from kds.protocol.batching import Part, coalesce, pack
from kds.protocol.session import Ack, GlobalSession, Hello, Mode, SendRange, SendSnapshot
from kds.store import GlobalStore, Snapshot
from kds.wire import PROTOCOL_VERSION

__all__ = ["METHOD", "SyncServicer", "ZoneLink"]

METHOD = "/kds.v1.SecretSync/Sync"
log = structlog.get_logger("globalcp.sync")

# The token of a stream when global runs without zone authentication (--kds-insecure).
NO_TOKEN = TokenInfo(token_id="", zone="", key_name="", expires_at="")


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


class _EndStream(Exception):
    """The writer ends the stream with the link's ``end`` status."""


@dataclass(frozen=True)
class _RangePlan:
    """A range of the change log coalesced and cut into parts: the same for every zone that
    is sent it, so it is made once and shared (zones in step ask for the same ranges)."""

    parts: list[Part]
    changes: int  # resources in it, after coalescing
    chain: bytes  # the history chain at its last revision
    split_unit: bool  # a unit did not fit one message: send a snapshot instead


# Range plans kept for the next stream that asks (a few bulk writes' worth for a fleet in step).
RANGE_PLANS_KEPT = 64


class SyncServicer:
    def __init__(
        self,
        store: GlobalStore,
        hub: Hub,
        tracker: ZoneTracker,
        *,
        tokens: ZoneTokens | None,
        instance_id: str,
        software_version: str,
        max_unacked: int,
        max_message_bytes: int,
        heartbeat_interval: float,
    ):
        self.store = store
        self.hub = hub
        self.tracker = tracker
        self.tokens = tokens  # None: plaintext test mode, no zone authentication
        self.instance_id = instance_id
        self.software_version = software_version
        self.max_unacked = max_unacked
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval = heartbeat_interval
        self.links: dict[str, ZoneLink] = {}
        self._shared_snapshot: weakref.ref[Snapshot] | None = None
        self._snapshot_read: asyncio.Future[Snapshot] | None = None
        self._range_plans: OrderedDict[tuple[int, int], _RangePlan] = OrderedDict()
        self._stopping = asyncio.Event()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "kds.v1.SecretSync",
            {
                "Sync": grpc.stream_stream_rpc_method_handler(
                    self.sync,
                    request_deserializer=pb.ZoneMessage.FromString,
                    response_serializer=lambda b: b,  # batches arrive encoded
                )
            },
        )

    def stop(self) -> None:
        """Ask every stream to end (before server.stop) so shutdown does not wait for them."""
        self._stopping.set()
        for link in list(self.links.values()):
            if link.task:
                link.task.cancel()

    async def sync(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        stream_id = uuid.uuid4().hex[:12]
        try:
            first = await asyncio.wait_for(context.read(), timeout=10)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello within 10 s")
            return
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
            return
        h = first.hello
        errs = validate_name(h.zone, "hello.zone")
        if errs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(errs[0]))
            return
        with structlog.contextvars.bound_contextvars(zone=h.zone, stream=stream_id):
            token = await self._authenticate(h, context)
            if token is not None:
                await self._serve(h, stream_id, context, token)

    async def _authenticate(
        self, h: pb.Hello, context: grpc.aio.ServicerContext
    ) -> TokenInfo | None:
        """The verified token's facts (NO_TOKEN with no authentication); None once refused."""
        if self.tokens is None:
            return NO_TOKEN
        metadata = dict(context.invocation_metadata() or ())
        auth = str(metadata.get("authorization", ""))
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            return self.tokens.verify(token, h.zone, utcnow())
        except TokenRefused as e:
            log.warning(
                "zone refused: bad token", code=e.code.name, reason=e.reason, instance=h.instance_id
            )
            if h.zone in self.tracker.zones:  # never let unknown names fill the zone list
                self.tracker.refused(h.zone, f"refused instance {h.instance_id}: {e.reason}")
            await context.abort(e.code, e.reason)
            return None

    def end_streams(self, reason: str, *, token_id: str = "", key_name: str = "") -> int:
        """End the live streams authenticated with the token ``token_id`` (revoked) or with
        tokens signed by ``key_name`` (removed); return how many."""
        ended = 0
        for link in list(self.links.values()):
            if (token_id and link.token_id == token_id) or (key_name and link.key_name == key_name):
                link.end_with(TokenRefused(grpc.StatusCode.PERMISSION_DENIED, reason))
                ended += 1
        return ended

    async def _serve(
        self, h: pb.Hello, stream_id: str, context: grpc.aio.ServicerContext, token: TokenInfo
    ) -> None:
        session = GlobalSession(self.store.store_id, self.max_unacked)
        hello = Hello(
            zone=h.zone,
            instance_id=h.instance_id,
            protocol_version=h.protocol_version,
            store_id=h.resume.global_store_id,
            revision=h.resume.revision,
            chain=h.resume.chain,
        )
        chain_at_revision = None
        if h.resume.global_store_id == self.store.store_id:
            chain_at_revision = await self.store.chain_at(h.resume.revision)
        try:
            if 0 < h.max_message_bytes < self.max_message_bytes:
                # Global accepts single resources up to its own limit; a zone that cannot
                # receive them would fail on the same batch after every reconnect.
                raise ProtocolError(
                    f"zone accepts messages of at most {h.max_message_bytes} bytes but global "
                    f"may send up to {self.max_message_bytes}: give the zone "
                    f"--max-message-bytes {self.max_message_bytes} or more"
                )
            mode = session.on_hello(hello, self.hub.head, self.hub.log_floor, chain_at_revision)
        except ProtocolError as e:
            log.warning("zone refused", reason=str(e), instance=h.instance_id)
            self.tracker.refused(h.zone, f"refused instance {h.instance_id}: {e}")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            return
        old = self.links.get(h.zone)
        if old is not None and old.instance_id != h.instance_id:
            # Another live process claims this zone: refuse it rather than let two instances
            # take turns. A dead stream (host gone, link cut) is noticed by keepalive within
            # seconds, after which the new instance's next attempt gets in.
            log.warning(
                "refused a second instance of a connected zone",
                instance=h.instance_id,
                connected_instance=old.instance_id,
                connected_since=old.connected_at,
            )
            message = (
                f"zone {h.zone!r} is already connected from instance {old.instance_id} "
                f"(since {old.connected_at}); one zone name, one live stream"
            )
            self.tracker.refused(h.zone, f"refused instance {h.instance_id}: {message}")
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, message)
            return
        if old is not None and old.task is not None:
            # The same process dialled again before global noticed its old stream had died.
            log.info(
                "zone reconnected: the new stream replaces the old one", old_stream=old.stream_id
            )
            old.task.cancel()
        link = ZoneLink(
            zone=h.zone,
            instance_id=h.instance_id,
            stream_id=stream_id,
            connected_at=rfc3339(),
            session=session,
            status=self.tracker.connected(
                h.zone,
                stream_id=stream_id,
                instance_id=h.instance_id,
                zone_version=h.software_version,
                protocol_version=h.protocol_version,
                store_backend=h.store_backend,
                resumed_revision=h.resume.revision if mode is Mode.RESUME else None,
            ),
            token_id=token.token_id,
            key_name=token.key_name,
            task=asyncio.current_task(),
        )
        self.links[h.zone] = link
        # A token is checked when a stream starts; one that expires during the stream ends it
        # then, and the zone's next attempt is refused until it is given a new token.
        expiry: asyncio.TimerHandle | None = None
        if token.expires_at:
            left = (dt.datetime.fromisoformat(token.expires_at) - utcnow()).total_seconds()
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, left),
                link.end_with,
                TokenRefused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"zone token {token.token_id} expired at {token.expires_at}",
                ),
            )
        log.info(
            "zone connected",
            instance=h.instance_id,
            zone_version=h.software_version,
            mode=mode.name,
            zone_revision=h.resume.revision,
            head=self.hub.head,
        )
        reason = "zone closed the stream"
        reader: asyncio.Task[None] | None = None
        writer: asyncio.Task[None] | None = None
        wake = link.wake = self.hub.subscribe()
        # From here on every exit goes through the finally below, so a stream that fails even
        # while writing the welcome never leaves its zone marked as connected.
        try:
            await context.write(
                pb.GlobalMessage(
                    welcome=pb.Welcome(
                        global_instance_id=self.instance_id,
                        global_store_id=self.store.store_id,
                        head_revision=self.hub.head,
                        mode=pb.Welcome.RESUME if mode is Mode.RESUME else pb.Welcome.SNAPSHOT,
                        max_unacked=self.max_unacked,
                        protocol_version=PROTOCOL_VERSION,
                        software_version=self.software_version,
                        heartbeat_interval_ms=int(self.heartbeat_interval * 1000),
                    )
                ).SerializeToString()
            )
            wake.set()
            reader = asyncio.create_task(self._read(context, link, wake), name=f"read-{stream_id}")
            writer = asyncio.create_task(
                self._write(context, link, wake), name=f"write-{stream_id}"
            )
            for half in (reader, writer):
                # The one that did not end the stream may fail while being cancelled (a write
                # on a closed call): its error is the stream's end, already handled here.
                half.add_done_callback(_consume_outcome)
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if isinstance(exc, _EndStream) and link.end is not None:
                    reason = link.end.reason
                    log.warning("ending the zone's stream", reason=reason)
                    link.status.error(reason)
                    await context.abort(link.end.code, reason)
                elif isinstance(exc, ProtocolError):
                    reason = f"protocol error: {exc}"
                    log.warning("zone broke the protocol", reason=str(exc))
                    link.status.error(reason)
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                elif exc is not None:
                    reason = f"{type(exc).__name__}"
                    log.info("stream ended", reason=repr(exc))
        except asyncio.CancelledError:
            if self._stopping.is_set():
                reason = "global is shutting down"
            elif self.links.get(h.zone) is not link:
                reason = "replaced by a new stream from the same zone instance"
            else:  # grpc cancels the handler when the peer vanishes or the link dies
                reason = "connection lost"
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
            for task in (reader, writer):
                if task is not None:
                    task.cancel()
            self.hub.unsubscribe(wake)
            if self.links.get(h.zone) is link:
                del self.links[h.zone]
            link.status.disconnected(reason)
            log.info(
                "zone disconnected",
                reason=reason,
                acked_revision=session.acked_revision,
                head=self.hub.head,
            )

    async def _read(
        self, context: grpc.aio.ServicerContext, link: ZoneLink, wake: asyncio.Event
    ) -> None:
        session = link.session
        status = link.status
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

    async def _write(
        self, context: grpc.aio.ServicerContext, link: ZoneLink, wake: asyncio.Event
    ) -> None:
        session = link.session
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        first_range = True
        while True:
            if link.end is not None:
                raise _EndStream()
            action = session.next_action(self.hub.head, self.hub.log_floor)
            if action is None:
                wake.clear()
                # Re-check after clearing: a publish (or an end) in between is not lost.
                if link.end is not None:
                    raise _EndStream()
                action = session.next_action(self.hub.head, self.hub.log_floor)
            if action is None:
                timeout = max(0.0, self.heartbeat_interval - (loop.time() - last_sent))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                if not wake.is_set():
                    await context.write(
                        pb.GlobalMessage(
                            heartbeat=pb.Heartbeat(head_revision=self.hub.head)
                        ).SerializeToString()
                    )
                    last_sent = loop.time()
                continue
            if isinstance(action, SendSnapshot):
                snap = await self._snapshot()
                limits = (self.max_message_bytes, wire.PART_BYTES)
                parts = snap.parts.get(limits)
                if parts is None:  # cut once per snapshot, then shared by every stream
                    parts = snap.parts[limits] = list(pack(snap.changes, *limits))
                sent = await self._send_parts(
                    context, link, parts, 0, snap.revision, True, snap.chain
                )
                log.info(
                    "snapshot sent",
                    revision=snap.revision,
                    resources=len(snap.changes),
                    bytes=sent,
                )
                first_range = False
            elif isinstance(action, SendRange):
                plan = await self._range_plan(action)
                if plan is None:
                    log.info("zone fell behind the change log: sending a snapshot")
                    session.on_failed_range()
                    continue
                if plan.split_unit:
                    # A Mesh and the secrets it uses must reach the zone in one message; a
                    # snapshot applies deletions in its last part, so it never needs that.
                    log.info("a mesh change does not fit one message: sending a snapshot")
                    session.on_failed_range()
                    continue
                sent = await self._send_parts(
                    context,
                    link,
                    plan.parts,
                    action.from_revision,
                    action.to_revision,
                    False,
                    plan.chain,
                )
                if first_range and session.mode is Mode.RESUME:
                    log.info(
                        "resumed zone from its revision",
                        from_revision=action.from_revision,
                        to_revision=action.to_revision,
                        changes=plan.changes,
                        bytes=sent,
                    )
                first_range = False
            session.on_done()
            last_sent = loop.time()

    async def _snapshot(self) -> Snapshot:
        """The current snapshot, shared by every stream that needs one at the same time: when a
        fleet of zones needs one at once (a new global, a long outage), global reads and holds
        one copy, not one per zone. A read in progress is joined; a finished one is held
        weakly, so it is freed when the last stream sending it is done."""
        shared = self._shared_snapshot() if self._shared_snapshot else None
        if shared is not None and shared.revision == self.hub.head:
            return shared
        if self._snapshot_read is None or self._snapshot_read.done():
            self._snapshot_read = asyncio.ensure_future(self.store.snapshot())
        read = self._snapshot_read
        snap = await asyncio.shield(read)  # one stream ending must not cancel the others' read
        self._shared_snapshot = weakref.ref(snap)
        if self._snapshot_read is read:
            self._snapshot_read = None  # the future would keep the snapshot alive
        return snap

    async def _range_plan(self, action: SendRange) -> _RangePlan | None:
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
        changes = coalesce(records)
        parts = list(pack(changes, self.max_message_bytes, wire.PART_BYTES))
        plan = _RangePlan(
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

    async def _send_parts(
        self,
        context: grpc.aio.ServicerContext,
        link: ZoneLink,
        parts: list[Part],
        from_revision: int,
        revision: int,
        snapshot: bool,
        chain: bytes,
    ) -> int:
        """Write the parts as batches; return the bytes written."""
        total = 0
        session = link.session
        for part in parts:
            seq = session.next_seq()
            data = wire.assemble_batch(
                seq=seq,
                from_revision=from_revision,
                revision=revision,
                snapshot=snapshot,
                final=part.final,
                head_revision=self.hub.head,
                # Range records are shared through the hub's cache, so their framing is kept;
                # a snapshot's is made per part and dropped, not held for the whole snapshot.
                framed_changes=[
                    wire.frame_change(r.change) if snapshot else r.framed for r in part.records
                ],
                chain=chain if part.final else b"",
            )
            session.on_sent(seq, revision, part.final)
            link.status.batch_sent(seq, (r.key.kind for r in part.records))
            await context.write(data)
            total += len(data)
        return total


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _key_label(k: pb.ResourceKey) -> str:
    """'Secret:mesh/name' or 'GlobalSecret:name'; a kind this version does not know shows
    as its number (a newer zone may report one)."""
    kind = wire.PB_TO_KIND.get(k.kind)
    label = str(kind) if kind is not None else f"kind-{k.kind}"
    return f"{label}:{k.mesh}/{k.name}" if k.mesh else f"{label}:{k.name}"
