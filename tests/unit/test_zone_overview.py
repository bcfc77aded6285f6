"""/zones/_overview in Kuma's ZoneOverview shape: what kumactl inspect zones reads from it.

``kumactl_row`` follows kumactl's zone table (app/kumactl/cmd/inspect/inspect_zones.go): the
last subscription's connect and last update times, Online when a subscription has a connect
time and no disconnect time, TOTAL UPDATES and TOTAL ERRORS summed over subscriptions from
``status.total.responsesSent`` / ``responsesRejected`` (64-bit counters as JSON strings), the
version from ``version.kumaCp.version`` and the backend from the JSON ``config``'s
``store.type``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from globalcp.hub import Hub
from globalcp.zone_overview import zone_overview
from globalcp.zones import ZoneTracker
from kds.model import Kind
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

T0 = 1_800_000_000.0


def kumactl_row(item: dict[str, Any]) -> list[str]:
    insight = item.get("zoneInsight") or {}
    subs = insight.get("subscriptions") or []
    last = subs[-1] if subs else {}
    online = any(s.get("connectTime") and not s.get("disconnectTime") for s in subs)
    enabled = (item.get("zone") or {}).get("enabled", True)

    def total(field: str) -> int:
        return sum(int(((s.get("status") or {}).get("total") or {}).get(field, 0)) for s in subs)

    config = last.get("config")
    backend = json.loads(config)["store"]["type"] if config else ""
    return [
        item["name"],
        "Online" if online and enabled else "Offline",
        last.get("connectTime") or "never",
        (last.get("status") or {}).get("lastUpdateTime") or "never",
        str(total("responsesSent")),
        str(total("responsesRejected")),
        ((last.get("version") or {}).get("kumaCp") or {}).get("version", ""),
        backend,
    ]


def _time(text: str) -> dt.datetime:
    # Go's time.Time and protobuf's Timestamp both read RFC 3339 with a Z offset.
    assert text.endswith("Z")
    return dt.datetime.fromisoformat(text)


async def test_an_online_then_offline_zone_as_kumactl_reads_it(tmp_path: Path) -> None:
    now = [T0]
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "g.db", clock=lambda: now[0]))
    try:
        tracker = ZoneTracker(
            store, Hub(0, 0, 100), clock=lambda: now[0], instance_id="global-1234"
        )
        h = tracker.connected(
            "zone-a",
            stream_id="st-1",
            instance_id="zone-a-9",
            zone_version="0.1.0",
            protocol_version=1,
            store_backend="sqlite",
            resumed_revision=None,
        )
        now[0] += 5
        h.batch_sent(1, {"Mesh": 1, "Secret": 2})
        h.batch_acked(1, 0, None)
        h.rejections([(Kind.SECRET, "Secret:default/x", "too large")])
        view = await tracker.view("zone-a")
        assert view is not None
        item = zone_overview(view)
        assert json.loads(json.dumps(item)) == item  # plain JSON
        assert item["type"] == "ZoneOverview" and item["zone"] == {"enabled": True}
        assert kumactl_row(item) == [
            "zone-a", "Online", "2027-01-15T08:00:00.000Z", "2027-01-15T08:00:05.000Z",
            "3", "1", "0.1.0", "sqlite",
        ]  # fmt: skip
        sub = item["zoneInsight"]["subscriptions"][0]
        assert sub["id"] == "st-1" and sub["globalInstanceId"] == "global-1234"
        assert sub["zoneInstanceId"] == "zone-a-9"
        assert sub["status"]["stat"]["Secret"] == {
            "responsesSent": "2",
            "responsesAcknowledged": "2",
            "responsesRejected": "1",
        }
        assert item["zoneInsight"]["kdsStreams"]["globalToZone"]["globalInstanceId"] == (
            "global-1234"
        )
        assert _time(item["creationTime"]) <= _time(item["modificationTime"])
        # This project's figures ride along in kdsSync.
        extra = item["kdsSync"]
        assert extra["lastSyncMode"] == "snapshot" and extra["conflictCount"] == 0
        assert extra["lastError"]["message"].startswith("zone rejected Secret:default/x")

        now[0] += 60
        h.disconnected("connection lost")
        view = await tracker.view("zone-a")
        assert view is not None
        item = zone_overview(view)
        assert kumactl_row(item)[1] == "Offline"
        assert item["zoneInsight"]["subscriptions"][0]["disconnectTime"] == (
            "2027-01-15T08:01:05.000Z"
        )
        assert "kdsStreams" not in item["zoneInsight"]
        assert item["creationTime"] == "2027-01-15T08:00:00.000Z"
    finally:
        store.close()


async def test_a_zone_that_was_only_refused_has_no_subscription(tmp_path: Path) -> None:
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "g.db", clock=lambda: T0))
    try:
        tracker = ZoneTracker(store, Hub(0, 0, 100), clock=lambda: T0)
        tracker.refused("zone-x", "refused instance zone-x-1: protocol version 9")
        view = await tracker.view("zone-x")
        assert view is not None
        item = zone_overview(view)
        assert item["zoneInsight"] == {"subscriptions": []}
        assert kumactl_row(item)[1:4] == ["Offline", "never", "never"]
        assert item["creationTime"] == item["modificationTime"] == "2027-01-15T08:00:00.000Z"
    finally:
        store.close()
