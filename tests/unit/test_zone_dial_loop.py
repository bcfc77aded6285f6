"""The zone's dial loop (zonecp.client.ZoneClient.run): backoff grows while dials fail and,
after a stream that worked (was welcomed), starts again from its shortest delay after a short
random pause. The stream is a scripted fake, backoff sleeps are recorded instead of slept,
and every random draw is pinned to its lower bound, so each delay is exact."""

from __future__ import annotations

import asyncio
import functools
import random
import sqlite3
from typing import Any

import grpc
import pytest
import structlog.testing
from tenacity import AsyncRetrying

from kds.errors import StoreUnavailable
from zonecp import client as zone_client
from zonecp import dial
from zonecp.client import ZoneClient
from zonecp.dial import StreamEnded


class _Store:
    backend = "fake"

    async def conflicts(self) -> list[Any]:
        return []


def _client(store: Any) -> ZoneClient:
    """A client of ``store`` whose dials go nowhere (the tests replace _stream_once)."""
    return ZoneClient(
        store,
        zone="zone-1",
        global_address="grpcs://127.0.0.1:1",
        software_version="test",
        max_message_bytes=1 << 20,
        keepalive_interval=1,
        keepalive_timeout=1,
        reconnect_max_delay=15,
    )


async def test_backoff_starts_again_from_the_shortest_delay_after_a_stream_that_worked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[Any] = []
    script = ["fail"] * 5 + ["welcomed"] + ["fail"] * 2 + ["welcomed"]

    async def backoff_sleep(seconds: float) -> None:
        events.append(round(seconds, 3))

    def uniform(a: float, b: float) -> float:
        events.append(("pause", a, b))
        return a

    monkeypatch.setattr(
        zone_client, "AsyncRetrying", functools.partial(AsyncRetrying, sleep=backoff_sleep)
    )
    monkeypatch.setattr(random, "random", lambda: 0.0)  # tenacity's jitter: none
    monkeypatch.setattr(random, "uniform", uniform)  # the pause after a welcomed stream
    monkeypatch.setattr(zone_client, "STABLE_STREAM_S", 0.0)  # these streams end at once
    client = _client(_Store())
    stop = asyncio.Event()

    async def stream_once(stop_: asyncio.Event) -> bool:
        step = script.pop(0)
        events.append(step)
        if step == "fail":
            raise StreamEnded("UNAVAILABLE: connection refused")
        if not script:
            stop.set()
        return True

    monkeypatch.setattr(client, "_stream_once", stream_once)
    await asyncio.wait_for(client.run(stop), 10)
    # 0.2 s doubling (0.1 * 2^(n-1), at least 0.2) while dials fail; after the welcomed
    # stream a 50-500 ms pause, then 0.2 s again instead of the 3.2 s the sixth failure
    # in a row would wait.
    assert events == [
        "fail", 0.2, "fail", 0.2, "fail", 0.4, "fail", 0.8, "fail", 1.6,
        "welcomed", ("pause", 0.05, 0.5),
        "fail", 0.2, "fail", 0.2,
        "welcomed", ("pause", 0.05, 0.5),
    ]  # fmt: skip
    assert client.status.attempts == 2  # the count restarted too: the last retry was the 2nd


async def test_a_stream_that_ends_at_once_after_its_welcome_is_dialed_again_with_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A global that welcomes each stream and ends it at once (or promises a heartbeat
    every millisecond, then falls silent) had the zone dial again every 50-500 ms forever,
    logging each time: such a stream backs off as a failed dial does."""
    events: list[Any] = []

    async def backoff_sleep(seconds: float) -> None:
        events.append(round(seconds, 3))

    monkeypatch.setattr(
        zone_client, "AsyncRetrying", functools.partial(AsyncRetrying, sleep=backoff_sleep)
    )
    monkeypatch.setattr(random, "random", lambda: 0.0)
    client = _client(_Store())
    stop = asyncio.Event()

    async def stream_once(stop_: asyncio.Event) -> bool:
        events.append("welcomed")
        if events.count("welcomed") == 5:
            stop.set()
        return True

    monkeypatch.setattr(client, "_stream_once", stream_once)
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(client.run(stop), 10)
    assert events == [
        "welcomed",
        0.2,
        "welcomed",
        0.2,
        "welcomed",
        0.4,
        "welcomed",
        0.8,
        "welcomed",
    ]
    assert "after it was dialed, within 1s" in logs[0]["error"]


async def test_a_store_away_when_the_sync_starts_is_waited_for_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first read of the zone's conflicts fails (PostgreSQL restarting as this instance
    starts to sync): it is retried with the dial loop's backoff, and the stream starts once
    the store answers, with the conflicts the store holds."""
    events: list[Any] = []
    said: list[str] = []

    class FlakyStore(_Store):
        calls = 0

        async def conflicts(self) -> list[Any]:
            self.calls += 1
            events.append("conflicts")
            if self.calls > 1:  # what the zone's status says while it waits
                said.append(client.status.last_error)
            if self.calls <= 2:
                raise StoreUnavailable("PostgreSQL at test failed: server closed the connection")
            return ["a conflict"]

    async def backoff_sleep(seconds: float) -> None:
        events.append(round(seconds, 3))

    monkeypatch.setattr(
        zone_client, "AsyncRetrying", functools.partial(AsyncRetrying, sleep=backoff_sleep)
    )
    monkeypatch.setattr(random, "random", lambda: 0.0)
    store = FlakyStore()
    client = _client(store)
    stop = asyncio.Event()

    async def stream_once(stop_: asyncio.Event) -> bool:
        events.append("stream")
        if events.count("stream") == 1:
            raise StreamEnded("UNAVAILABLE: connection refused")
        stop.set()
        return True

    monkeypatch.setattr(client, "_stream_once", stream_once)
    await asyncio.wait_for(client.run(stop), 10)
    # Read once it worked, not again at each redial.
    assert events == ["conflicts", 0.2, "conflicts", 0.2, "conflicts", "stream", 0.4, "stream"]
    assert client.status.conflicts == ["a conflict"]
    assert len(said) == 2 and all("PostgreSQL at test failed" in e for e in said)


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailable("PostgreSQL at test failed: server closed the connection"),
        sqlite3.OperationalError("disk I/O error: server closed the connection"),
    ],
)
async def test_conflicts_that_cannot_be_read_after_a_local_write_are_logged_not_fatal(
    error: Exception,
) -> None:
    """After a zone-local write the conflicts are read again, in a task of its own that the
    daemon guards: a store failing just then, as it expects (PostgreSQL away) or not (a
    disk error SQLite raises as it is), must not end the daemon (a guarded task that raises
    stops it), and the conflicts known before stay."""

    class AwayStore(_Store):
        async def conflicts(self) -> list[Any]:
            raise error

    client = _client(AwayStore())
    client.status.conflicts = ["known"]  # type: ignore[list-item]
    with structlog.testing.capture_logs() as logs:
        await client.try_refresh_conflicts()
    assert client.status.conflicts == ["known"]
    assert [e["event"] for e in logs] == ["cannot re-read the zone's conflicts"]
    assert "server closed the connection" in logs[0]["error"]


def test_a_refusal_reads_the_same_whichever_way_it_ended_the_call() -> None:
    """Global refuses a bad token before it reads the hello: the zone learns it from its read
    (the call's error) or, when the call ended before its first write, as StreamEnded. Both
    are logged and shown as the status code and reason; the second read
    "StreamEnded('PERMISSION_DENIED: ...')" before."""
    text = "PERMISSION_DENIED: zone token 1f has been revoked"
    assert dial.describe(StreamEnded(text, grpc.StatusCode.PERMISSION_DENIED)) == text
    bad_ca = dial.describe(StreamEnded("UNAVAILABLE: CERTIFICATE_VERIFY_FAILED"))
    assert bad_ca.endswith("pass global's DATA_DIR/ca.crt with --ca-file)")
    assert dial.describe(ValueError("x")) == "ValueError('x')"  # unexpected: its type
