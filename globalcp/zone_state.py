"""A zone's status on global as it is kept (ZoneState, saved as JSON) and shown
(ZoneStatusView: the API's summary and overview). globalcp.zones keeps it up to date.

What a zone sent is bounded before it is kept (kds.text): an error, disconnect reason or
reported problem at ERROR_CHARS characters, escaped; conflicts at the first CONFLICTS_KEPT
names plus their count; a last anti-entropy check's ranges and keys at CHECK_KEYS_KEPT.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from kds.clock import rfc3339
from kds.model import Key, Kind
from kds.text import safe_text

__all__ = [
    "CHECK_KEYS_KEPT",
    "CONFLICTS_KEPT",
    "ERROR_CHARS",
    "KINDS",
    "ZoneState",
    "ZoneStatusView",
]

KINDS = tuple(str(k) for k in Kind)

# The most characters of an error or disconnect reason kept (and shown) per zone.
ERROR_CHARS = 512
# The conflict names kept per zone; the count says how many the zone reported in all.
CONFLICTS_KEPT = 100
# Differing ranges and repaired keys kept of a zone's last anti-entropy check.
CHECK_KEYS_KEPT = 20
# The refusals going on shown per zone (the newest); the count says how many in all.
REFUSED_SHOWN = 20


def key_label(kind: str, mesh: str, name: str) -> str:
    """How the API names a zone's resource in conflicts and refusals: 'Secret:mesh/name',
    'GlobalSecret:name'."""
    return f"{kind}:{mesh}/{name}" if mesh else f"{kind}:{name}"


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
    first_seen_at: float = 0.0  # the first accepted stream (0: saved by an older version)
    sync_mode: str = ""  # how the last stream started: "snapshot" or "resume"
    global_instance: str = ""  # the global instance that accepted the last stream
    # Several global instances on one store: until when the holder's claim on the zone's
    # stream holds unless renewed (wall-clock seconds; 0: not shared).
    lease_until: float = 0.0
    problem: str = ""  # why the zone says it is failing ("": nothing is wrong)
    problem_at: float = 0.0  # when it first reported that problem
    checks: dict[str, int] = field(default_factory=dict)  # anti-entropy checks by result
    repaired: int = 0  # synced resources anti-entropy repaired on the zone
    # Seconds global waited before reading the zone's next message, the zone having sent
    # more than its stream's read budget (kds.protocol.read_budget).
    read_slowed_s: float = 0.0
    last_check: dict[str, Any] = field(default_factory=dict)  # the last check (see check_done)
    last_repair: dict[str, Any] = field(default_factory=dict)  # the last check that repaired
    # The changes the zone refuses now, as the instance holding its stream last heard: the
    # newest REFUSED_SHOWN as [kind, mesh, name, reason], and how many in all. Saved, so
    # another instance on the same store shows them, and takes them on with the stream.
    refused: list[list[str]] = field(default_factory=list)
    refused_count: int = 0

    @property
    def conflict_count(self) -> int:
        return max(self.conflicts_total, len(self.conflicts))

    def keep_refusals(self, latest: list[tuple[Key, str]], count: int) -> bool:
        """Keep the newest refusals (each key and reason, newest last) and their count;
        whether that changed what is kept."""
        kept = [[str(k.kind), k.mesh, k.name, reason] for k, reason in latest[-REFUSED_SHOWN:]]
        if kept == self.refused and count == self.refused_count:
            return False
        self.refused, self.refused_count = kept, count
        return True

    def refused_keys(self) -> list[tuple[Key, str]]:
        """The refusals kept, as keys and reasons (newest last)."""
        return [(Key(Kind(kind), mesh, name), reason) for kind, mesh, name, reason in self.refused]

    def refused_labels(self) -> tuple[tuple[str, str], ...]:
        return tuple((key_label(kind, mesh, name), r) for kind, mesh, name, r in self.refused)

    def to_json(self) -> str:
        # Field by field, not dataclasses.asdict: asdict deep-copies every dict and list
        # first, which json.dumps does not need (every 100 zones taking writes cost global
        # about 6% of its time in the flush that saves them).
        return json.dumps({f: getattr(self, f) for f in _FIELDS}, sort_keys=True)

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
        if not _refusals_valid(state.refused, state.refused_count):
            state.refused, state.refused_count = [], 0
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
    def refused_count(self) -> int:
        """How many changes the zone refuses now, as the instance holding its stream saved."""
        return self.state.refused_count

    @property
    def lag_revisions(self) -> int:
        return max(0, self.global_revision - self.state.acked_revision)

    def summary(self) -> dict[str, Any]:
        s = self.state
        return {
            "name": s.name,
            "status": "Online" if s.online else "Offline",
            "instanceId": s.instance_id,
            "globalInstance": s.global_instance or None,
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
            "refusedCount": self.refused_count,
            "problem": ({"message": s.problem, "since": _ts(s.problem_at)} if s.problem else None),
        }

    def overview(self) -> dict[str, Any]:
        s = self.state
        return {
            **self.summary(),
            "lastSyncMode": s.sync_mode or None,
            "connections": s.connections,
            "messagesSent": s.messages_sent,
            "messagesAcknowledged": s.messages_acked,
            "readSlowedSeconds": round(s.read_slowed_s, 3),
            "resources": {
                kind: {
                    "sent": s.sent[kind],
                    "acknowledged": s.acknowledged[kind],
                    "rejected": s.rejected[kind],
                }
                for kind in KINDS
            },
            "conflicts": list(s.conflicts),
            "refused": [{"key": k, "reason": r} for k, r in s.refused_labels()],
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


_FIELDS = tuple(f.name for f in dataclasses.fields(ZoneState))


def _refusals_valid(refused: object, count: object) -> bool:
    """Whether saved refusals have the shape ZoneState.keep_refusals gives them."""
    kinds = set(KINDS)
    return (
        isinstance(count, int)
        and count >= 0
        and isinstance(refused, list)
        and len(refused) <= REFUSED_SHOWN
        and all(
            isinstance(r, list)
            and len(r) == 4
            and all(isinstance(part, str) for part in r)
            and r[0] in kinds
            for r in refused
        )
    )
