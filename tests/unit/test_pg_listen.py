"""The wake-up listener on PostgreSQL (kds.store.postgres._listen.listen), with a scripted
connection instead of a server: how it waits between tries, and what it logs."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
import structlog.testing

from kds.store.pg_target import PgTarget
from kds.store.postgres import _listen


class _DropsAtOnce:
    """A connection the server takes and ends before LISTEN goes through."""

    async def __aenter__(self) -> _DropsAtOnce:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, query: Any) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")


async def test_a_server_that_drops_each_connection_at_once_is_retried_with_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts connections and drops them at once (shutting down, a proxy in
    front of a dead one) is tried again after a growing wait, not in a spin; a refused
    connection then says once that the server is unreachable."""
    script: list[str] = ["drop"] * 5 + ["refuse"] * 3
    slept: list[float] = []
    done = asyncio.Event()

    async def connect(target: PgTarget) -> _DropsAtOnce:
        step = script.pop(0) if script else "end"
        if step == "end":
            done.set()
            await asyncio.sleep(3600)
        if step == "refuse":
            raise psycopg.OperationalError("connection refused")
        return _DropsAtOnce()

    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        if seconds < 3600:
            slept.append(seconds)
            await real_sleep(0)
        else:
            await real_sleep(seconds)

    async def on_event(what: str) -> None:
        raise AssertionError("nothing was listened to")

    monkeypatch.setattr(_listen, "connect_own", connect)
    monkeypatch.setattr(_listen.asyncio, "sleep", sleep)
    target = PgTarget("postgresql://127.0.0.1:1/kds", "s1")
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(_listen.listen(target, on_event, retry_max=2.0))
        try:
            await asyncio.wait_for(done.wait(), 10)
        finally:
            task.cancel()
    assert slept == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]
    events = [e["event"] for e in logs]
    assert events == ["PostgreSQL connection for wake-ups lost: reconnecting"] * 5 + [
        "PostgreSQL unreachable: writes refused, wake-ups paused"
    ]


async def test_a_server_that_refuses_the_login_is_named_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A password changed on the server, found when the listener connects again: its log
    said "unreachable", as for a server that is away; it now says the server refuses the
    daemon and why, once."""
    tries = 0
    done = asyncio.Event()

    async def connect(target: PgTarget) -> Any:
        nonlocal tries
        tries += 1
        if tries > 3:
            done.set()
            await asyncio.sleep(3600)
        raise psycopg.OperationalError(
            'connection to server at "127.0.0.1", port 1 failed: FATAL:  password '
            'authentication failed for user "kds"'
        )

    async def on_event(what: str) -> None:
        raise AssertionError("nothing was listened to")

    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(0 if seconds < 3600 else seconds)

    monkeypatch.setattr(_listen, "connect_own", connect)
    monkeypatch.setattr(_listen.asyncio, "sleep", sleep)
    target = PgTarget("postgresql://kds:pw@127.0.0.1:1/kds", "s1")
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(_listen.listen(target, on_event))
        try:
            await asyncio.wait_for(done.wait(), 10)
        finally:
            task.cancel()
    assert len(logs) == 1 and logs[0]["event"].startswith(
        "PostgreSQL refuses this daemon's connections: writes refused"
    )
    assert "refused to log user 'kds' in: password authentication failed" in logs[0]["error"]
    assert "pw@" not in str(logs[0])
