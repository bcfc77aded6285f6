"""Acknowledgements held back, end to end in one process: a real global servicer and a real
zone client over loopback gRPC. With an ack delay, batches that arrive within it are
acknowledged with one message, and global's view of the zone still reaches the head."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from globalcp.stream import ZoneStream
from kds.model import Kind, Resource
from tests.unit.inprocess import running_pair, wait_until

T0 = "2026-11-30T00:00:00.000Z"


def _count_acks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = ZoneStream._on_ack

    def counting(self: ZoneStream, ack: Any) -> None:
        seen.append(ack.seq)
        real(self, ack)

    monkeypatch.setattr(ZoneStream, "_on_ack", counting)
    return seen


async def test_batches_within_the_delay_share_one_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_pair(tmp_path, ack_delay=1.0, max_unacked=16) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        zone = pair.start_zone("zone-a")
        state = lambda: pair.tracker.zones["zone-a"]  # noqa: E731
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        await wait_until(lambda: "zone-a" in pair.tracker.zones)
        await wait_until(lambda: state().acked_revision == pair.hub.head, what="first ack")
        acks = _count_acks(monkeypatch)
        acked_before = state().messages_acked
        for i in range(4):  # four writes, four batches, applied one after the other
            await pair.store.put(Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"x"), T0)
            await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        assert state().acked_revision < pair.hub.head  # held back, not lost
        await wait_until(lambda: state().acked_revision == pair.hub.head, what="the held ack")
        # The first write may come over a second after the last batch (a slow machine): it
        # is then acknowledged at once. The three that follow it share one message.
        assert len(acks) == 1 or (len(acks) == 2 and acks[1] - acks[0] == 3), acks
        assert state().messages_acked - acked_before == 4


async def test_an_idle_stream_gets_a_heartbeat_each_interval_and_never_sooner(
    tmp_path: Path,
) -> None:
    """Global's send loop keeps one timer per stream for heartbeats: an idle zone hears one
    about every interval (so its watchdog never fires), none sooner than an interval after
    the last message global wrote."""
    async with running_pair(tmp_path, heartbeat_interval=0.2) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        zone = pair.start_zone("zone-a")
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        seen: list[float] = []
        real = zone.client.session.on_heartbeat

        def counting(head: int, now: float) -> None:
            seen.append(now)
            real(head, now)

        zone.client.session.on_heartbeat = counting  # type: ignore[method-assign]
        await wait_until(lambda: len(seen) >= 4, what="four heartbeats")
        await pair.store.put(Resource(Kind.SECRET, "s", mesh="default", data=b"x"), T0)
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        applied_at, written = time.monotonic(), len(seen)
        await wait_until(lambda: len(seen) >= written + 2, what="heartbeats after a write")
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert min(gaps) >= 0.19, gaps
        assert seen[written] - applied_at >= 0.15  # the write put the next heartbeat off
        assert zone.client.status.connections == 1
