"""What the API answers when the store is damaged or its disk full: the damaged key named
(500), the rest of a list still served, a full disk as 507; never a value."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kds.api import ApiContext, build_app
from kds.errors import StoreFull
from kds.model import Key, Kind
from kds.store.sqlite import SqliteZoneStore, ZoneEngine
from tests.unit.store_backends import GSID, T0, mk
from tests.unit.test_store_damage import VALUE, batch, flip, secrets

# What ApiContext.on_write was told, by the zone fixture's API: a full disk is reported.
WRITE_OUTCOMES: list[StoreFull | None] = []


@pytest.fixture
async def zone(tmp_path: Path) -> AsyncIterator[tuple[TestClient, ZoneEngine, SqliteZoneStore]]:
    db = tmp_path / "zone.db"
    z = ZoneEngine(db)
    z.apply_batch(batch(secrets(2), 5), GSID, T0)
    for i in range(3):
        z.put(mk(Key(Kind.SECRET, "default", f"l{i}"), VALUE % (100 + i)), T0)
    z.close()
    flip(db, VALUE % 101)
    engine = ZoneEngine(db)
    store = SqliteZoneStore(engine)
    WRITE_OUTCOMES.clear()
    ctx = ApiContext(
        store=store, role="zone", zone="zone-a", now=lambda: T0, on_write=WRITE_OUTCOMES.append
    )
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    yield client, engine, store
    await client.close()
    store.close()


async def test_a_damaged_row_is_named_and_the_list_serves_the_rest(
    zone: tuple[TestClient, ZoneEngine, SqliteZoneStore],
) -> None:
    client, _, _ = zone
    resp = await client.get("/meshes/default/secrets/l1")
    body = await resp.json()
    assert resp.status == 500
    assert "Secret default/l1 (zone-local) is damaged" in body["detail"]
    assert "damage-test-value" not in await resp.text()
    resp = await client.get("/meshes/default/secrets")
    assert resp.status == 200
    names = sorted(i["name"] for i in (await resp.json())["items"])
    assert names == ["l0", "l2", "s0", "s1"]


async def _fill_disk(engine: ZoneEngine, store: SqliteZoneStore) -> None:
    def cap() -> None:
        conn = engine.db.conn()  # the writer thread's connection
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")

    await store._threads.write(cap)


async def test_a_full_disk_answers_507(
    zone: tuple[TestClient, ZoneEngine, SqliteZoneStore],
) -> None:
    client, engine, store = zone
    await _fill_disk(engine, store)
    data = base64.b64encode(b"x" * 300_000).decode()
    resp = await client.put("/meshes/default/secrets/big", json={"data": data})
    body = await resp.json()
    assert resp.status == 507, body
    assert body["detail"].startswith("the zone's disk is full: ")
    assert len(WRITE_OUTCOMES) == 1 and isinstance(WRITE_OUTCOMES[0], StoreFull)


async def test_an_apply_on_a_full_disk_answers_as_a_put_does(
    zone: tuple[TestClient, ZoneEngine, SqliteZoneStore],
) -> None:
    """Not a 400 "Invalid resources": the store failed, not the items; and the full disk
    is reported (the zone tells global)."""
    client, engine, store = zone
    await _fill_disk(engine, store)
    data = base64.b64encode(b"x" * 300_000).decode()
    item = {"type": "Secret", "mesh": "default", "name": "big", "data": data}
    resp = await client.post("/_apply", json={"items": [item]})
    body = await resp.json()
    assert resp.status == 507, body
    assert body["title"] == "Insufficient Storage"
    assert body["detail"].startswith("the zone's disk is full: ")
    assert len(WRITE_OUTCOMES) == 1 and isinstance(WRITE_OUTCOMES[0], StoreFull)
