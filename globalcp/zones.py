"""Each zone's sync status on global, kept as the streams run and saved in the store.

The servicer reports what happens on a zone's stream (connected, sent, acknowledged,
rejected, conflicts, errors, disconnected) through a ZoneHandle. Only the stream a handle was
made for may write through it: when a newer stream of the same zone has taken over, writes
from the old one are dropped, so two streams never write status for one zone.

Status lives in memory and is saved to the store (table zone_status) by a background flusher:
at once after a connect, a disconnect or an error, otherwise at most once per flush interval,
all dirty zones in one transaction. A crash loses at most that interval of counter updates;
the connection facts are saved before anything else happens on the stream. After a restart
every zone is Offline until its stream comes back.

What a zone sent is bounded before it is kept (kds.text): an error or disconnect reason at
ERROR_CHARS characters, escaped; the problem a zone reports (why it is failing, e.g. its disk
is full) the same, kept until the zone reports it over and shown while the zone is offline
too; conflicts at the first CONFLICTS_KEPT names plus their count.
A refused stream whose token did not verify is not a zone's: it never reaches this module.

Lag: in revisions, global's head minus the zone's acknowledged revision; in seconds, how long
ago the oldest change the zone has not acknowledged was committed (0 when caught up).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from globalcp.hub import Hub
from kds.clock import rfc3339
from kds.model import Kind
from kds.store import GlobalStore
from kds.text import safe_text

__all__ = [
    "CHECK_KEYS_KEPT",
    "CONFLICTS_KEPT",
    "ERROR_CHARS",
    "ZoneHandle",
    "ZoneState",
    "ZoneStatusView",
    "ZoneTracker",
]

log = structlog.get_logger("globalcp.zones")

KINDS = tuple(str(k) for k in Kind)

# The most characters of an error or disconnect reason kept (and shown) per zone.
ERROR_CHARS = 512
# The conflict names kept per zone; the count says how many the zone reported in all.
CONFLICTS_KEPT = 100
# Differing ranges and repaired keys kept of a zone's last anti-entropy check.
CHECK_KEYS_KEPT = 20


def _per_kind() -> dict[str, int]:
    return dict.fromkeys(KINDS, 0)


@dataclass
class ZoneState:
    """What global knows of one zone (saved as JSON; field names are the storage format)."""

    name: str
    online: bool = False
    stream_id: str = ""
    instance_id: str = ""
    connected_at: float = 0.0
    disconnected_at: float = 0.0
    disconnect_reason: str = ""
    last_message_at: float = 0.0
    last_update_at: float = 0.0  # last acknowledgement of a batch
    zone_version: str = ""
    protocol_version: int = 0
    store_backend: str = ""
    acked_revision: int = 0
    connections: int = 0
    messages_sent: int = 0
    messages_acked: int = 0
    sent: dict[str, int] = field(default_factory=_per_kind)
    acknowledged: dict[str, int] = field(default_factory=_per_kind)
    rejected: dict[str, int] = field(default_factory=_per_kind)
    errors: int = 0
    last_error: str = ""
    last_error_at: float = 0.0
    conflicts: list[str] = field(default_factory=list)  # the first CONFLICTS_KEPT
    conflicts_total: int = 0  # how many the zone reported
    problem: str = ""  # why the zone says it is failing ("": nothing is wrong)
    problem_at: float = 0.0  # when it first reported that problem
    checks: dict[str, int] = field(default_factory=dict)  # anti-entropy checks by result
    repaired: int = 0  # synced resources anti-entropy repaired on the zone
    last_check: dict[str, Any] = field(default_factory=dict)  # the last check (see check_done)
    last_repair: dict[str, Any] = field(default_factory=dict)  # the last check that repaired

    @property
    def conflict_count(self) -> int:
        return max(self.conflicts_total, len(self.conflicts))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, name: str, text: str) -> ZoneState:
        """Tolerant: unknown keys (a newer version's) are ignored, missing ones defaulted."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raw = {}
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in raw.items() if k in known and k != "name"}, name=name)
        for counters in (state.sent, state.acknowledged, state.rejected):
            for kind in KINDS:
                counters.setdefault(kind, 0)
        # Saved by an older version, which kept them as they came.
        state.last_error = safe_text(state.last_error, ERROR_CHARS)
        state.disconnect_reason = safe_text(state.disconnect_reason, ERROR_CHARS)
        state.problem = safe_text(state.problem, ERROR_CHARS)
        state.conflicts = [safe_text(c) for c in state.conflicts[:CONFLICTS_KEPT]]
        if not all(
            isinstance(d, dict) for d in (state.last_check, state.last_repair, state.checks)
        ):
            state.last_check, state.last_repair, state.checks = {}, {}, {}
        return state

    @property
    def total_updates(self) -> int:
        return sum(self.acknowledged.values())

    @property
    def total_errors(self) -> int:
        return self.errors


@dataclass(frozen=True)
class ZoneStatusView:
    """A zone's state with what depends on global's head, as the API and metrics show it."""

    state: ZoneState
    global_revision: int
    lag_seconds: float | None

    @property
    def lag_revisions(self) -> int:
        return max(0, self.global_revision - self.state.acked_revision)

    def summary(self) -> dict[str, Any]:
        s = self.state
        return {
            "name": s.name,
            "status": "Online" if s.online else "Offline",
            "instanceId": s.instance_id,
            "connectedAt": _ts(s.connected_at),
            "disconnectedAt": None if s.online else _ts(s.disconnected_at),
            "disconnectReason": None if s.online else (s.disconnect_reason or None),
            "lastMessageAt": _ts(s.last_message_at),
            "lastUpdateAt": _ts(s.last_update_at),
            "zoneVersion": s.zone_version,
            "protocolVersion": s.protocol_version,
            "storeBackend": s.store_backend,
            "globalRevision": self.global_revision,
            "ackedRevision": s.acked_revision,
            "lagRevisions": self.lag_revisions,
            "lagSeconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "totalUpdates": s.total_updates,
            "totalErrors": s.total_errors,
            "conflictCount": s.conflict_count,
            "problem": ({"message": s.problem, "since": _ts(s.problem_at)} if s.problem else None),
        }

    def overview(self) -> dict[str, Any]:
        s = self.state
        return {
            **self.summary(),
            "connections": s.connections,
            "messagesSent": s.messages_sent,
            "messagesAcknowledged": s.messages_acked,
            "resources": {
                kind: {
                    "sent": s.sent[kind],
                    "acknowledged": s.acknowledged[kind],
                    "rejected": s.rejected[kind],
                }
                for kind in KINDS
            },
            "conflicts": list(s.conflicts),
            "antiEntropy": {
                "checks": dict(s.checks),
                "repaired": s.repaired,
                "lastCheck": _stamped(s.last_check),
                # Kept past the check that verifies it (which usually follows at once).
                "lastRepair": _stamped(s.last_repair),
            },
            "lastError": (
                {"message": s.last_error, "time": _ts(s.last_error_at)} if s.last_error else None
            ),
        }


def _ts(t: float) -> str | None:
    return rfc3339(dt.datetime.fromtimestamp(t, dt.UTC)) if t else None


def _stamped(check: dict[str, Any]) -> dict[str, Any] | None:
    return {**check, "at": _ts(check.get("at", 0.0))} if check else None


class ZoneHandle:
    """One stream's pen for its zone's status; silent once another stream took the zone over."""

    def __init__(self, tracker: ZoneTracker, state: ZoneState, stream_id: str):
        self._tracker = tracker
        self._state = state
        self.stream_id = stream_id
        # Kinds sent in each unacknowledged batch, in send order (acks come in order).
        self._in_flight: dict[int, Counter[str]] = {}

    @property
    def conflict_count(self) -> int:
        return self._state.conflict_count

    @property
    def current(self) -> bool:
        return self._state.stream_id == self.stream_id and self._state.online

    def message_received(self) -> None:
        if self.current:
            self._state.last_message_at = self._tracker.clock()
            self._tracker.mark(self._state)

    def batch_sent(self, seq: int, kinds: Iterable[Kind]) -> None:
        if not self.current:
            return
        counts = Counter(str(k) for k in kinds)
        self._in_flight[seq] = counts
        s = self._state
        s.messages_sent += 1
        for kind, n in counts.items():
            s.sent[kind] = s.sent.get(kind, 0) + n
        self._tracker.mark(s)

    def batch_acked(self, seq: int, revision: int | None, committed_at: float | None) -> None:
        """Batch ``seq`` was acknowledged; ``revision`` is set when it completed a range or
        snapshot, and ``committed_at`` when that revision was committed while this stream
        was up (its propagation latency is then observed)."""
        counts = self._in_flight.pop(seq, Counter())
        if not self.current:
            return
        s = self._state
        now = self._tracker.clock()
        s.last_update_at = now
        s.messages_acked += 1
        for kind, n in counts.items():
            s.acknowledged[kind] = s.acknowledged.get(kind, 0) + n
        if revision is not None:
            s.acked_revision = revision
            if committed_at and committed_at >= s.connected_at:
                self._tracker.observe_latency(s.name, max(0.0, now - committed_at))
        self._tracker.mark(s)

    def rejected(self, kind: Kind | None, key: str, reason: str) -> None:
        if not self.current:
            return
        s = self._state
        if kind is not None:
            s.rejected[str(kind)] = s.rejected.get(str(kind), 0) + 1
        self._tracker.record_error(s, f"zone rejected {key}: {reason}")

    def rejections(self, items: list[tuple[Kind, str, str]]) -> None:
        """The zone rejected these (kind, key label, reason) in one ack: each is counted, the
        first is the last error, which says how many there were."""
        if not self.current or not items:
            return
        s = self._state
        for kind, _, _ in items:
            s.rejected[str(kind)] = s.rejected.get(str(kind), 0) + 1
        _, key, reason = items[0]
        more = f" (and {len(items) - 1} more in the same batch)" if len(items) > 1 else ""
        self._tracker.record_error(s, f"zone rejected {key}: {reason}{more}", len(items))

    def conflicts(self, names: list[str], total: int | None = None) -> bool:
        """The zone's conflicts are now ``names`` (the first of ``total``; at most
        CONFLICTS_KEPT are kept); True if that changed what global holds. Saved with the next
        flush, not at once: a zone reporting in a loop costs one write per flush interval."""
        kept = names[:CONFLICTS_KEPT]
        count = len(names) if total is None else total
        s = self._state
        if not self.current or (kept == s.conflicts and count == s.conflict_count):
            return False
        s.conflicts = kept
        s.conflicts_total = count
        self._tracker.mark(s)
        return True

    @property
    def problem_text(self) -> str:
        return self._state.problem

    def problem(self, text: str) -> bool:
        """The zone reports ``text`` as its problem ("" for none); True if that changed what
        global holds. A new problem is also the zone's last error (counted once, however
        often the zone repeats it); saved with the next flush, so a zone flapping its
        problem costs one write per flush interval."""
        shown = safe_text(text, ERROR_CHARS)
        s = self._state
        if not self.current or shown == s.problem:
            return False
        s.problem = shown
        s.problem_at = self._tracker.clock() if shown else 0.0
        if shown:
            s.errors += 1
            s.last_error = f"zone reports: {shown}"
            s.last_error_at = s.problem_at
        self._tracker.mark(s)
        return True

    def check_done(self, check: dict[str, Any]) -> None:
        """An anti-entropy check ended (globalcp.sending: result, revision, rounds, the
        ranges that differed, the keys repaired and their count, ranges deferred)."""
        if not self.current:
            return
        s = self._state
        s.checks[check["result"]] = s.checks.get(check["result"], 0) + 1
        s.repaired += check["repairedCount"]
        s.last_check = {**check, "at": self._tracker.clock()}
        if check["repairedCount"]:
            s.last_repair = s.last_check
        self._tracker.mark(s)

    def error(self, message: str) -> None:
        if self.current:
            self._tracker.record_error(self._state, message)

    def disconnected(self, reason: str) -> None:
        if not self.current:
            return
        s = self._state
        s.online = False
        s.disconnected_at = self._tracker.clock()
        s.disconnect_reason = safe_text(reason, ERROR_CHARS)
        self._tracker.mark(s, urgent=True)


class ZoneTracker:
    def __init__(
        self,
        store: GlobalStore,
        hub: Hub,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 1.0,
        observe_latency: Callable[[str, float], None] | None = None,
    ):
        self.store = store
        self.hub = hub
        self.clock = clock
        self.flush_interval = flush_interval
        self._observe = observe_latency
        self.zones: dict[str, ZoneState] = {}
        self._dirty: set[str] = set()
        self._urgent = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Read every zone's saved status. None is connected to a global that just started:
        a zone saved as Online was cut off when global stopped; it is Offline since its last
        message (or since now, if it never sent one)."""
        saved = await self.store.zone_statuses()
        for name, text in saved.items():
            state = ZoneState.from_json(name, text)
            if state.online:
                state.online = False
                state.disconnected_at = state.last_message_at or self.clock()
                state.disconnect_reason = "global stopped"
                self.mark(state)
            self.zones[name] = state

    async def run_flusher(self) -> None:
        """Save dirty zones: at once when something urgent happened, else every interval."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), self.flush_interval)
            self._urgent.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._dirty:
            return
        batch = {name: self.zones[name].to_json() for name in self._dirty if name in self.zones}
        self._dirty.clear()
        try:
            await self.store.save_zone_statuses(batch)
        except Exception as e:  # status must never take the sync down; retry next round
            self._dirty.update(batch)
            log.error("cannot save zone status", error_type=type(e).__name__, error=str(e))

    # ------------------------------------------------------------------ updates

    def mark(self, state: ZoneState, *, urgent: bool = False) -> None:
        self._dirty.add(state.name)
        if urgent:
            self._urgent.set()

    def connected(
        self,
        name: str,
        *,
        stream_id: str,
        instance_id: str,
        zone_version: str,
        protocol_version: int,
        store_backend: str,
        resumed_revision: int | None,
    ) -> ZoneHandle:
        """A zone's stream was accepted: it is Online and this stream now writes its status.
        ``resumed_revision`` is where the zone resumes from (None for a snapshot, which
        keeps the last acknowledged revision until the snapshot is acknowledged)."""
        state = self.zones.get(name) or ZoneState(name)
        self.zones[name] = state
        now = self.clock()
        state.online = True
        state.stream_id = stream_id
        state.instance_id = safe_text(instance_id)
        state.connected_at = state.last_message_at = now
        state.disconnected_at = 0.0
        state.disconnect_reason = ""
        state.zone_version = safe_text(zone_version)
        state.protocol_version = protocol_version
        state.store_backend = safe_text(store_backend)
        state.connections += 1
        if resumed_revision is not None:
            state.acked_revision = resumed_revision
        self.mark(state, urgent=True)
        return ZoneHandle(self, state, stream_id)

    def refused(self, name: str, message: str) -> None:
        """A stream claiming ``name`` was refused: the reason becomes the zone's last error
        (its other status, and a live stream's, is left alone)."""
        state = self.zones.get(name) or ZoneState(name)
        self.zones[name] = state
        self.record_error(state, message)

    def record_error(self, state: ZoneState, message: str, count: int = 1) -> None:
        """``count`` errors happened; ``message`` (bounded, escaped) describes the last."""
        state.errors += count
        state.last_error = safe_text(message, ERROR_CHARS)
        state.last_error_at = self.clock()
        self.mark(state, urgent=True)

    def observe_latency(self, zone: str, seconds: float) -> None:
        if self._observe is not None:
            self._observe(zone, seconds)

    # ------------------------------------------------------------------ views

    async def view(self, name: str) -> ZoneStatusView | None:
        state = self.zones.get(name)
        return None if state is None else await self._view(state)

    async def views(self) -> list[ZoneStatusView]:
        return [await self._view(self.zones[name]) for name in sorted(self.zones)]

    async def _view(self, state: ZoneState) -> ZoneStatusView:
        head = self.hub.head
        return ZoneStatusView(state, head, await self._lag_seconds(state.acked_revision, head))

    async def _lag_seconds(self, acked: int, head: int) -> float | None:
        if acked >= head:
            return 0.0
        oldest = max(acked, 0) + 1
        committed = self.hub.commit_time(oldest)
        if committed is None:
            committed = await self.store.commit_time(oldest)
        return None if committed is None else max(0.0, self.clock() - committed)
