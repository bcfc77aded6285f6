"""Each zone's sync status on global, kept as the streams run and saved in the store.

The servicer reports what happens on a zone's stream (connected, sent, acknowledged,
rejected, conflicts, errors, disconnected) through a ZoneHandle. Only the stream a handle was
made for may write through it: when a newer stream of the same zone has taken over, writes
from the old one are dropped, so two streams never write status for one zone.

Status lives in memory and is saved to the store (table zone_status) by a background flusher:
at once after a connect, a disconnect or an error, otherwise at most once per flush interval,
all dirty zones in one transaction. A crash loses at most that interval of counter updates,
and a connect, disconnect or error of the last milliseconds (the flusher is woken for it, not
waited for). After a restart every zone is Offline until its stream comes back.

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
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from globalcp.history import SAMPLE_INTERVAL, ZoneHistory
from globalcp.hub import Hub
from globalcp.zone_claims import ZoneClaims
from globalcp.zone_state import (
    CHECK_KEYS_KEPT,
    CONFLICTS_KEPT,
    ERROR_CHARS,
    KINDS,
    REFUSED_SHOWN,
    ZoneState,
    ZoneStatusView,
)
from kds.errors import StoreError
from kds.model import Key, Kind
from kds.protocol.refusals import Refusals
from kds.store import GlobalStore
from kds.text import safe_text

__all__ = [
    "CHECK_KEYS_KEPT",
    "CONFLICTS_KEPT",
    "ERROR_CHARS",
    "KINDS",
    "ZoneHandle",
    "ZoneState",
    "ZoneStatusView",
    "ZoneTracker",
]

log = structlog.get_logger("globalcp.zones")


class ZoneHandle:
    """One stream's pen for its zone's status; silent once another stream took the zone over."""

    def __init__(self, tracker: ZoneTracker, state: ZoneState, stream_id: str):
        self._tracker = tracker
        self._state = state
        self.stream_id = stream_id
        # Kinds sent in each unacknowledged batch, in send order (acks come in order).
        self._in_flight: dict[int, Mapping[str, int]] = {}

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

    def read_slowed(self, seconds: float) -> None:
        """Global waits ``seconds`` before it reads the zone's next message (its budget)."""
        if self.current:
            self._state.read_slowed_s += seconds
            self._tracker.mark(self._state)

    def batch_sent(self, seq: int, counts: Mapping[str, int]) -> None:
        """Batch ``seq`` went out with ``counts`` changes of each kind (kept, never changed:
        the mapping may be shared by every stream sending the same part)."""
        if not self.current:
            return
        self._in_flight[seq] = counts
        s = self._state
        s.messages_sent += 1
        for kind, n in counts.items():
            s.sent[kind] = s.sent.get(kind, 0) + n
        self._tracker.mark(s)

    def batch_acked(
        self, seq: int, revision: int | None, committed_at: float | None, held: float = 0.0
    ) -> None:
        """Batch ``seq`` was acknowledged; ``revision`` is set when it completed a range or
        snapshot, and ``committed_at`` when that revision was committed while this stream
        was up (its propagation latency is then observed, less ``held``: the seconds the zone
        held its ack back after applying it)."""
        self.batches_acked((seq,), revision, committed_at, held)

    def batches_acked(
        self,
        seqs: Sequence[int],
        revision: int | None,
        committed_at: float | None,
        held: float = 0.0,
    ) -> None:
        """One ack covered batches ``seqs`` (oldest first): as batch_acked for each, with
        ``revision`` the last revision they completed, and ``committed_at`` and ``held``
        those of the last batch, the one the ack named (one clock reading and one mark for
        them all: a zone's ack may cover dozens of single writes)."""
        pop = self._in_flight.pop
        counted = [pop(seq, None) for seq in seqs]
        if not self.current:
            return
        s = self._state
        now = self._tracker.clock()
        s.last_update_at = now
        s.messages_acked += len(seqs)
        acknowledged = s.acknowledged
        for counts in counted:
            if counts:
                for kind, n in counts.items():
                    acknowledged[kind] = acknowledged.get(kind, 0) + n
        if revision is not None:
            s.acked_revision = revision
            if committed_at and committed_at >= s.connected_at:
                self._tracker.observe_latency(s.name, max(0.0, now - committed_at - held))
        self._tracker.mark(s)

    def rejected(self, kind: Kind | None, key: str, reason: str) -> None:
        if not self.current:
            return
        s = self._state
        if kind is not None:
            s.rejected[str(kind)] = s.rejected.get(str(kind), 0) + 1
        self._tracker.record_error(s, f"zone rejected {key}: {reason}")

    def refusals(self, create: bool = True) -> Refusals[Key] | None:
        """What the zone refused lately, and why (kept while global runs, across streams);
        None if it refused nothing and ``create`` is false."""
        return self._tracker.refusals_of(self._state.name, create)

    def refusals_changed(self) -> None:
        """Keep the newest refusals in the zone's saved status (ZoneState.refused)."""
        refusals = self._tracker.refusals_of(self._state.name, create=False)
        latest = refusals.latest(REFUSED_SHOWN) if refusals else []
        if self._state.keep_refusals(latest, len(refusals) if refusals else 0):
            self._tracker.mark(self._state)

    def rejections(self, items: list[tuple[Kind, str, str]], repeated: bool = False) -> None:
        """The zone rejected these (kind, key label, reason) in one ack: each is counted, the
        first is the last error, which says how many there were; ``repeated``: refused again
        as before (kds.protocol.refusals), counted but no new error."""
        if not self.current or not items:
            return
        s = self._state
        for kind, _, _ in items:
            s.rejected[str(kind)] = s.rejected.get(str(kind), 0) + 1
        if repeated:
            self._tracker.mark(s)
            return
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
        self._tracker.history.conflicts_changed(s.name, s.conflicts, kept, count)
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
        self._tracker.history.event(s.name, "disconnected", reason=s.disconnect_reason)
        self._tracker.sample_soon(s.name)
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
        instance_id: str = "",
        lease: float | None = None,
    ):
        self.store = store
        self.instance_id = instance_id  # this global's, recorded with each accepted stream
        self.history = ZoneHistory(store, clock)
        self.sample_interval = SAMPLE_INTERVAL
        self._sample_due: set[str] = set()  # zones to sample at the next flush
        self._sampled_at = 0.0
        self.hub = hub
        self.clock = clock
        self.flush_interval = flush_interval
        self._observe = observe_latency
        self.zones: dict[str, ZoneState] = {}
        # What each zone refused lately (only zones that refused something; not saved: a
        # restarted global reports a refusal going on once more).
        self._refusals: dict[str, Refusals[Key]] = {}
        self._dirty: set[str] = set()
        self._urgent = asyncio.Event()
        # Several global instances on one store: their claims on zones' streams (``lease``:
        # how long one holds unless renewed); None when this instance is the only one.
        self.claims = ZoneClaims(instance_id, lease, clock) if lease is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Read every zone's saved status. None is connected to a global that just started:
        a zone saved as Online was cut off when global stopped; it is Offline since its last
        message (or since now, if it never sent one)."""
        saved = await self.store.zone_statuses()
        for name, text in saved.items():
            state = ZoneState.from_json(name, text)
            if self.claims is not None and self.claims.held_elsewhere(state):
                self.zones[name] = state  # another live instance's: left as it saved it
                continue
            if state.online:
                state.online = False
                state.disconnected_at = state.last_message_at or self.clock()
                state.disconnect_reason = "global stopped"
                # A global that crashed had no time to record the disconnect itself.
                self.history.event(
                    name, "disconnected", at=state.disconnected_at, reason="global stopped"
                )
                self.mark(state)
            self.zones[name] = state

    async def run_flusher(self) -> None:
        """Save dirty zones: at once when something urgent happened, else every interval.
        A store that fails (PostgreSQL away) is tried again the next round: status must never
        stop the daemon."""
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._urgent.wait()
            self._urgent.clear()
            for state in self.claims.renew(self.zones.values()) if self.claims else []:
                self.mark(state)
            try:
                await self.flush()
            except StoreError as e:
                if not failing:  # once per outage
                    log.warning("cannot read or save zone status: retrying", error=str(e))
                failing = True
            else:
                failing = False

    async def flush(self) -> None:
        try:
            await self._sample_lag()
        except Exception as e:  # a lag sample is not worth the flusher: next round
            log.error("cannot sample zone lag", error_type=type(e).__name__, error=str(e))
        await self.history.flush()
        if not self._dirty:
            return
        batch = {name: self.zones[name].to_json() for name in self._dirty if name in self.zones}
        claimed = {n: s.lease_until for n in batch if self._is_mine(s := self.zones[n])}
        self._dirty.clear()
        try:
            await self.store.save_zone_statuses(batch)
        except Exception as e:  # status must never take the sync down; retry next round
            self._dirty.update(batch)
            log.error("cannot save zone status", error_type=type(e).__name__, error=str(e))
            return
        if self.claims is not None:
            self.claims.saved(claimed)

    def _is_mine(self, state: ZoneState) -> bool:
        return self.claims is not None and self.claims.mine(state)

    async def run_lease_watch(self, end_stream: Callable[[str, str], bool]) -> None:
        """Several instances on one store: end the stream of each zone whose claim this
        instance could not renew in the store before it lapses (``end_stream(zone,
        reason)``), so the zone reconnects to an instance that can. Apart from the flusher,
        whose save may wait on an unreachable store longer than a lease."""
        assert self.claims is not None
        while True:
            await asyncio.sleep(min(0.5, self.claims.lease / 20))
            for name in self.claims.lapsing(self.zones):
                reason = (
                    f"global instance {self.instance_id} cannot renew its claim on this "
                    "zone's stream in the shared store (unreachable from it) before the claim "
                    "lapses: reconnect to another global instance"
                )
                if end_stream(name, reason):
                    log.warning("cannot renew the claim on a zone's stream: ending it", zone=name)

    def sample_soon(self, name: str) -> None:
        self._sample_due.add(name)

    async def _sample_lag(self) -> None:
        """Lag samples for the history: every zone online or offline for under an hour each
        sample interval, and the zones that asked (connected or disconnected) at once."""
        now = self.clock()
        due, self._sample_due = self._sample_due, set()
        if now - self._sampled_at >= self.sample_interval:
            self._sampled_at = now
            due |= {n for n, s in self.zones.items() if s.online or now - s.disconnected_at < 3600}
        for name in sorted(due):
            view = await self.view(name)
            if view is not None:
                self.history.lag_sample(name, view.lag_revisions, view.lag_seconds)

    # ------------------------------------------------------------------ updates

    def refusals_of(self, zone: str, create: bool = True) -> Refusals[Key] | None:
        refusals = self._refusals.get(zone)
        state = self.zones.get(zone)
        if refusals is None and (create or (state is not None and state.refused)):
            # Taken on from the saved status (another instance held the stream, or this one
            # before a restart), so the zone applying a change ends its saved refusal too.
            refusals = self._refusals[zone] = Refusals()
            if state is not None:
                refusals.record(state.refused_keys())
        return refusals

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
        state.first_seen_at = state.first_seen_at or now
        state.sync_mode = "snapshot" if resumed_revision is None else "resume"
        state.global_instance = self.instance_id
        if self.claims is not None:
            self.claims.claim(state, name)
        if resumed_revision is not None:
            state.acked_revision = resumed_revision
        self.history.event(
            name,
            "connected",
            instance=state.instance_id,
            version=state.zone_version,
            mode=state.sync_mode,
        )
        self.sample_soon(name)
        self.mark(state, urgent=True)
        return ZoneHandle(self, state, stream_id)

    def refused(self, name: str, message: str, *, quiet: bool = False) -> None:
        """A stream claiming ``name`` was refused: the reason becomes the zone's last error
        (its other status, and a live stream's, is left alone); ``quiet``: one more like the
        last recorded, only counted (saved with the next flush)."""
        state = self.zones.get(name) or ZoneState(name)
        self.zones[name] = state
        if quiet:
            state.errors += 1
            self.mark(state)
            return
        self.record_error(state, message)
        self.history.event(name, "refused", reason=state.last_error)

    def token_refused(self, name: str, code: str, reason: str, more: int) -> None:
        """A token for ``name`` was refused (``more``: refusals since the last one recorded).
        Only a zone global knows gets the entry: the name came from whoever sent the token."""
        if name in self.zones:
            self.history.token_refused(name, code, safe_text(reason, ERROR_CHARS), more)

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

    async def refresh(self) -> None:
        """With several instances on one store: the others' zones, as the store holds them."""
        if self.claims is not None:
            await self.claims.refresh(self.store, self.zones, self._dirty, ZoneState.from_json)

    async def view(self, name: str) -> ZoneStatusView | None:
        await self.refresh()
        state = self.zones.get(name)
        return None if state is None else await self._view(state)

    async def views(self) -> list[ZoneStatusView]:
        await self.refresh()
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
