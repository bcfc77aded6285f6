"""A snapshot storm, end to end in one process: a real global servicer and real zone clients
over loopback gRPC. Global sends a snapshot to at most ``snapshot_streams`` zones at once,
each part only while the zone's window has room; the other zones wait their turn, kept alive
by heartbeats (none of them reconnects), and every zone ends with the whole store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import globalcp.sending
from kds.model import Kind, Resource
from kds.protocol.session import Ack, GlobalSession
from kds.store.sqlite import SqliteZoneStore
from tests.unit.inprocess import running_pair, wait_until

T0 = "2026-12-01T00:00:00.000Z"
SECRETS = 600
ZONES = 6
TURNS = 2
WINDOW = 2


async def test_a_snapshot_storm_sends_to_at_most_n_zones_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sessions with a snapshot part written and not yet acknowledged (only snapshots are
    # sent here: nothing is written during the storm).
    sending: set[int] = set()
    most_sending = 0
    most_in_flight = 0
    real_sent, real_ack = GlobalSession.on_sent, GlobalSession.on_ack

    def on_sent(self: GlobalSession, *args: Any) -> None:
        nonlocal most_sending, most_in_flight
        real_sent(self, *args)
        sending.add(id(self))
        most_sending = max(most_sending, len(sending))
        most_in_flight = max(most_in_flight, self.in_flight)

    def on_ack(self: GlobalSession, ack: Ack) -> Any:
        done = real_ack(self, ack)
        if self.in_flight == 0:
            sending.discard(id(self))
        return done

    real_apply = SqliteZoneStore.apply_batch

    async def slow_apply(self: SqliteZoneStore, batch: Any, *args: Any) -> Any:
        await asyncio.sleep(0.02)  # a zone slower than global's writes, as in a real storm
        return await real_apply(self, batch, *args)

    monkeypatch.setattr(GlobalSession, "on_sent", on_sent)
    monkeypatch.setattr(GlobalSession, "on_ack", on_ack)
    monkeypatch.setattr(SqliteZoneStore, "apply_batch", slow_apply)
    # 0.2 s heartbeats: a zone hearing nothing for 0.6 s reconnects, far less than its wait.
    async with running_pair(
        tmp_path, snapshot_streams=TURNS, max_unacked=WINDOW, heartbeat_interval=0.2
    ) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        value = b"v" * 2000  # about 12 parts of 128 KiB
        for i in range(0, SECRETS, 200):
            await pair.store.put_many(
                [
                    Resource(Kind.SECRET, f"s{j}", mesh="default", data=value)
                    for j in range(i, i + 200)
                ],
                T0,
            )
        head = pair.hub.head
        with capture_logs() as logs:
            zones = [pair.start_zone(f"zone-{i}") for i in range(ZONES)]
            await wait_until(
                lambda: pair.servicer.plans.turns.waiting == ZONES - TURNS,
                what="the zones beyond the limit to wait their turn",
            )
            await wait_until(
                lambda: all(z.client.status.applied_revision == head for z in zones),
                timeout=60,
                what="every zone to hold the snapshot",
            )
        for z in zones:
            assert len(await z.store.list_rows(Kind.SECRET)) == SECRETS
        assert most_sending == TURNS
        assert most_in_flight == WINDOW
        events = [e["event"] for e in logs]
        assert events.count("snapshot sent") == ZONES  # each zone once: nobody reconnected
        assert "global went silent: reconnecting" not in events
        assert "zone disconnected" not in events
        assert events.count("waiting for a turn to send the snapshot") == ZONES - TURNS
        await wait_until(lambda: pair.servicer.plans.turns.sending == 0, what="turns given back")


async def test_a_zone_that_stops_acknowledging_gives_its_turn_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zone holding the only turn that acknowledges nothing for TURN_STALL has its stream
    ended, and the zone waiting behind it is sent the snapshot: zones that stop acknowledging
    mid-snapshot could otherwise hold every turn for good."""
    monkeypatch.setattr(globalcp.sending, "TURN_STALL", 0.5)
    stuck: set[int] = set()
    release = asyncio.Event()
    real_apply = SqliteZoneStore.apply_batch

    async def apply(self: SqliteZoneStore, batch: Any, *args: Any) -> Any:
        if id(self) in stuck:
            await release.wait()  # a zone that takes its first part and never answers
        return await real_apply(self, batch, *args)

    monkeypatch.setattr(SqliteZoneStore, "apply_batch", apply)
    async with running_pair(
        tmp_path, snapshot_streams=1, max_unacked=WINDOW, heartbeat_interval=0.2
    ) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        value = b"v" * 2000
        await pair.store.put_many(
            [Resource(Kind.SECRET, f"s{j}", mesh="default", data=value) for j in range(200)],
            T0,
        )
        head = pair.hub.head
        with capture_logs() as logs:
            first = pair.start_zone("zone-stuck")
            stuck.add(id(first.store))
            await wait_until(
                lambda: pair.servicer.plans.turns.sending == 1, what="the stuck zone's turn"
            )
            second = pair.start_zone("zone-next")
            await wait_until(
                lambda: second.client.status.applied_revision == head,
                timeout=30,
                what="the zone behind it to hold the snapshot",
            )
            release.set()
        ended = [e for e in logs if e["event"] == "zone broke the protocol"]
        assert len(ended) == 1 and "acknowledged nothing for 0.5 s" in ended[0]["reason"]
        assert first.client.status.applied_revision != head
