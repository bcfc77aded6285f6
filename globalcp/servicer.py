"""The gRPC edge on global: one handler per zone stream.

The handler authenticates the zone's token, admits its hello (the session, kds.protocol.session,
decides whether it resumes or needs a snapshot), keeps the registry of live streams, answers
with the welcome and hands the stream to a globalcp.stream.ZoneStream, which reads the zone's
acks and sends it batches (globalcp.sending) until the stream ends; then it takes the stream
out of the registry and marks its zone disconnected.

One zone name, one live stream: a new stream from the instance that already has one
replaces it, and the old call is ended with ABORTED, so two streams never report for one zone
and the old one's resources are freed; another instance is refused while the zone is live.

Nothing a peer sends is trusted before it is checked. The hello is read before the token is
verified, so it is bounded first (kds.protocol.limits): a field over its limit ends the
stream with INVALID_ARGUMENT naming the field and the limit. A message that does not decode
ends it with INVALID_ARGUMENT too. A refused token touches no zone's status: it is counted
(``on_token_refused``, a metric) and logged at most once per zone name per
REFUSAL_LOG_INTERVAL seconds, the line saying how many refusals it stands for. Without
tokens (--kds-insecure) any peer names its zone: global takes at most MAX_ZONES_WITHOUT_TOKENS
names, and refuses a new one beyond them with RESOURCE_EXHAUSTED.
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
from globalcp.hub import Hub
from globalcp.send_plans import SNAPSHOT_STREAMS, SendPlans
from globalcp.stream import ZoneLink, ZoneStream, decode_zone_message
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
from kds.throttle import Throttle
from kds.wire import PROTOCOL_VERSION

__all__ = ["METHOD", "SyncServicer", "ZoneLink"]

METHOD = "/kds.v1.SecretSync/Sync"
log = structlog.get_logger("globalcp.sync")

# The token of a stream when global runs without zone authentication (--kds-insecure).
NO_TOKEN = TokenInfo(token_id="", zone="", key_name="", expires_at="")

REPLACED = "replaced by a new stream from the same zone instance"
# A zone name's refused tokens are logged once per this many seconds (each is counted).
REFUSAL_LOG_INTERVAL = 10.0
# Without zone tokens (--kds-insecure) a zone's name is whatever a peer says, and global keeps
# each name's status, history and metrics for ever: at most this many names, then a new one
# is refused. 3,000 made-up names in 9 s took /metrics from 4 KB to 5.1 MB, /zones to 1.6 MB
# and the store by 7 MB, and nothing stopped a peer at that.
MAX_ZONES_WITHOUT_TOKENS = 1024
# Streams global admits for one zone per REFUSAL_LOG_INTERVAL; one more is refused with
# RESOURCE_EXHAUSTED. A zone's own dial loop starts at most one every 1.05 s (a stream that
# lasted 1 s, then at least 0.05 s), fewer when its streams fail sooner (backoff from 0.2 s).
# A zone instance dialling and dropping its stream in a loop took 1,210 streams a second,
# 35,000 log lines and 4.2 MB of store (two history events and store writes each) in 10 s.
STREAMS_PER_ZONE = 20


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
        self.tokens = tokens  # None: plaintext test mode, no zone authentication
        self.instance_id = instance_id
        # Several instances on one store (globalcp.peers): brings the hub up to the store's
        # head, for a zone that applied more than this instance's hub has heard of yet.
        self.catch_up: Callable[[], Awaitable[None]] | None = None
        self.software_version = software_version
        self.max_unacked = max_unacked
        self.ack_delay = ack_delay  # how long a zone may hold an ack (0: one per batch)
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval = heartbeat_interval
        self.anti_entropy_interval = anti_entropy_interval  # 0: no anti-entropy checks
        self.links: dict[str, ZoneLink] = {}
        # Shared by every stream: one snapshot read, one plan per range, however many zones.
        # Streams sending a snapshot at once are bounded (snapshot_streams): the others wait
        # their turn, heartbeating, and are served in the order they asked.
        # A snapshot's parts are kept in a file in spill_dir (globalcp.snapshot_plan).
        self.plans = SendPlans(store, hub, max_message_bytes, snapshot_streams, spill_dir)
        self.trees = GlobalTrees(store)  # anti-entropy: global's tree, one per head
        self._stopping = asyncio.Event()
        self._on_token_refused = on_token_refused  # given the refusal's status code name
        self._refusal_log = Throttle(REFUSAL_LOG_INTERVAL)
        self._new_zone_log = Throttle(REFUSAL_LOG_INTERVAL)
        self._admit_log = Throttle(REFUSAL_LOG_INTERVAL)  # refusals after the token
        # Streams admitted per zone (every zone its own key: zones is bounded by its tokens,
        # or by MAX_ZONES_WITHOUT_TOKENS).
        self._admitted = Throttle(REFUSAL_LOG_INTERVAL, burst=STREAMS_PER_ZONE, max_keys=1 << 16)

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
        try:
            async with asyncio.timeout(10):
                first = await context.read()
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello within 10 s")
            return
        msg = None if first is grpc.aio.EOF else decode_zone_message(first)
        if msg is None and first is not grpc.aio.EOF:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message is not a hello"
            )
            return
        if msg is None or msg.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
            return
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
            # Nothing here is the zone's: whoever sent it holds no token for it. It is counted
            # and logged, never written to the zone's status; a known zone's history notes it
            # (throttled as the log is, in a series of its own: globalcp.history).
            if self._on_token_refused is not None:
                self._on_token_refused(e.code.name)
            held_back = self._refusal_log.allow(h.zone)
            if held_back is not None:
                log.warning(
                    "zone refused: bad token",
                    code=e.code.name,
                    reason=safe_text(e.reason),
                    **({"detail": e.detail} if e.detail else {}),
                    instance=safe_text(h.instance_id),
                    refusals_not_logged=held_back,
                )
                self.tracker.token_refused(h.zone, e.code.name, e.reason, held_back)
            await context.abort(e.code, e.reason)
            return None

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
        if token is NO_TOKEN and not await self._room_for(h.zone, context):
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

    async def _room_for(self, zone: str, context: grpc.aio.ServicerContext) -> bool:
        """Without zone tokens: whether global may take ``zone``, a name it knows or one more
        while it knows fewer than MAX_ZONES_WITHOUT_TOKENS; False once the stream is refused
        (nothing of it kept; logged at most once per REFUSAL_LOG_INTERVAL)."""
        most = MAX_ZONES_WITHOUT_TOKENS
        if zone in self.tracker.zones or len(self.tracker.zones) < most:
            return True
        held_back = self._new_zone_log.allow("new zone")
        if held_back is not None:
            log.warning(
                "zone refused: too many zone names", most=most, refusals_not_logged=held_back
            )
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"global runs without zone tokens (--kds-insecure) and keeps at most {most} zone "
            "names: it takes no new one",
        )
        return False

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
            self._refused(h.zone, message, "zone refused: this instance cannot save its claims")
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
            self._refused(
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
            self._refused(
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
        if self._admitted.allow(h.zone) is None:
            message = (
                f"zone {h.zone!r} started {STREAMS_PER_ZONE} streams within "
                f"{REFUSAL_LOG_INTERVAL:g} s: dial again in a few seconds"
            )
            self._refused(
                h.zone, message, "zone refused: dialling too often", instance=h.instance_id
            )
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            return None
        return session, mode

    def _refused(self, zone: str, message: str, event: str, **fields: Any) -> None:
        """An authenticated stream of ``zone`` is refused: log it and make ``message`` the
        zone's last error and a history event, at most once per zone per
        REFUSAL_LOG_INTERVAL (the next line saying how many were not); the others are only
        counted as errors. A second instance dialling in a loop was each time a warning, an
        error, a history event and a store write: 1,560 a second."""
        held_back = self._admit_log.allow(zone)
        if held_back is None:
            self.tracker.refused(zone, message, quiet=True)
            return
        log.warning(event, **fields, refusals_not_logged=held_back)
        self.tracker.refused(zone, message)

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

    def _expire_with_token(self, link: ZoneLink, token: TokenInfo) -> asyncio.TimerHandle | None:
        """A token is checked when a stream starts; one that expires during the stream ends it
        then, and the zone's next attempt is refused until it is given a new token."""
        if not token.expires_at:
            return None
        left = (dt.datetime.fromisoformat(token.expires_at) - utcnow()).total_seconds()
        return asyncio.get_running_loop().call_later(
            max(0.0, left),
            link.end_with,
            grpc.StatusCode.UNAUTHENTICATED,
            f"zone token {token.token_id} expired at {token.expires_at}",
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
