"""A daemon on PostgreSQL whose server goes away for a moment just after the store opened:
the reads it makes before it serves (global: the head, the default mesh, the zones' saved
status, the token signing keys and revocations, the sync CA; a zone: its sync state) are
tried again as the open is, and the daemon starts instead of exiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

import globalcp.app
import zonecp.app
from globalcp.app import run_global
from kds.config import GlobalConfig, ZoneConfig
from kds.errors import StoreUnavailable
from kds.runtime import Service
from tests.pgserver import shared_server
from zonecp.app import run_zone


@pytest.fixture
def pg_url() -> str:
    return shared_server().url


def _cut_connections(store: Any, url: str) -> None:
    """End the server side of every connection the store's pool holds, as a server restart
    does: the store's next call finds its connection gone."""
    pool = store._engine.db.pool
    pool.wait(10)
    held = [pool.getconn(5) for _ in range(pool.get_stats()["pool_size"])]
    pids = [c.info.backend_pid for c in held]
    for c in held:
        pool.putconn(c)
    with psycopg.connect(url, autocommit=True) as admin:
        for pid in pids:  # each ended before the call returns (PostgreSQL 14 and later)
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


async def _starts(
    main: Callable[[Any, Service], Awaitable[int]], cfg: Any, started: str
) -> list[Any]:
    """Run the daemon until it logs ``started``, then stop it: it must exit 0. Its log."""
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(main(cfg, Service(stop)))
        for _ in range(600):
            if task.done() or any(e["event"] == started for e in logs):
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # the daemon's own error, if it ended with one
        assert any(e["event"] == started for e in logs), [e["event"] for e in logs]
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    return logs


def _global_cfg(tmp_path: Path, url: str) -> GlobalConfig:
    return GlobalConfig(
        data_dir=tmp_path / "global",
        api_address=("127.0.0.1", 0),
        kds_address=("127.0.0.1", 0),
        store="postgres",
        postgres_url=url,
        postgres_schema="t" + uuid.uuid4().hex[:12],
    )


def _retried(logs: list[Any]) -> list[Any]:
    return [e for e in logs if e["event"] == "store unreachable at start: trying again"]


async def test_global_starts_when_postgresql_goes_away_just_after_the_open(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    real = globalcp.app.open_global_store

    def open_then_cut(*args: Any, **kw: Any) -> Any:
        store = real(*args, **kw)
        _cut_connections(store, pg_url)
        opened.append(store)
        return store

    monkeypatch.setattr(globalcp.app, "open_global_store", open_then_cut)
    logs = await _starts(run_global, _global_cfg(tmp_path, pg_url), "global started")
    assert len(opened) == 1  # the store was opened once; its reads were tried again
    # Each of the pool's connections is found gone in turn, each by a try of its own.
    retries = _retried(logs)
    assert [e["attempt"] for e in retries] == list(range(1, len(retries) + 1))
    assert retries and all(e["log_level"] == "warning" for e in retries)
    assert all("terminating connection" in e["error"] for e in retries)
    assert all(e["doing"] == "reading the store" for e in retries)
    assert any(e["event"] == "store reachable: starting" for e in logs)
    assert (tmp_path / "global" / "ca.crt").exists()


@pytest.mark.parametrize(
    "read", ["head", "get", "log_floor", "zone_statuses", "internal_secrets", "zone_tokens"]
)
async def test_each_of_globals_start_up_reads_is_tried_again(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """Each read global makes before it serves fails once, as a store away fails."""
    real = globalcp.app.open_global_store
    failed: list[str] = []

    def open_and_fail_once(*args: Any, **kw: Any) -> Any:
        store = real(*args, **kw)
        method = getattr(store, read)

        async def away_once(*a: Any, **k: Any) -> Any:
            if not failed:
                failed.append(read)
                raise StoreUnavailable(f"PostgreSQL at test failed: {read} cut off")
            return await method(*a, **k)

        setattr(store, read, away_once)
        return store

    monkeypatch.setattr(globalcp.app, "open_global_store", open_and_fail_once)
    logs = await _starts(run_global, _global_cfg(tmp_path, pg_url), "global started")
    assert failed == [read]
    assert [e["error"] for e in _retried(logs)] == [f"PostgreSQL at test failed: {read} cut off"]


async def test_a_zone_starts_when_postgresql_goes_away_just_after_the_open(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = zonecp.app.open_zone_store

    def open_then_cut(*args: Any, **kw: Any) -> Any:
        store = real(*args, **kw)
        _cut_connections(store, pg_url)
        return store

    monkeypatch.setattr(zonecp.app, "open_zone_store", open_then_cut)
    cfg = ZoneConfig(
        zone="zone-a",
        global_address="grpc://127.0.0.1:1",  # nothing there: the zone keeps dialling
        insecure=True,
        data_dir=tmp_path / "zone",
        api_address=("127.0.0.1", 0),
        store="postgres",
        postgres_url=pg_url,
        postgres_schema="t" + uuid.uuid4().hex[:12],
    )
    logs = await _starts(run_zone, cfg, "zone started")
    retries = _retried(logs)
    assert retries and all("terminating connection" in e["error"] for e in retries)
