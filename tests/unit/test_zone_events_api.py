"""GET /zones/{name}/events as the README states it: the newest events, 200 by default and at
most 1000 (?limit=), oldest first; text a zone caused is escaped and bounded there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from globalcp.hub import Hub
from globalcp.status_api import zone_routes
from globalcp.zones import ZoneTracker
from kds.api import ApiContext, build_app
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        self.t += 0.001  # every event at its own time
        return self.t


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    clock = Clock()
    engine = GlobalEngine(tmp_path / "g.db", clock=clock)
    store = SqliteGlobalStore(engine)
    tracker = ZoneTracker(store, Hub(engine.head(), engine.log_floor(), 100), clock=clock)
    tracker.connected(
        "zone-a", stream_id="s1", instance_id="i", zone_version="0.1.0", protocol_version=1,
        store_backend="sqlite", resumed_revision=None,
    )  # fmt: skip
    for i in range(1200):
        tracker.refused("zone-a", f"refusal {i} \x1b[2J" + "x" * 5000)
        if i % 400 == 399:  # saved as they come (a zone has at most 500 waiting)
            await tracker.flush()
    app = build_app(ApiContext(store=store, role="global"), zone_routes(tracker))
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()
    store.close()


async def _events(client: TestClient, query: str = "") -> list[dict[str, object]]:
    resp = await client.get(f"/zones/zone-a/events{query}")
    assert resp.status == 200, await resp.text()
    events: list[dict[str, object]] = (await resp.json())["events"]
    return events


async def test_events_default_maximum_and_order(client: TestClient) -> None:
    default = await _events(client)
    assert len(default) == 200
    assert str(default[-1]["reason"]).startswith("refusal 1199 ")  # newest last
    assert [e["time"] for e in default] == sorted(e["time"] for e in default)  # type: ignore[type-var]
    assert len(await _events(client, "?limit=5000")) == 1000
    assert len(await _events(client, "?limit=3")) == 3
    assert await _events(client, "?limit=0") == []
    bad = await client.get("/zones/zone-a/events?limit=-1")
    assert bad.status == 400


async def test_zone_caused_text_is_escaped_and_bounded(client: TestClient) -> None:
    text = await (await client.get("/zones/zone-a/events?limit=1")).text()
    assert "\x1b" not in text and "\\u001b" not in text and "\\\\x1b[2J" in text
    assert len(text) < 4096
