"""globalcp.inventory: which zones hold each resource, and the propagation histogram as JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from globalcp import inventory
from globalcp.hub import Hub
from globalcp.inventory import _resources
from globalcp.metrics import LATENCY_BUCKETS, GlobalMetrics
from globalcp.zones import ZoneTracker
from kds.model import Kind, Resource
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

NOW = "2026-11-29T00:00:00.000Z"


def test_propagation_summary_is_cumulative_per_zone_and_in_all() -> None:
    m = GlobalMetrics()
    assert m.propagation_summary()["total"] == {
        "counts": [0] * len(LATENCY_BUCKETS),
        "count": 0,
        "sum": 0.0,
    }
    m.observe_propagation("zone-a", 0.003)
    m.observe_propagation("zone-b", 0.2)
    m.observe_propagation("zone-b", 60)  # beyond the last bound
    s = m.propagation_summary()
    assert s["buckets"] == list(LATENCY_BUCKETS)
    a, b, total = s["zones"]["zone-a"], s["zones"]["zone-b"], s["total"]
    assert a["counts"][LATENCY_BUCKETS.index(0.005)] == 1 and a["counts"][0] == 0
    assert b["counts"][-1] == 1 and b["count"] == 2  # 60 s counts, in no bucket
    assert total["count"] == 3 and total["counts"][-1] == 2
    assert total["sum"] == round(0.003 + 0.2 + 60, 6)


async def test_resources_say_which_zones_hold_them(tmp_path: Path) -> None:
    engine = GlobalEngine(tmp_path / "g.db")
    store = SqliteGlobalStore(engine)
    try:
        engine.put(Resource(Kind.MESH, "default"), NOW)  # revision 1
        engine.put(Resource(Kind.SECRET, "s", mesh="default", data=b"secret-value"), NOW)  # 2
        engine.put(Resource(Kind.GLOBAL_SECRET, "clash", data=b"v"), NOW)  # 3
        t = ZoneTracker(store, Hub(engine.head(), 0, 100))
        for zone, resumed in (("zone-a", 3), ("zone-b", 1), ("zone-c", 2)):
            t.connected(
                zone,
                stream_id=zone,
                instance_id=zone,
                zone_version="",
                protocol_version=1,
                store_backend="",
                resumed_revision=resumed,
            )
        t.zones["zone-c"].conflicts = ["GlobalSecret:clash"]
        t.refused("zone-never", "refused")  # never connected: not counted
        out = await _resources(t)
        assert out["zones"] == ["zone-a", "zone-b", "zone-c"] and out["total"] == 3
        zones = {(i["type"], i["name"]): i["zones"] for i in out["items"]}
        assert zones[("Mesh", "default")]["held"] == ["zone-a", "zone-b", "zone-c"]
        assert zones[("Secret", "s")] == {
            "held": ["zone-a", "zone-c"],
            "ownCopy": [],
            "pending": ["zone-b"],
        }
        assert zones[("GlobalSecret", "clash")] == {
            "held": ["zone-a"],
            "ownCopy": ["zone-c"],
            "pending": ["zone-b"],
        }
        assert "secret-value" not in repr(out) and all("data" not in i for i in out["items"])
    finally:
        store.close()


async def test_resources_read_only_the_rows_they_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut at MAX_RESOURCES, with every row counted: the store is read a page at a time,
    never in full (the page is open to the read-only token and polled)."""
    monkeypatch.setattr(inventory, "MAX_RESOURCES", 3)
    engine = GlobalEngine(tmp_path / "g.db")
    store = SqliteGlobalStore(engine)
    try:
        engine.put(Resource(Kind.MESH, "default"), NOW)
        for i in range(5):
            engine.put(Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"v"), NOW)
        engine.put(Resource(Kind.GLOBAL_SECRET, "g", data=b"v"), NOW)

        async def everything(*args: object) -> None:
            raise AssertionError("read every row")

        monkeypatch.setattr(store, "list_rows", everything)

        async def with_data(*args: object) -> None:
            raise AssertionError("read (and unsealed) the data of rows shown by name")

        monkeypatch.setattr(store, "page", with_data)  # names and versions only
        t = ZoneTracker(store, Hub(engine.head(), 0, 100))
        out = await _resources(t)
        assert out["total"] == 7 and out["truncated"]
        assert [i["name"] for i in out["items"]] == ["default", "s0", "s1"]
        assert [(i["revision"], i["origin"]) for i in out["items"]] == [
            (1, "global"),
            (2, "global"),
            (3, "global"),
        ]
    finally:
        store.close()
