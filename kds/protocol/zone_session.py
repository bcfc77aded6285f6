"""Zone side of the sync stream, as a plain state machine.

The zone's protocol rules (the welcome comes first, global's head as last heard, when the zone
counts as ready, what an ack says, when a silent global is given up on) live here, apart from
grpc, asyncio, the store and the clock, so they can be read in one place and tested by feeding
events. The client (zonecp.client) dials, decodes, feeds this session, encodes and writes; the
session decides. Times are the caller's: ``now`` is any monotonic reading in seconds.

One session lives as long as the zone process and sees each stream in turn, because readiness
spans streams: a zone that caught up once stays ready while global is away, serving its last
state. Its states, and the events that move between them; any other event is refused with a
ProtocolError, straight from the table (TRANSITIONS)::

                  open                  welcome            batch
    DISCONNECTED -------> AWAITING_WELCOME -------> SYNCING <------> APPLYING
         ^                                          |  ^    applied (returns the ack)
         |                                          +--+
         |                         heartbeat, digest query, tick (returns: reconnect?)
         +---- end, from any other state (the stream closed, for whatever reason)

A batch or heartbeat before the welcome, a second welcome, or anything but ``open`` after a
stream ended is a protocol error. Ready: once connected and caught up since start (a resume
already at global's head at the welcome; else the final part of a range or snapshot that
reaches the head); it stays ready after a disconnect.

Acks. When global allows it (the welcome's ack delay), the ack of a range of one part that
came within that delay of the range before it may be held back for up to the delay, so the
batches that arrive meanwhile are acknowledged with one message (acks are cumulative):
``on_applied`` then returns no ack, ``ack_due`` says when the held one must go and
``take_ack`` hands it over. The first batch after a quiet spell (a single write) and the
last part of a range of several parts (a bulk apply) are acknowledged at once, and so is
everything else,
together with what was held: a snapshot part, a repair, a part that does not end its range, a
batch with rejections (they name changes of the acknowledged batch only), and the batch that
brings the held ones to half of global's window (in batches, or in bytes when global bounds
its window in bytes too).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from kds.errors import FieldViolation, ProtocolError
from kds.model import Key, Kind
from kds.protocol.applier import DecodedBatch
from kds.protocol.limits import check_batch_header, check_heartbeat, check_welcome
from kds.protocol.refusals import Refusals

__all__ = [
    "Ack",
    "Applied",
    "ApplyOutcome",
    "Event",
    "Hello",
    "RawKey",
    "Rejection",
    "State",
    "SyncMode",
    "Welcome",
    "ZoneSession",
]

# Global promises a message at least every heartbeat interval; this many intervals of
# silence mean it is stuck (the TCP link and keepalive pings may look healthy).
SILENT_HEARTBEATS = 3

# The longest this zone holds an ack back, whatever the welcome asks (global allows up to 1s).
MAX_ACK_DELAY_MS = 1_000
# The longest an ack is reported as held (Ack.held_ms): global counts at most its own delay.
MAX_HELD_MS = 60_000


class State(Enum):
    DISCONNECTED = "disconnected"  # no stream: before the first, or after one ended
    AWAITING_WELCOME = "awaiting welcome"  # hello sent
    SYNCING = "syncing"  # welcomed; waiting for global's next message
    APPLYING = "applying"  # a batch is being applied; its result is due


class Event(Enum):
    OPEN = "open"
    WELCOME = "welcome"
    HEARTBEAT = "heartbeat"
    DIGEST_QUERY = "digest query"  # anti-entropy: answered from the zone's tree, no state
    BATCH = "batch"
    APPLIED = "applied"
    TICK = "tick"
    END = "end"
    UNKNOWN = "unknown"  # a message this version does not know: never allowed


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.DISCONNECTED, Event.OPEN): State.AWAITING_WELCOME,
    (State.AWAITING_WELCOME, Event.WELCOME): State.SYNCING,
    (State.AWAITING_WELCOME, Event.END): State.DISCONNECTED,
    (State.SYNCING, Event.HEARTBEAT): State.SYNCING,
    (State.SYNCING, Event.DIGEST_QUERY): State.SYNCING,
    (State.SYNCING, Event.BATCH): State.APPLYING,
    (State.SYNCING, Event.TICK): State.SYNCING,
    (State.SYNCING, Event.END): State.DISCONNECTED,
    (State.APPLYING, Event.APPLIED): State.SYNCING,
    (State.APPLYING, Event.END): State.DISCONNECTED,
}

_FROM_GLOBAL = frozenset(
    {Event.WELCOME, Event.HEARTBEAT, Event.BATCH, Event.DIGEST_QUERY, Event.UNKNOWN}
)


class SyncMode(Enum):
    """How global answered the hello: only the changes after the zone's revision, or all."""

    RESUME = "resume"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class Hello:
    zone: str
    instance_id: str
    software_version: str
    store_id: str  # global store the zone last synced from ("" if never)
    revision: int  # last revision applied from it
    chain: bytes  # global's history chain at that revision, as the zone recorded it
    store_backend: str
    max_message_bytes: int


@dataclass(frozen=True)
class Welcome:
    global_instance_id: str
    global_store_id: str
    head_revision: int
    mode: SyncMode
    heartbeat_interval_ms: int = 0  # 0: global promises no heartbeats
    ack_delay_ms: int = 0  # how long an ack may be held back (0: ack each batch at once)
    max_unacked: int = 0  # global's window: batches it sends before waiting for acks
    max_unacked_bytes: int = 0  # and their encoded bytes (0: global bounds batches only)


@dataclass(frozen=True)
class RawKey:
    """A key as global sent it, for a change this zone could not decode: ``kind`` is the wire
    number (perhaps one this version does not know) and ``type`` what the zone counts it as."""

    kind: int
    mesh: str
    name: str
    type: str


@dataclass(frozen=True)
class Rejection:
    key: Key | RawKey | None  # None: the change named no resource (no operation)
    reason: str


@dataclass(frozen=True)
class Ack:
    seq: int  # acknowledges this batch and every earlier one not acknowledged yet
    applied_revision: int
    rejected: tuple[Rejection, ...] = ()  # changes of batch ``seq`` only
    held_ms: int = 0  # how long the ack was held back after batch ``seq`` was applied


@dataclass(frozen=True)
class Applied:
    """What to do after a batch was applied."""

    ack: Ack | None  # None: held back (``ack_due``, ``take_ack``)
    refresh_conflicts: bool  # conflicts began or ended: re-read them and tell global
    complete: bool  # the batch ended a range or snapshot
    error: str  # "" or what the status should report (new rejections)
    # Rejections of an anti-entropy repair that this zone made before for the same reason
    # (kds.protocol.refusals): the refusal going on, logged quietly, not a new error.
    repeated: frozenset[Key] = frozenset()


class ApplyOutcome(Protocol):
    """The store's result of applying one batch (kds.store's ZoneApplyResult fits)."""

    @property
    def applied_revision(self) -> int: ...
    @property
    def rejected(self) -> Sequence[tuple[Key, str]]: ...
    @property
    def new_conflicts(self) -> Sequence[Key]: ...
    @property
    def resolved_conflicts(self) -> Sequence[Key]: ...


class ZoneSession:
    def __init__(
        self, *, zone: str, instance_id: str, software_version: str, max_message_bytes: int
    ):
        self.zone = zone
        self.instance_id = instance_id
        self.software_version = software_version
        self.max_message_bytes = max_message_bytes
        self.state = State.DISCONNECTED
        # What the zone's status shows (zonecp.status reads these through ZoneSyncStatus).
        self.ready = False
        self.global_instance_id = ""
        self.global_store_id = ""
        self.global_head = 0  # global's revision as last heard
        self.applied_revision = 0
        self.sync_mode = ""  # "resume" or "snapshot": how the last stream started
        self.sync_from_revision = 0
        self.connections = 0  # streams welcomed since start
        self.resumes = 0
        self.snapshots = 0
        self.batches_applied = 0
        self.applied: Counter[str] = Counter()  # resource changes applied, by type
        self.rejected: Counter[str] = Counter()  # resource changes refused, by type
        self.refusals: Refusals[Key] = Refusals()  # what this zone refused lately, and why
        self.silence_limit: float | None = None  # seconds of silence before reconnecting
        self._opened_at_revision = 0
        self._quiet_since = 0.0
        self._batch: DecodedBatch | None = None
        self._undecodable: tuple[Rejection, ...] = ()
        self._ack_delay = 0.0  # seconds an ack may be held (the welcome's)
        self._ack_batch = 1  # held acks sent once this many batches wait (half the window)
        self._held: Ack | None = None  # the ack held back, if any
        self._held_count = 0  # batches it covers
        self._held_bytes = 0  # their encoded size
        self._ack_bytes = 0  # held acks sent once their batches reach this size (0: no bound)
        self._batch_size = 0  # the encoded size of the batch being applied
        self._held_applied_at = 0.0  # when its batch was applied
        self._held_due = 0.0  # when it must be sent: the delay after the first held batch
        self._last_batch_at = -math.inf  # when the previous batch arrived (this stream)
        self._last_final = True  # whether it ended its range
        # The batch being applied is a range of one part that came within the delay of the
        # range before it (its ack may be held).
        self._follows = False

    @property
    def connected(self) -> bool:
        return self.state in (State.SYNCING, State.APPLYING)

    def _advance(self, event: Event, what: str = "") -> None:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise ProtocolError(self._refusal(event, what or event.value)) from None

    def _refusal(self, event: Event, what: str) -> str:
        if event in _FROM_GLOBAL and self.state is State.AWAITING_WELCOME:
            return "global did not answer the hello with a welcome"
        if event in _FROM_GLOBAL and self.connected:
            return f"unexpected {what} from global"
        return f"{what} is not allowed while {self.state.value}"

    # ------------------------------------------------------------------ events

    def on_open(self, store_id: str, revision: int, chain: bytes, store_backend: str) -> Hello:
        """A stream opened; the zone's sync state says where it stands. Returns the hello."""
        self._advance(Event.OPEN)
        self._opened_at_revision = revision
        return Hello(
            zone=self.zone,
            instance_id=self.instance_id,
            software_version=self.software_version,
            store_id=store_id,
            revision=revision,
            chain=chain,
            store_backend=store_backend,
            max_message_bytes=self.max_message_bytes,
        )

    def on_welcome(self, w: Welcome, now: float) -> None:
        """Raise ProtocolError for a welcome whose fields break their limits
        (kds.protocol.limits): the zone records the store id and sends it back."""
        self._advance(Event.WELCOME)
        _refuse(
            check_welcome(
                instance_id=w.global_instance_id,
                store_id=w.global_store_id,
                head_revision=w.head_revision,
            )
        )
        self.connections += 1
        self.global_instance_id = w.global_instance_id
        self.global_store_id = w.global_store_id
        self.global_head = w.head_revision
        self.applied_revision = self.sync_from_revision = self._opened_at_revision
        self.sync_mode = w.mode.value
        if w.mode is SyncMode.RESUME:
            self.resumes += 1
        else:
            self.snapshots += 1
        if w.mode is SyncMode.RESUME and self._opened_at_revision >= w.head_revision:
            self.ready = True  # already caught up: nothing to wait for
        hb = w.heartbeat_interval_ms
        self.silence_limit = SILENT_HEARTBEATS * hb / 1000 if hb else None
        self._quiet_since = now
        self._ack_delay = min(w.ack_delay_ms, MAX_ACK_DELAY_MS) / 1000
        self._ack_batch = max(1, w.max_unacked // 2)
        self._ack_bytes = w.max_unacked_bytes // 2
        self._last_batch_at, self._last_final = -math.inf, True
        self._drop_held()

    def on_heartbeat(self, head_revision: int, now: float) -> None:
        self._advance(Event.HEARTBEAT)
        _refuse(check_heartbeat(head_revision))
        self.global_head = head_revision
        self._quiet_since = now

    def on_batch(
        self, batch: DecodedBatch, undecodable: Sequence[Rejection], now: float, size: int = 0
    ) -> None:
        """A batch arrived, decoded (``undecodable``: the changes this version cannot read),
        ``size`` bytes as an encoded Batch message; the caller applies it next and reports
        with on_applied. Raise ProtocolError for a header whose fields break their limits:
        its revision and chain are recorded and sent back in later hellos."""
        self._advance(Event.BATCH)
        _refuse(
            check_batch_header(
                from_revision=batch.from_revision,
                revision=batch.revision,
                head_revision=batch.head_revision,
                chain=batch.chain,
            )
        )
        self._batch = batch
        self._batch_size = size
        self._undecodable = tuple(undecodable)
        self._quiet_since = now
        self._follows = self._last_final and now - self._last_batch_at < self._ack_delay
        self._last_batch_at, self._last_final = now, batch.final

    def on_digest_query(self, now: float) -> None:
        """Global asks to compare hash trees (kds.protocol.anti_entropy): a sign of life."""
        self._advance(Event.DIGEST_QUERY)
        self._quiet_since = now

    @property
    def quiet_since(self) -> float:
        """When global's silence began to count (a ``now`` reading): its last message, or
        the zone's last on_listening."""
        return self._quiet_since

    def on_listening(self, now: float) -> None:
        """The zone waits for global's next message from ``now``. Whatever it did since the
        last one (apply a batch, build its tree to answer a check, wait for a busy CPU) was
        its own time: global's silence counts from here. A zone that took longer than the
        silence limit to answer a check would otherwise find global "silent" the moment it
        listened again, with global's heartbeats still unread, reconnect, and be checked
        again. Not an event of the table: it changes no state."""
        self._quiet_since = max(self._quiet_since, now)

    def on_unknown(self, what: str) -> None:
        """Global sent a message this version does not know: always refused."""
        self._advance(Event.UNKNOWN, what)

    def on_applied(self, result: ApplyOutcome, now: float) -> Applied:
        """The batch was applied (in one store transaction). Returns the ack to send."""
        self._advance(Event.APPLIED)
        batch, undecodable = self._batch, self._undecodable
        assert batch is not None  # the table admits APPLIED only after BATCH
        self._batch, self._undecodable = None, ()
        self.applied_revision = result.applied_revision
        self.global_head = max(self.global_head, batch.head_revision)
        self.batches_applied += 1
        refused = {k for k, _ in result.rejected}
        self.applied.update(
            str(c.key.kind) for c in batch.changes if c.key is not None and c.key not in refused
        )
        refusals = self.refusals
        repeated = frozenset(refusals.repeats(result.rejected)) if batch.repair else frozenset()
        if refusals:
            refusals.forget(
                c.key for c in batch.changes if c.key is not None and c.key not in refused
            )
        refusals.record(result.rejected)
        self.rejected.update(str(k.kind) for k, _ in result.rejected)
        self.rejected.update(_counted_as(r.key) for r in undecodable)
        if batch.final and self.applied_revision >= self.global_head:
            self.ready = True
        rejections = (*(Rejection(k, reason) for k, reason in result.rejected), *undecodable)
        new = len(rejections) - len(repeated)
        # The apply may take long; that is the zone's time, not global's silence.
        self._quiet_since = now
        # The ack names at most MAX_ACK_REJECTIONS of them (the zone logs and counts them
        # all): 100,000 undecodable changes in one 600 KB batch made an ack over 4 MiB, which
        # the zone could not send.
        ack: Ack | None = Ack(batch.seq, result.applied_revision, rejections[:MAX_ACK_REJECTIONS])
        # Only a range of one part that follows another range within the delay is held: the
        # first after a quiet spell (a single write) and the last part of a longer range (a
        # bulk apply), whose end a script may be waiting for, are acknowledged at once, and
        # a flow of writes shares one ack per delay.
        may_hold = (
            self._ack_delay > 0
            and self._follows
            and batch.final
            and not batch.snapshot
            and not batch.repair
            and not rejections
            and self._held_count + 1 < self._ack_batch
            and (not self._ack_bytes or self._held_bytes + self._batch_size < self._ack_bytes)
        )
        if may_hold:
            if self._held is None:
                self._held_due = now + self._ack_delay
            self._held, self._held_applied_at = ack, now
            self._held_count += 1
            self._held_bytes += self._batch_size
            ack = None
        else:
            self._drop_held()  # this ack covers the held ones
        return Applied(
            ack=ack,
            refresh_conflicts=bool(result.new_conflicts or result.resolved_conflicts),
            complete=batch.final,
            error=f"rejected {new} synced resource(s)" if new else "",
            repeated=repeated,
        )

    def ack_due(self) -> float | None:
        """When the held ack must be sent (a ``now`` reading); None: none is held."""
        return self._held_due if self._held is not None else None

    def take_ack(self, now: float) -> Ack | None:
        """The held ack, saying how long it was held, to send now; None if none is held."""
        ack = self._held
        if ack is None:
            return None
        held_ms = min(MAX_HELD_MS, max(0, round((now - self._held_applied_at) * 1000)))
        self._drop_held()
        return Ack(ack.seq, ack.applied_revision, ack.rejected, held_ms)

    def _drop_held(self) -> None:
        self._held, self._held_count, self._held_bytes = None, 0, 0

    def tick(self, now: float) -> bool:
        """True if global has been silent too long: end the stream and dial again."""
        self._advance(Event.TICK)
        return self.silence_limit is not None and now - self._quiet_since >= self.silence_limit

    def on_end(self) -> bool:
        """The stream ended (either side, any reason). Returns whether it had been welcomed.
        Readiness stays: the zone serves its last state while global is away."""
        was_connected = self.connected
        self._advance(Event.END)
        self._batch, self._undecodable = None, ()
        self.silence_limit = None
        self._drop_held()  # the next stream resumes from the store's revision
        return was_connected

    # ------------------------------------------------------------------ queries

    def watchdog_wait(self, now: float) -> float | None:
        """How long the caller may wait for global's next message before it should tick;
        None: wait as long as it takes (no welcome yet, or global promised no heartbeats)."""
        if self.state is not State.SYNCING or self.silence_limit is None:
            return None
        return max(0.0, self._quiet_since + self.silence_limit - now)


# The most rejections one ack names.
MAX_ACK_REJECTIONS = 1000


def _refuse(problem: FieldViolation | None) -> None:
    if problem is not None:
        raise ProtocolError(f"global's {problem.field}: {problem.message}")


_KINDS = frozenset(str(k) for k in Kind)


def _counted_as(key: Key | RawKey | None) -> str:
    """The type a refused change is counted under: its kind if this version knows it, else
    "unknown" (a kind from a newer global, or a change that named nothing). One counter per
    wire kind number let a global sending 300,000 made-up kinds a batch grow the zone by
    25 MB a batch, for good."""
    if isinstance(key, Key):
        return str(key.kind)
    return key.type if key is not None and key.type in _KINDS else "unknown"
