"""Global side of one zone's stream, as a plain state machine.

Fed: the zone's hello, global's head revision and log floor, what the driver sent, and the
zone's acks. Returns: the welcome to send and, on demand, the next thing to send (a snapshot
or a coalesced range of revisions). It never awaits, reads a clock or touches grpc; the
stream (globalcp.stream, globalcp.sending) decodes, feeds, encodes and writes.

Memory per zone is a few integers and the in-flight window's (seq, revision) pairs, each with
a reference to the keys its batch held (the driver's shared records, not a copy): a zone that
stops acknowledging costs nothing but a number saying how far it was sent.

Acks are cumulative: an ack for batch N acknowledges every batch up to N still in flight, so a
zone may acknowledge several batches with one message. An ack may reject resources only from
the batch it names, each at most once: a
rejection of anything else (more rejections than changes sent, a key the batch did not hold,
one key twice) is a protocol error, so what a zone reports never exceeds what it was sent.
One exception: the final part of a snapshot also deletes, on the zone, the synced copies the
snapshot did not carry, and the zone may refuse those deletes (a Mesh its own secrets still
live in); its ack may name up to STALE_REJECTIONS keys the snapshot did not send. When the
window reopens, it is sent one range from there to the head, coalesced per key.

Its states, and the events that move it between them, are one table (``TRANSITIONS``), in the
style of h11: an event the table has no entry for in the current state is refused with
ProtocolError, so a zone or driver that breaks the protocol is caught by one lookup, not by
flags checked here and there.

    AWAIT_HELLO    --hello, can resume------->  IDLE
    AWAIT_HELLO    --hello, cannot resume---->  NEED_SNAPSHOT
    IDLE           --start range------------->  SENDING_RANGE      the head moved
    IDLE           --start snapshot---------->  SENDING_SNAPSHOT   fell behind the log floor
    NEED_SNAPSHOT  --start snapshot---------->  SENDING_SNAPSHOT
    SENDING_RANGE  --range failed------------>  NEED_SNAPSHOT      the log moved past it
    IDLE           --start repair------------>  SENDING_REPAIR     anti-entropy found damage
    SENDING_*      --part sent--------------->  SENDING_*
    SENDING_*      --done-------------------->  IDLE
    any but AWAIT_HELLO  --ack, ask---------->  the same state

    window:  at most max_unacked batches, and max_unacked_bytes of them (0: no byte bound),
             unacknowledged: a start happens only below both (asked then, next_action
             answers None); a range or snapshot in progress finishes (its parts may overrun
             the window), then waits for acks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

from kds.errors import ProtocolError
from kds.resource import Key

__all__ = [
    "TRANSITIONS",
    "Ack",
    "Event",
    "GlobalSession",
    "Hello",
    "Keys",
    "Mode",
    "SendRange",
    "SendSnapshot",
    "State",
    "next_state",
]

SUPPORTED_PROTOCOL_VERSIONS = frozenset({1})

# The most keys outside the batch that the ack of a snapshot's final part may reject: the
# deletes of copies the snapshot left out that the zone refused (a zone's ack names at most
# 1,000 rejections in all).
STALE_REJECTIONS = 1000


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


class Keys(Protocol):
    """The keys of the changes in one batch, as the driver holds them (sized, iterable)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Key]: ...


@dataclass(frozen=True)
class Ack:
    seq: int
    applied_revision: int
    # The keys the zone rejected, in its order; None for one that names no resource global
    # knows (a kind it does not know, or no key at all).
    rejected: tuple[Key | None, ...] = ()


@dataclass(frozen=True)
class SendSnapshot:
    pass


@dataclass(frozen=True)
class SendRange:
    from_revision: int
    to_revision: int


Action = SendSnapshot | SendRange


class State(Enum):
    AWAIT_HELLO = auto()  # the stream's first event must be the zone's hello
    NEED_SNAPSHOT = auto()  # the next thing sent must be a snapshot
    IDLE = auto()  # ranges are sent as the head moves and the window allows
    SENDING_RANGE = auto()  # the parts of a range are being written
    SENDING_SNAPSHOT = auto()  # the parts of a snapshot are being written
    SENDING_REPAIR = auto()  # the parts of an anti-entropy repair are being written


class Event(Enum):
    HELLO_RESUME = auto()  # the hello was accepted: the zone resumes from its revision
    HELLO_SNAPSHOT = auto()  # the hello was accepted: the zone needs a snapshot
    ASK = auto()  # the driver asks what to send (next_action)
    START_RANGE = auto()  # next_action answered SendRange
    START_SNAPSHOT = auto()  # next_action answered SendSnapshot
    START_REPAIR = auto()  # the driver sends an anti-entropy repair (start_repair)
    SENT = auto()  # the driver wrote a part (on_sent)
    DONE = auto()  # the driver wrote the last part (on_done)
    RANGE_FAILED = auto()  # the range left the change log before it was read (on_failed_range)
    ACK = auto()  # the zone acknowledged a batch (on_ack)


_SENDING = (State.SENDING_RANGE, State.SENDING_SNAPSHOT, State.SENDING_REPAIR)
_LIVE = (State.NEED_SNAPSHOT, State.IDLE, *_SENDING)

# {(state, event): next state}; a pair missing here is a protocol error.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.AWAIT_HELLO, Event.HELLO_RESUME): State.IDLE,
    (State.AWAIT_HELLO, Event.HELLO_SNAPSHOT): State.NEED_SNAPSHOT,
    **{(s, Event.ASK): s for s in _LIVE},
    **{(s, Event.ACK): s for s in _LIVE},
    (State.IDLE, Event.START_RANGE): State.SENDING_RANGE,
    (State.IDLE, Event.START_SNAPSHOT): State.SENDING_SNAPSHOT,
    (State.NEED_SNAPSHOT, Event.START_SNAPSHOT): State.SENDING_SNAPSHOT,
    (State.IDLE, Event.START_REPAIR): State.SENDING_REPAIR,
    **{(s, Event.SENT): s for s in _SENDING},
    **{(s, Event.DONE): State.IDLE for s in _SENDING},
    (State.SENDING_RANGE, Event.RANGE_FAILED): State.NEED_SNAPSHOT,
}

# What a refused event says, by event (the state is added when it tells more).
_REFUSED: dict[Event, str] = {
    Event.HELLO_RESUME: "hello sent twice on one stream",
    Event.HELLO_SNAPSHOT: "hello sent twice on one stream",
    Event.ASK: "no hello yet",
    Event.ACK: "ack before hello",
}


def next_state(state: State, event: Event) -> State:
    """The state ``event`` leads to from ``state``; ProtocolError if it is not allowed."""
    after = TRANSITIONS.get((state, event))
    if after is None:
        message = _REFUSED.get(event) or f"{event.name} is not allowed in state {state.name}"
        raise ProtocolError(message)
    return after


@dataclass
class _InFlight:
    seq: int
    revision: int
    final: bool
    keys: Keys = ()
    size: int = 0  # the encoded batch's bytes
    repair: bool = False  # a part of an anti-entropy repair
    snapshot: bool = False  # a part of a snapshot

    def rejections_allowed(self) -> int:
        """How many rejections an ack of this batch may name at most: its changes, and for a
        snapshot's final part also the copies the snapshot removes from the zone."""
        return len(self.keys) + (STALE_REJECTIONS if self.snapshot and self.final else 0)


class GlobalSession:
    def __init__(self, store_id: str, max_unacked: int, max_unacked_bytes: int = 0):
        self.store_id = store_id
        self.max_unacked = max_unacked
        self.max_unacked_bytes = max_unacked_bytes  # 0: the window counts batches only
        self._in_flight_bytes = 0
        self.state = State.AWAIT_HELLO
        self.mode: Mode | None = None
        self.sent_revision = -1  # -1: nothing known to be on the zone yet
        self.acked_revision = -1
        self._in_flight: deque[_InFlight] = deque()
        self._seq = 0

    def _fire(self, event: Event) -> None:
        self.state = next_state(self.state, event)

    # ------------------------------------------------------------------ inputs

    def on_hello(
        self, hello: Hello, head: int, log_floor: int, chain_at_revision: bytes | None = None
    ) -> Mode:
        """Decide RESUME or SNAPSHOT. ``chain_at_revision`` is global's history chain at
        ``hello.revision`` (None if unknown): a zone resumes only from global's own history."""
        next_state(self.state, Event.HELLO_RESUME)  # a second hello is refused before all else
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
            self._fire(Event.HELLO_RESUME)
            self.mode = Mode.RESUME
            self.sent_revision = self.acked_revision = hello.revision
        else:
            self._fire(Event.HELLO_SNAPSHOT)
            self.mode = Mode.SNAPSHOT
        return self.mode

    def next_action(self, head: int, log_floor: int) -> Action | None:
        """What to send now, or None to wait (for an ack, or for the head to move)."""
        self._fire(Event.ASK)
        if self.state in _SENDING or self.window_full():
            return None
        if self.state is State.NEED_SNAPSHOT or self.sent_revision < log_floor:
            # Behind what the change log still holds: only a snapshot can catch it up.
            self._fire(Event.START_SNAPSHOT)
            return SendSnapshot()
        if self.sent_revision < head:
            self._fire(Event.START_RANGE)
            return SendRange(self.sent_revision, head)
        return None

    def can_check(self, head: int) -> bool:
        """Whether an anti-entropy check may start: idle, nothing in flight, and the zone
        has acknowledged everything up to ``head`` (so both trees are at one revision)."""
        return (
            self.state is State.IDLE
            and not self._in_flight
            and self.acked_revision == self.sent_revision == head
        )

    def start_repair(self) -> int:
        """The driver sends an anti-entropy repair now; the revision its batches start and
        end at (the zone's, once it applied what was sent): they record nothing."""
        self._fire(Event.START_REPAIR)
        return self.sent_revision

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def window_full(self) -> bool:
        """Whether the batches in flight fill the window (by count or by bytes)."""
        return len(self._in_flight) >= self.max_unacked or (
            self.max_unacked_bytes > 0 and self._in_flight_bytes >= self.max_unacked_bytes
        )

    def on_sent(self, seq: int, revision: int, final: bool, keys: Keys = (), size: int = 0) -> None:
        """The driver wrote batch ``seq`` (a part of the current range or snapshot) holding
        changes to ``keys`` (kept by reference until the batch is acknowledged), ``size``
        bytes encoded."""
        self._fire(Event.SENT)
        if seq != self._seq:
            raise ProtocolError(f"batch {seq} sent out of order (expected {self._seq})")
        repair = self.state is State.SENDING_REPAIR
        snapshot = self.state is State.SENDING_SNAPSHOT
        self._in_flight.append(_InFlight(seq, revision, final, keys, size, repair, snapshot))
        self._in_flight_bytes += size
        if final:
            self.sent_revision = revision

    def on_done(self) -> None:
        """The current range or snapshot is fully written."""
        self._fire(Event.DONE)

    def on_failed_range(self) -> None:
        """The range could not be read (the log moved past it): fall back to a snapshot."""
        self._fire(Event.RANGE_FAILED)

    def on_ack(self, ack: Ack) -> list[_InFlight]:
        """The zone acknowledged batch ``ack.seq`` and every earlier batch still in flight
        (acks are cumulative: a zone may acknowledge several batches with one message).
        Returns the batches it acknowledged, oldest first. Its rejections name changes of
        batch ``ack.seq``; its applied revision is the zone's after that batch."""
        self._fire(Event.ACK)
        if not self._in_flight:
            raise ProtocolError(f"ack for batch {ack.seq} but nothing is in flight")
        count = next((i + 1 for i, b in enumerate(self._in_flight) if b.seq == ack.seq), 0)
        if not count:
            first, last = self._in_flight[0].seq, self._in_flight[-1].seq
            raise ProtocolError(
                f"ack for batch {ack.seq}, but the batches in flight are {first} to {last}"
            )
        acked_batch = self._in_flight[count - 1]
        if ack.rejected:
            _check_rejections(ack, acked_batch)
        if acked_batch.final and ack.applied_revision != acked_batch.revision:
            raise ProtocolError(
                f"batch {ack.seq} ends at revision {acked_batch.revision} but the zone recorded "
                f"{ack.applied_revision}"
            )
        done = [self._in_flight.popleft() for _ in range(count)]
        self._in_flight_bytes -= sum(b.size for b in done)
        finals = [b.revision for b in done if b.final]
        if finals:
            self.acked_revision = finals[-1]
        return done

    def rejections_allowed(self, seq: int) -> int | None:
        """How many resources an ack of batch ``seq`` may reject at most, if it is in flight
        (the changes it held, and for a snapshot's final part the copies the snapshot
        removes), known before the ack's keys are read (a zone may send hundreds of thousands
        in one message)."""
        for b in self._in_flight:
            if b.seq == seq:
                return b.rejections_allowed()
        return None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def oldest_unacked(self) -> int | None:
        """The seq of the oldest batch the zone has not acknowledged (None: none in flight);
        it moves on with every ack, so a stalled zone is one where it stays put."""
        return self._in_flight[0].seq if self._in_flight else None


def _check_rejections(ack: Ack, batch: _InFlight) -> None:
    """Every rejected key is one the batch held, and none is rejected twice; the ack of a
    snapshot's final part may also reject up to STALE_REJECTIONS deletes of copies the
    snapshot left out (keys it did not send). The messages name positions and counts,
    never what the zone sent."""
    allowed = batch.rejections_allowed()
    if len(ack.rejected) > allowed:
        raise ProtocolError(
            f"ack for batch {ack.seq} rejects {len(ack.rejected)} resources but the batch "
            f"allows {allowed} (it held {len(batch.keys)} changes)"
        )
    sent = set(batch.keys)
    removes = batch.snapshot and batch.final  # the zone drops the copies it did not carry
    seen: set[Key] = set()
    for i, key in enumerate(ack.rejected):
        if key is None or (key not in sent and not removes):
            raise ProtocolError(
                f"ack for batch {ack.seq}: rejection {i} names a resource the batch did not hold"
            )
        if key in seen:
            raise ProtocolError(
                f"ack for batch {ack.seq}: rejection {i} rejects a resource a second time"
            )
        seen.add(key)
