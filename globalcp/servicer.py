"""The gRPC edge on global: one handler per zone stream.

The handler authenticates the zone's token, admits its hello (the session, kds.protocol.session,
decides whether it resumes or needs a snapshot), keeps the registry of live streams, answers
with the welcome and hands the stream to a globalcp.stream.ZoneStream, which reads the zone's
acks and sends it batches (globalcp.sending) until the stream ends; then it takes the stream
out of the registry and marks its zone disconnected.

One zone name, one live stream: a new stream from the instance that already has one
replaces it, and the old call is ended with ABORTED, so two streams never report for one zone
and the old one's resources are freed; another instance is refused while the zone is live.

Nothing a peer sends is trusted before it is checked. The token comes first, from the call's
metadata, before a message is read (globalcp.gate: what a stream must pass, and how refusals
are logged). The hello is then bounded (kds.protocol.limits): a field over its limit ends
the stream with INVALID_ARGUMENT naming the field and the limit; a hello naming another zone
than its token's is refused as a bad token. A message that does not decode ends the stream
with INVALID_ARGUMENT too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import structlog

from globalcp.checks import GlobalTrees, ZoneChecks
from globalcp.gate import NO_TOKEN, Gate
from globalcp.hub import Hub
from globalcp.send_plans import SNAPSHOT_STREAMS, SendPlans
from globalcp.stream import ZoneLink, ZoneStream, decode_zone_message
from globalcp.token_expiry import TokenExpiry
from globalcp.tokens import TokenInfo, TokenRefused, ZoneTokens
from globalcp.zones import ZoneTracker
from kds import wire
from kds._pb import sync_pb2 as pb
from kds.clock import rfc3339, utcnow
from kds.errors import ProtocolError
from kds.model import validate_name
from kds.protocol.limits import check_hello
from kds.protocol.session import GlobalSession, Hello, Mode
from kds.store import GlobalStore
from kds.text import safe_text
from kds.wire import PROTOCOL_VERSION

__all__ = ["METHOD", "SyncServicer", "ZoneLink"]

METHOD = "/kds.v1.SecretSync/Sync"
log = structlog.get_logger("globalcp.sync")

REPLACED = "replaced by a new stream from the same zone instance"


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
        ack_delay: float = 0.0,
        anti_entropy_interval: float = 0.0,
        snapshot_streams: int = SNAPSHOT_STREAMS,
        spill_dir: Path | None = None,
        on_token_refused: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.hub = hub
        self.tracker = tracker
        self.instance_id = instance_id
        # Several instances on one store (globalcp.peers): brings the hub up to the store's
        # head, for a zone that applied more than this instance's hub has heard of yet.
        self.catch_up: Callable[[], Awaitable[None]] | None = None
        self.software_version = software_version
        self.max_unacked = max_unacked
        self.ack_delay = ack_delay  # how long a zone may hold an ack (0: one per batch)
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval = heartbeat_interval
        # The wall clock a live stream's token expiry is checked against (tests move it).
        self.wall_clock: Callable[[], dt.datetime] = utcnow
        self.anti_entropy_interval = anti_entropy_interval  # 0: no anti-entropy checks
        self.links: dict[str, ZoneLink] = {}
        # Shared by every stream: one snapshot read, one plan per range, however many zones.
        # Streams sending a snapshot at once are bounded (snapshot_streams): the others wait
        # their turn, heartbeating, and are served in the order they asked.
        # A snapshot's parts are kept in a file in spill_dir (globalcp.snapshot_plan).
        self.plans = SendPlans(store, hub, max_message_bytes, snapshot_streams, spill_dir)
        self.trees = GlobalTrees(store)  # anti-entropy: global's tree, one per head
        self._stopping = asyncio.Event()
        self.gate = Gate(tokens, tracker, on_token_refused)

    @property
    def tokens(self) -> ZoneTokens | None:
        """The zone tokens streams are checked against; None: plaintext test mode."""
        return self.gate.tokens

    @tokens.setter
    def tokens(self, tokens: ZoneTokens | None) -> None:
        self.gate.tokens = tokens

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "kds.v1.SecretSync",
            {
                "Sync": grpc.stream_stream_rpc_method_handler(
                    self.sync,
                    # Messages arrive as bytes and are decoded by the handler, which ends a
                    # stream whose message does not decode with a status saying so.
                    request_deserializer=None,
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
        token = await self.gate.token(context)  # before any message is read (globalcp.gate)
        if token is None:
            return
        if token is not NO_TOKEN and not await self.gate.may_dial(token.zone, context):
            return
        # Admitted: headers now, before the hello is read, so the zone writes its hello only
        # to a stream global will read (a refusal crossing the hello's write reached the
        # zone as grpc's "Internal error from Core", the reason lost).
        await context.send_initial_metadata(((wire.ADMITTED_METADATA, "1"),))
        waiting = self.gate.awaiting_hello
        waiting[token.zone] += 1
        try:
            h = await self._hello(context)
        finally:
            waiting[token.zone] -= 1
            if not waiting[token.zone]:
                del waiting[token.zone]
        if h is None:
            return
        with structlog.contextvars.bound_contextvars(zone=h.zone, stream=stream_id):
            if token is not NO_TOKEN:
                try:
                    ZoneTokens.for_zone(token, h.zone)
                except TokenRefused as e:
                    await self.gate.token_refused(e, h.zone, h.instance_id, context)
                    return
            await self._serve(h, stream_id, context, token)

    async def _hello(self, context: grpc.aio.ServicerContext) -> pb.Hello | None:
        """The stream's hello, each field within its bound; None once the stream is ended."""
        try:
            async with asyncio.timeout(10):
                first = await context.read()
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello within 10 s")
            return None
        msg = None if first is grpc.aio.EOF else decode_zone_message(first)
        if msg is None and first is not grpc.aio.EOF:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message is not a hello"
            )
            return None
        if msg is None or msg.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
            return None
        h = msg.hello
        problem = next(iter(validate_name(h.zone, "hello.zone")), None) or check_hello(
            instance_id=h.instance_id,
            software_version=h.software_version,
            store_backend=h.store_backend,
            store_id=h.resume.global_store_id,
            revision=h.resume.revision,
            chain=h.resume.chain,
        )
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
            return None
        return h

    def end_streams(self, reason: str, *, token_id: str = "", key_name: str = "") -> int:
        """End the live streams authenticated with the token ``token_id`` (revoked) or with
        tokens signed by ``key_name`` (removed); return how many."""
        ended = 0
        for link in list(self.links.values()):
            if (token_id and link.token_id == token_id) or (key_name and link.key_name == key_name):
                link.end_with(grpc.StatusCode.PERMISSION_DENIED, reason)
                ended += 1
        return ended

    def end_zone_stream(self, zone: str, reason: str) -> bool:
        """End ``zone``'s live stream as unavailable here, so it reconnects to another
        global instance; False if it has none."""
        link = self.links.get(zone)
        if link is None:
            return False
        link.end_with(grpc.StatusCode.UNAVAILABLE, reason)
        return True

    async def _serve(
        self, h: pb.Hello, stream_id: str, context: grpc.aio.ServicerContext, token: TokenInfo
    ) -> None:
        if token is NO_TOKEN and not await self.gate.room_for(h.zone, context):
            return
        admitted = await self._admit(h, context)
        if admitted is None:
            return
        session, mode = admitted
        link = self._register(h, stream_id, session, mode, token)
        if self.tokens is not None and (why := self.tokens.withdrawn(token)) is not None:
            link.end_with(grpc.StatusCode.PERMISSION_DENIED, why)  # while it was admitted
        expiry = self._expire_with_token(link, token)
        log.info(
            "zone connected",
            instance=h.instance_id,
            zone_version=h.software_version,
            mode=mode.name,
            zone_revision=h.resume.revision,
            head=self.hub.head,
        )
        stream = ZoneStream(
            link,
            context,
            self.plans,
            welcome=self._welcome(mode),
            heartbeat_interval=self.heartbeat_interval,
            ack_delay_ms=int(self.ack_delay * 1000),
            checks=ZoneChecks(
                self.store,
                self.anti_entropy_interval,
                time.monotonic,
                self.trees,
                after_snapshot=mode is Mode.SNAPSHOT,
            ),
        )
        # From here on every exit goes through the finally below, so a stream that fails even
        # while writing the welcome never leaves its zone marked as connected.
        try:
            await stream.run()
        except asyncio.CancelledError:
            stream.reason = self._cancelled_reason(link)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
            self._unregister(link, stream.reason)

    async def _admit(
        self, h: pb.Hello, context: grpc.aio.ServicerContext
    ) -> tuple[GlobalSession, Mode] | None:
        """The hello's session and whether it resumes; None once the stream is refused (a
        protocol the session refuses, a message limit below global's, a second live
        instance of a zone that is connected, or global stopping)."""
        claims = self.tracker.claims
        if claims is not None and claims.cut_off:
            # Its claim could not be saved: the zone would be ended again a lease later.
            message = (
                f"global instance {self.instance_id} cannot save its claims on zone streams "
                "in the shared store (unreachable from it): connect to another instance"
            )
            # Its save (at the next flush) tells when the store is back.
            self.gate.refused(h.zone, message, "zone refused: this instance cannot save its claims")
            await context.abort(grpc.StatusCode.UNAVAILABLE, message)
            return None
        session = GlobalSession(self.store.store_id, self.max_unacked, wire.WINDOW_BYTES)
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
            if self.catch_up is not None and h.resume.revision > self.hub.head:
                await self.catch_up()  # resumed from another instance, ahead of this hub
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
            self.gate.refused(
                h.zone,
                f"refused instance {h.instance_id}: {e}",
                "zone refused",
                reason=str(e),
                instance=safe_text(h.instance_id),
            )
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            return None
        old = self.links.get(h.zone)
        if old is not None and old.instance_id != h.instance_id:
            # Another live process claims this zone: refuse it rather than let two instances
            # take turns. A dead stream (host gone, link cut) is noticed by keepalive within
            # seconds, after which the new instance's next attempt gets in.
            message = (
                f"zone {h.zone!r} is already connected from instance {old.instance_id} "
                f"(since {old.connected_at}); one zone name, one live stream"
            )
            self.gate.refused(
                h.zone,
                f"refused instance {h.instance_id}: {message}",
                "refused a second instance of a connected zone",
                instance=h.instance_id,
                connected_instance=old.instance_id,
                connected_since=old.connected_at,
            )
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, message)
            return None
        if self._stopping.is_set():
            # Stopping: a stream admitted now would run until grpc's grace cancels it, and
            # hold the shutdown up that long. The zone dials again (another instance, or
            # this one once it is back).
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "global is shutting down: connect again later"
            )
            return None
        if not await self.gate.admit(h.zone, h.instance_id, context):
            return None
        return session, mode

    def _register(
        self,
        h: pb.Hello,
        stream_id: str,
        session: GlobalSession,
        mode: Mode,
        token: TokenInfo,
    ) -> ZoneLink:
        """Make the admitted stream its zone's live one, replacing the same instance's old
        stream if there is one, and mark the zone connected."""
        old = self.links.get(h.zone)
        if old is not None:
            # The same process dialled again before global noticed its old stream had died.
            # The old call is ended (ABORTED) by its own handler, which frees it.
            log.info(
                "zone reconnected: the new stream replaces the old one", old_stream=old.stream_id
            )
            old.end_with(grpc.StatusCode.ABORTED, REPLACED, quiet=True)
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
        return link

    def _expire_with_token(self, link: ZoneLink, token: TokenInfo) -> TokenExpiry | None:
        """A token is checked when a stream starts; one that expires during the stream ends it
        then (by the loop's clock or the wall clock, globalcp.token_expiry), and the zone's
        next attempt is refused until it is given a new token."""
        if not token.expires_at:
            return None
        return TokenExpiry(
            dt.datetime.fromisoformat(token.expires_at),
            lambda: link.end_with(
                grpc.StatusCode.UNAUTHENTICATED,
                f"zone token {token.token_id} expired at {token.expires_at}",
            ),
            every=self.heartbeat_interval,
            wall_clock=self.wall_clock,
        )

    def _welcome(self, mode: Mode) -> bytes:
        return pb.GlobalMessage(
            welcome=pb.Welcome(
                global_instance_id=self.instance_id,
                global_store_id=self.store.store_id,
                head_revision=self.hub.head,
                mode=pb.Welcome.RESUME if mode is Mode.RESUME else pb.Welcome.SNAPSHOT,
                max_unacked=self.max_unacked,
                max_unacked_bytes=wire.WINDOW_BYTES,
                protocol_version=PROTOCOL_VERSION,
                software_version=self.software_version,
                heartbeat_interval_ms=int(self.heartbeat_interval * 1000),
                ack_delay_ms=int(self.ack_delay * 1000),
            )
        ).SerializeToString()

    def _cancelled_reason(self, link: ZoneLink) -> str:
        """Why a stream's handler was cancelled."""
        if self._stopping.is_set():
            return "global is shutting down"
        if self.links.get(link.zone) is not link:
            return REPLACED
        return "connection lost"  # grpc cancels the handler when the peer vanishes or the link dies

    def _unregister(self, link: ZoneLink, reason: str) -> None:
        """The stream has ended: it is no longer its zone's live one, and the zone is offline
        unless a newer stream has taken it over."""
        if self.links.get(link.zone) is link:
            del self.links[link.zone]
        link.status.disconnected(reason)
        log.info(
            "zone disconnected",
            reason=reason,
            acked_revision=link.session.acked_revision,
            head=self.hub.head,
        )
