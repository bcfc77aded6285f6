"""Each zone's status history on global: what happened to it, and its lag over time.

Two series per zone, kept in the store (kds.store: ``add_zone_events`` / ``zone_events``) so
they survive a restart, each bounded to its newest KEEP rows:

- ``event``: the zone connected (its instance, version, and whether it resumed or took a
  snapshot), disconnected (why), was refused (why: a second instance, an old protocol, a
  message limit too small), or its conflicts changed (the names that started and ended: up
  to NAMES_PER_EVENT of each, and NAME_CHARS characters, with their counts).
- ``refusal``: tokens refused for a zone global knows, at most one entry per zone every
  10 s (the servicer's log throttle) saying how many it stands for. Whoever sent such a token
  holds none for the zone, so these have a series of their own: a flood of them never
  pushes the zone's own events out.
- ``lag``: samples of its lag in revisions and seconds, taken every SAMPLE_INTERVAL for each
  zone online or offline for less than an hour, and when it connects or disconnects.

In total the history is bounded too (``prune``, at most once per PRUNE_EVERY): a zone with
no entry for RETAIN_S (removed, renamed, or gone for that long: one online, or offline for
less than an hour, has a lag sample every SAMPLE_INTERVAL) loses its history, and beyond
TOTAL_KEEP entries in all the oldest go, whichever zone they belong to.

Every string in an event either came from the zone and was bounded and escaped by
globalcp.zones (kds.text.safe_text) or is global's own; each event's JSON is at most
EVENT_BYTES. Events are written with the zone status flush (at most once a second, in one
transaction); until then, and while the store cannot be written, they wait in memory (at
most PENDING_MAX; the oldest are dropped beyond it and counted). One zone has at most
PENDING_PER_ZONE of them waiting (its newer ones are dropped and counted), so a zone
reconnecting as fast as it can never pushes another zone's events out before they are saved.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from kds.clock import rfc3339
from kds.store import GlobalStore, ZoneEvent

__all__ = [
    "EVENT",
    "EVENT_BYTES",
    "KEEP",
    "LAG",
    "NAMES_PER_EVENT",
    "PRUNE_EVERY",
    "REFUSAL",
    "RETAIN_S",
    "SAMPLE_INTERVAL",
    "TOTAL_KEEP",
    "ZoneHistory",
]

log = structlog.get_logger("globalcp.history")

EVENT = "event"
REFUSAL = "refusal"
LAG = "lag"
# Rows kept per zone and series: 1,000 events, and 1,000 lag samples (over eight hours at
# one per SAMPLE_INTERVAL).
KEEP = 1000
SAMPLE_INTERVAL = 30.0
# The largest event, as JSON; the conflict names one event lists.
EVENT_BYTES = 4096
NAMES_PER_EVENT = 10
NAME_CHARS = 1200  # of the names one list of an event holds
PENDING_MAX = 10_000
PENDING_PER_ZONE = 500
# The bound in total: a zone not seen for 30 days loses its history; at most 500,000 entries
# in all (250 zones' full series; at EVENT_BYTES each, 2 GB at worst, typically ~100 MB).
RETAIN_S = 30 * 86_400.0
TOTAL_KEEP = 500_000
PRUNE_EVERY = 3600.0


def _ts(t: float) -> str:
    return rfc3339(dt.datetime.fromtimestamp(t, dt.UTC))


class ZoneHistory:
    def __init__(self, store: GlobalStore, clock: Callable[[], float], keep: int = KEEP):
        self.store = store
        self.clock = clock
        self.keep = keep
        self._pending: list[ZoneEvent] = []
        self._waiting: Counter[str] = Counter()  # events in _pending, by zone
        self._inflight: list[ZoneEvent] = []  # being written by flush: in neither place yet
        self.dropped = 0  # events lost because the store could not take them in time
        self._pruned_at: float | None = None  # when prune last ran (None: not yet)

    def _add(self, zone: str, kind: str, data: dict[str, Any], at: float | None = None) -> None:
        text = json.dumps(data, sort_keys=True)
        if len(text.encode()) > EVENT_BYTES:  # cannot happen with bounded fields; never store more
            text = json.dumps({"type": data.get("type", "unknown"), "truncated": True})
        if self._waiting[zone] >= PENDING_PER_ZONE:
            self.dropped += 1
            return
        self._pending.append(ZoneEvent(zone, kind, self.clock() if at is None else at, text))
        self._waiting[zone] += 1
        if len(self._pending) > PENDING_MAX:
            self._waiting[self._pending.pop(0).zone] -= 1
            self.dropped += 1

    def event(self, zone: str, type_: str, at: float | None = None, **fields: Any) -> None:
        """Record that ``type_`` happened to ``zone`` (now, or ``at``); ``fields`` are
        bounded by the caller."""
        self._add(zone, EVENT, {"type": type_, **fields}, at)

    def token_refused(self, zone: str, code: str, reason: str, more: int) -> None:
        self._add(
            zone, REFUSAL, {"type": "token-refused", "code": code, "reason": reason, "more": more}
        )

    def conflicts_changed(self, zone: str, before: list[str], after: list[str], count: int) -> None:
        old, new = set(before), set(after)
        started = [n for n in after if n not in old]
        ended = [n for n in before if n not in new]
        if not started and not ended:
            return
        self.event(
            zone,
            "conflicts",
            started=_first(started),
            startedCount=len(started),
            ended=_first(ended),
            endedCount=len(ended),
            count=count,
        )

    def lag_sample(self, zone: str, revisions: int, seconds: float | None) -> None:
        self._add(
            zone,
            LAG,
            {"revisions": revisions, "seconds": None if seconds is None else round(seconds, 3)},
        )

    async def flush(self) -> None:
        await self.prune()
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._waiting.clear()
        self._inflight = batch
        try:
            await self.store.add_zone_events(batch, self.keep)
        except Exception as e:  # history must never take the sync down; retry next round
            self._pending[:0] = batch
            overflow = len(self._pending) - PENDING_MAX
            if overflow > 0:
                del self._pending[:overflow]
                self.dropped += overflow
            self._waiting = Counter(ev.zone for ev in self._pending)
            log.error("cannot save zone history", error_type=type(e).__name__, error=str(e))
        finally:
            self._inflight = []

    async def prune(self) -> None:
        """Bound the history in total (module doc), at most once per PRUNE_EVERY; the first
        flush after a start prunes."""
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            dropped = await self.store.prune_zone_events(now - RETAIN_S, TOTAL_KEEP)
        except Exception as e:  # history must never take the sync down; retry next time
            log.error("cannot bound zone history", error_type=type(e).__name__, error=str(e))
            return
        if dropped:
            log.info("old zone history dropped", entries=dropped)

    async def read(self, zone: str, limit: int, lag_since: float) -> dict[str, Any]:
        """The zone's newest ``limit`` events and its lag samples since ``lag_since``, oldest
        first, as the API serves them; events not yet saved included, those a flush is
        writing too. Taken before the store is read, so an event the flush commits meanwhile
        is found once (read from both, kept once) rather than in neither."""
        unsaved = [e for e in [*self._inflight, *self._pending] if e.zone == zone]
        events: list[ZoneEvent] = []
        for kind in (EVENT, REFUSAL):
            events += await self.store.zone_events(zone, kind, 0.0, limit)
            events += [e for e in unsaved if e.kind == kind]
        once = list(dict.fromkeys(events))  # in order: events at one time keep theirs
        newest = sorted(once, key=lambda e: e.time)[-limit:] if limit else []
        samples = await self.store.zone_events(zone, LAG, lag_since, self.keep)
        samples += [e for e in unsaved if e.kind == LAG and e.time >= lag_since]
        lag = sorted(dict.fromkeys(samples), key=lambda e: e.time)
        return {"events": _items(newest), "lag": _items(lag)}


def _first(names: list[str]) -> list[str]:
    """The first NAMES_PER_EVENT names, fewer when they would exceed NAME_CHARS together
    (a key's name may be 253 characters), so an event never outgrows EVENT_BYTES."""
    out: list[str] = []
    used = 0
    for name in names[:NAMES_PER_EVENT]:
        used += len(name)
        if used > NAME_CHARS:
            break
        out.append(name)
    return out


def _items(rows: list[ZoneEvent]) -> list[dict[str, Any]]:
    out = []
    for e in rows:
        try:
            data = json.loads(e.data)
        except ValueError:
            continue  # a damaged row: the others are still served
        if isinstance(data, dict):
            out.append({**data, "time": _ts(e.time)})
    return out
