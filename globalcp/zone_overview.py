"""A zone's status in Kuma's ZoneOverview shape, as ``GET /zones/_overview`` and
``GET /zones/{name}/_overview`` serve it (what ``kumactl inspect zones`` reads).

Kuma's ZoneOverview is the resource meta (``type``, ``name``, ``creationTime``,
``modificationTime``, ``kri``) with the Zone (``zone: {enabled}``) and its ZoneInsight
(``zoneInsight: {subscriptions, healthCheck, kdsStreams}``). A KDS subscription is one stream
of the zone: its id, the global and zone instances, connect and disconnect times, the zone's
version, its config (here only ``{"store": {"type": BACKEND}}``, the part kumactl shows) and
its status: per resource type, the resources sent, acknowledged and rejected, and their total.
Counters are 64-bit and written as strings, as protobuf's JSON mapping writes them.

Global keeps one subscription per zone, the last stream, and counts since global first saw
the zone on it (so kumactl's sums over subscriptions are the zone's totals). What Kuma has no
field for is in ``kdsSync``, an added field Kuma's clients ignore: this project's own overview
of the zone (revision lag, conflicts, how the last stream started, the last error, counters;
see globalcp.zones.ZoneStatusView.overview).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from globalcp.zones import KINDS, ZoneStatusView
from kds.clock import rfc3339

__all__ = ["zone_overview"]


def _ts(t: float) -> str | None:
    return rfc3339(dt.datetime.fromtimestamp(t, dt.UTC)) if t else None


def _stats(sent: int, acknowledged: int, rejected: int) -> dict[str, str]:
    return {
        "responsesSent": str(sent),
        "responsesAcknowledged": str(acknowledged),
        "responsesRejected": str(rejected),
    }


def _subscription(view: ZoneStatusView) -> dict[str, Any]:
    s = view.state
    stat = {k: _stats(s.sent[k], s.acknowledged[k], s.rejected[k]) for k in KINDS}
    sub: dict[str, Any] = {
        "id": s.stream_id,
        "globalInstanceId": s.global_instance,
        "zoneInstanceId": s.instance_id,
        "connectTime": _ts(s.connected_at),
        "status": {
            "lastUpdateTime": _ts(s.last_update_at or s.connected_at),
            "total": _stats(
                sum(s.sent.values()), sum(s.acknowledged.values()), sum(s.rejected.values())
            ),
            "stat": stat,
        },
        "version": {
            "kumaCp": {
                "version": s.zone_version,
                "gitTag": "",
                "gitCommit": "",
                "buildDate": "",
                "kumaCpGlobalCompatible": True,  # global accepted the stream
            }
        },
        "config": json.dumps({"store": {"type": s.store_backend}}),
    }
    if not s.online:
        sub["disconnectTime"] = _ts(s.disconnected_at or s.last_message_at or s.connected_at)
    return sub


def zone_overview(view: ZoneStatusView) -> dict[str, Any]:
    """One zone as Kuma's ZoneOverview, with this project's figures in ``kdsSync``."""
    s = view.state
    seen = [s.connected_at, s.disconnected_at, s.last_message_at, s.last_update_at]
    modified = max([*seen, s.last_error_at])
    created = s.first_seen_at or min((t for t in [*seen, s.last_error_at] if t), default=0.0)
    insight: dict[str, Any] = {"subscriptions": [_subscription(view)] if s.connected_at else []}
    if s.last_message_at:
        insight["healthCheck"] = {"time": _ts(s.last_message_at)}
    if s.online:
        insight["kdsStreams"] = {
            "globalToZone": {
                "globalInstanceId": s.global_instance,
                "connectTime": _ts(s.connected_at),
            }
        }
    return {
        "type": "ZoneOverview",
        "name": s.name,
        "creationTime": _ts(created),
        "modificationTime": _ts(modified),
        "kri": f"kri_z____{s.name}_",
        "zone": {"enabled": True},
        "zoneInsight": insight,
        "kdsSync": view.overview(),
    }
