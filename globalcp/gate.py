"""What a sync stream must pass on global before anything of it is read or kept, and how its
refusals are logged and recorded. Used by the servicer (globalcp.servicer).

- The token comes first, from the call's metadata, before a message is read: grpc buffers
  the whole of a message a handler waits for (up to --max-message-bytes), so a hello read
  before the token let any client make global hold 4 MiB per stream: one client with 64
  connections of 4 streams, each a hello one byte short, took global from 76 MB to 848 MB
  in 3 s (and 1,024 connections are allowed). A stream whose token is refused is ended
  without a read; one whose token verifies is held to its zone when its hello names it.
- One zone's token has at most HELLOS_PER_ZONE streams waiting for their hello at once.
- Without tokens (--kds-insecure) a zone's name is whatever a peer says: global takes at most
  MAX_ZONES_WITHOUT_TOKENS names.
- Global admits at most STREAMS_PER_ZONE streams per zone per REFUSAL_LOG_INTERVAL; a
  token's stream beyond them is refused before its hello is read.

A refused token touches no zone's status: it is counted (``on_token_refused``, a metric) and
logged at most once per zone name per REFUSAL_LOG_INTERVAL, the line saying how many refusals
it stands for; a zone global knows gets a history entry. The name is the zone the token
says it is in its ``kds-zone`` metadata, else the one the token names (both unverified, so
only a valid name is used) or, for a token of another zone, the one its hello claims. Refusals after the token (a second instance, a protocol global refuses)
are the zone's, made its last error, throttled the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import structlog

from globalcp.tokens import TokenInfo, TokenRefused, ZoneTokens
from globalcp.zones import ZoneTracker
from kds.clock import utcnow
from kds.model import validate_name
from kds.text import safe_text
from kds.throttle import Throttle
from kds.wire import ZONE_METADATA

__all__ = [
    "HELLOS_PER_ZONE",
    "MAX_ZONES_WITHOUT_TOKENS",
    "NO_TOKEN",
    "REFUSAL_LOG_INTERVAL",
    "STREAMS_PER_ZONE",
    "Gate",
]

log = structlog.get_logger("globalcp.sync")

# The token of a stream when global runs without zone authentication (--kds-insecure).
NO_TOKEN = TokenInfo(token_id="", zone="", key_name="", expires_at="")
# A zone name's refusals are logged once per this many seconds (each is counted).
REFUSAL_LOG_INTERVAL = 10.0
# Without zone tokens a zone's name is whatever a peer says, and global keeps each name's
# status, history and metrics for ever: at most this many names, then a new one is refused.
# 3,000 made-up names in 9 s took /metrics from 4 KB to 5.1 MB, /zones to 1.6 MB and the
# store by 7 MB, and nothing stopped a peer at that.
MAX_ZONES_WITHOUT_TOKENS = 1024
# Streams global admits for one zone per REFUSAL_LOG_INTERVAL; one more is refused with
# RESOURCE_EXHAUSTED. A zone's own dial loop starts at most one every 1.05 s (a stream that
# lasted 1 s, then at least 0.05 s), fewer when its streams fail sooner (backoff from 0.2 s).
# A zone instance dialling and dropping its stream in a loop took 1,210 streams a second,
# 35,000 log lines and 4.2 MB of store (two history events and store writes each) in 10 s.
STREAMS_PER_ZONE = 20
# Streams of one zone's token waiting for their hello at once (a zone has one at a time).
HELLOS_PER_ZONE = 4


class Gate:
    def __init__(
        self,
        tokens: ZoneTokens | None,
        tracker: ZoneTracker,
        on_token_refused: Callable[[str], None] | None = None,
    ):
        self.tokens = tokens  # None: plaintext test mode, no zone authentication
        self.tracker = tracker
        self._on_token_refused = on_token_refused  # given the refusal's status code name
        self._refusal_log = Throttle(REFUSAL_LOG_INTERVAL)
        self._new_zone_log = Throttle(REFUSAL_LOG_INTERVAL)
        self._admit_log = Throttle(REFUSAL_LOG_INTERVAL)  # refusals after the token
        # Streams admitted per zone (every zone its own key: zones are bounded by their
        # tokens, or by MAX_ZONES_WITHOUT_TOKENS).
        self._admitted = Throttle(REFUSAL_LOG_INTERVAL, burst=STREAMS_PER_ZONE, max_keys=1 << 16)
        self.awaiting_hello: Counter[str] = Counter()  # by the zone of their token

    async def token(self, context: grpc.aio.ServicerContext) -> TokenInfo | None:
        """The verified token's facts, from the call's metadata before any message is read
        (NO_TOKEN with no authentication); None once the stream is refused."""
        if self.tokens is None:
            return NO_TOKEN
        metadata = dict(context.invocation_metadata() or ())
        auth = str(metadata.get("authorization", ""))
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            info = self.tokens.verify(token, None, utcnow())
        except TokenRefused as e:
            await self.token_refused(e, _claimed_zone(metadata, token), "", context)
            return None
        if self.awaiting_hello[info.zone] >= HELLOS_PER_ZONE:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"zone {info.zone!r} has {HELLOS_PER_ZONE} streams waiting to send their hello",
            )
            return None
        return info

    async def token_refused(
        self, e: TokenRefused, zone: str, instance: str, context: grpc.aio.ServicerContext
    ) -> None:
        """Count, log (throttled) and end a stream whose token was refused. Nothing here is
        the zone's: whoever sent it holds no token for it. A known zone's history notes it
        (throttled as the log is, in a series of its own: globalcp.history)."""
        if self._on_token_refused is not None:
            self._on_token_refused(e.code.name)
        held_back = self._refusal_log.allow(zone)
        if held_back is not None:
            log.warning(
                "zone refused: bad token",
                code=e.code.name,
                reason=safe_text(e.reason),
                **({"zone": zone} if zone else {}),
                **({"detail": e.detail} if e.detail else {}),
                **({"instance": safe_text(instance)} if instance else {}),
                refusals_not_logged=held_back,
            )
            if zone:
                self.tracker.token_refused(zone, e.code.name, e.reason, held_back)
        await context.abort(e.code, e.reason)

    async def room_for(self, zone: str, context: grpc.aio.ServicerContext) -> bool:
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

    async def may_dial(self, zone: str, context: grpc.aio.ServicerContext) -> bool:
        """Before a token's stream sends its hello: False once the stream is refused, its
        zone having started its STREAMS_PER_ZONE streams in this REFUSAL_LOG_INTERVAL
        already (``admit`` would refuse it after its hello). A refused stream's hello is
        never read: one zone's token sending 4 MiB hellos on 4 streams at a time, refused
        after each was read, took global to 64% CPU and 1.1 GB."""
        if not self._admitted.spent(zone):
            return True
        with structlog.contextvars.bound_contextvars(zone=zone):  # no stream's context yet
            await self._dialling_too_often(zone, "", context)
        return False

    async def admit(self, zone: str, instance: str, context: grpc.aio.ServicerContext) -> bool:
        """Whether ``zone`` may have one more stream within its STREAMS_PER_ZONE per
        REFUSAL_LOG_INTERVAL; False once the stream is refused."""
        if self._admitted.allow(zone) is not None:
            return True
        await self._dialling_too_often(zone, instance, context)
        return False

    async def _dialling_too_often(
        self, zone: str, instance: str, context: grpc.aio.ServicerContext
    ) -> None:
        message = (
            f"zone {zone!r} started {STREAMS_PER_ZONE} streams within "
            f"{REFUSAL_LOG_INTERVAL:g} s: dial again in a few seconds"
        )
        fields = {"instance": instance} if instance else {}
        self.refused(zone, message, "zone refused: dialling too often", **fields)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def refused(self, zone: str, message: str, event: str, **fields: Any) -> None:
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


def _claimed_zone(metadata: dict[str, Any], token: str) -> str:
    """The zone a stream refused for its token says it is, unverified: the ``kds-zone``
    metadata a zone sends with its token, else the zone the token names; only a valid zone
    name, else ""."""
    claimed = metadata.get(ZONE_METADATA)
    if claimed is None:
        try:
            claimed = jwt.decode(token, options={"verify_signature": False}).get("sub")
        except (jwt.InvalidTokenError, ValueError, TypeError, AttributeError):
            return ""
    return claimed if isinstance(claimed, str) and not validate_name(claimed, "zone") else ""
