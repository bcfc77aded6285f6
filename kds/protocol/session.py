"""Global side of one zone's stream, as a plain state machine.

Fed: the zone's hello, global's head revision and log floor, what the driver sent, and the
zone's acks. Returns: the welcome to send and, on demand, the next thing to send (a snapshot
or a coalesced range of revisions). It never awaits, reads a clock or touches grpc; the
servicer (globalcp.servicer) decodes, feeds, encodes and writes.

Memory per zone is a few integers and the in-flight window's (seq, revision) pairs: a zone
that stops acknowledging costs nothing but a number saying how far it was sent. When the
window reopens, it is sent one range from there to the head, coalesced per key.

    state:   hello -> (sending snapshot | sending range | idle) ...
    window:  at most max_unacked batches unacknowledged; a range or snapshot in progress
             finishes (its parts may overrun the window), then waits for acks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from kds.errors import ProtocolError

__all__ = ["Ack", "GlobalSession", "Hello", "Mode", "SendRange", "SendSnapshot"]

SUPPORTED_PROTOCOL_VERSIONS = frozenset({1})


class Mode(Enum):
    RESUME = 1
    SNAPSHOT = 2


@dataclass(frozen=True)
class Hello:
    zone: str
    instance_id: str
    protocol_version: int
    store_id: str  # global store the zone last synced from ("" if never)
    revision: int
    chain: bytes = b""  # global's history chain at that revision, as the zone recorded it


@dataclass(frozen=True)
class Ack:
    seq: int
    applied_revision: int


@dataclass(frozen=True)
class SendSnapshot:
    pass


@dataclass(frozen=True)
class SendRange:
    from_revision: int
    to_revision: int


Action = SendSnapshot | SendRange


@dataclass
class _InFlight:
    seq: int
    revision: int
    final: bool


class GlobalSession:
    def __init__(self, store_id: str, max_unacked: int):
        self.store_id = store_id
        self.max_unacked = max_unacked
        self.mode: Mode | None = None
        self.sent_revision = -1  # -1: nothing known to be on the zone yet
        self.acked_revision = -1
        self._busy = False
        self._want_snapshot = False
        self._in_flight: deque[_InFlight] = deque()
        self._seq = 0

    # ------------------------------------------------------------------ inputs

    def on_hello(
        self, hello: Hello, head: int, log_floor: int, chain_at_revision: bytes | None = None
    ) -> Mode:
        """Decide RESUME or SNAPSHOT. ``chain_at_revision`` is global's history chain at
        ``hello.revision`` (None if unknown): a zone resumes only from global's own history."""
        if self.mode is not None:
            raise ProtocolError("hello sent twice on one stream")
        if hello.protocol_version not in SUPPORTED_PROTOCOL_VERSIONS:
            raise ProtocolError(
                f"protocol version {hello.protocol_version} is not supported "
                f"(global speaks {sorted(SUPPORTED_PROTOCOL_VERSIONS)})"
            )
        resumable = (
            hello.store_id == self.store_id
            and hello.store_id != ""
            and log_floor <= hello.revision <= head
            and chain_at_revision is not None
            and chain_at_revision == hello.chain
        )
        if resumable:
            self.mode = Mode.RESUME
            self.sent_revision = self.acked_revision = hello.revision
        else:
            self.mode = Mode.SNAPSHOT
            self._want_snapshot = True
        return self.mode

    def next_action(self, head: int, log_floor: int) -> Action | None:
        """What to send now, or None to wait (for an ack, or for the head to move)."""
        if self.mode is None:
            raise ProtocolError("no hello yet")
        if self._busy or len(self._in_flight) >= self.max_unacked:
            return None
        if self._want_snapshot or self.sent_revision < log_floor:
            # Behind what the change log still holds: only a snapshot can catch it up.
            self._want_snapshot = False
            self._busy = True
            return SendSnapshot()
        if self.sent_revision < head:
            self._busy = True
            return SendRange(self.sent_revision, head)
        return None

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def on_sent(self, seq: int, revision: int, final: bool) -> None:
        """The driver wrote batch ``seq`` (a part of the current range or snapshot)."""
        if seq != self._seq:
            raise ProtocolError(f"batch {seq} sent out of order (expected {self._seq})")
        self._in_flight.append(_InFlight(seq, revision, final))
        if final:
            self.sent_revision = revision

    def on_done(self) -> None:
        """The current range or snapshot is fully written."""
        self._busy = False

    def on_failed_range(self) -> None:
        """The range could not be read (the log moved past it): fall back to a snapshot."""
        self._busy = False
        self._want_snapshot = True

    def on_ack(self, ack: Ack) -> _InFlight:
        if not self._in_flight:
            raise ProtocolError(f"ack for batch {ack.seq} but nothing is in flight")
        expected = self._in_flight[0]
        if ack.seq != expected.seq:
            raise ProtocolError(f"ack for batch {ack.seq}, expected batch {expected.seq}")
        self._in_flight.popleft()
        if expected.final and ack.applied_revision != expected.revision:
            raise ProtocolError(
                f"batch {ack.seq} ends at revision {expected.revision} but the zone recorded "
                f"{ack.applied_revision}"
            )
        if expected.final:
            self.acked_revision = ack.applied_revision
        return expected

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
