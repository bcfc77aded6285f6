"""Peers dialling global's sync port in a loop with hellos it refuses: without zone tokens
(--kds-insecure) a zone's name is whatever a peer says, and a peer inventing names must not
grow global's zone list, history and metrics without end; a second instance of a connected
zone must not flood global's log, history and store."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from globalcp import gate as gate_module
from kds._pb import sync_pb2 as pb
from kds.wire import PROTOCOL_VERSION
from tests.unit.inprocess import running_pair, wait_until

METHOD = "/kds.v1.SecretSync/Sync"


async def _hello_ends(
    port: int, zone: str, instance: str = ""
) -> tuple[grpc.StatusCode | None, str]:
    """Send a hello for ``zone`` as a made-up zone; the status the stream ends with (None if
    global welcomed it: the stream is then dropped)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call: Any = ch.stream_stream(
            METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )()
        hello = pb.Hello(
            zone=zone,
            instance_id=instance or f"{zone}-1",
            software_version="x",
            protocol_version=PROTOCOL_VERSION,
        )
        await call.write(pb.ZoneMessage(hello=hello).SerializeToString())
        with contextlib.suppress(grpc.aio.AioRpcError):
            first = await asyncio.wait_for(call.read(), 10)
            if first is not grpc.aio.EOF:
                call.cancel()
                return None, ""
        return await call.code(), await call.details()


async def test_a_peer_inventing_zone_names_is_refused_past_the_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate_module, "MAX_ZONES_WITHOUT_TOKENS", 3, raising=False)
    async with running_pair(tmp_path) as pair:
        for i in range(3):
            assert await _hello_ends(pair.port, f"made-up-{i}") == (None, "")
        await wait_until(lambda: all(not s.online for s in pair.tracker.zones.values()))
        for i in range(3, 10):
            code, details = await _hello_ends(pair.port, f"made-up-{i}")
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details == (
                "global runs without zone tokens (--kds-insecure) and keeps at most 3 zone "
                "names: it takes no new one"
            )
        assert sorted(pair.tracker.zones) == ["made-up-0", "made-up-1", "made-up-2"]
        # A name global knows still connects, and a real zone of one of them syncs.
        assert await _hello_ends(pair.port, "made-up-1") == (None, "")
        await wait_until(lambda: not pair.tracker.zones["made-up-1"].online)
        pair.start_zone("made-up-2")
        await wait_until(lambda: pair.tracker.zones["made-up-2"].online, what="zone connected")


async def test_a_second_instance_dialling_in_a_loop_is_logged_and_recorded_once(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path) as pair:
        pair.start_zone("zone-1")
        await wait_until(lambda: "zone-1" in pair.servicer.links, what="zone-1 connected")
        state = pair.tracker.zones["zone-1"]
        errors = state.errors
        await pair.tracker.flush()
        events = len(await pair.store.zone_events("zone-1", "event"))
        with capture_logs() as logs:
            for _ in range(50):
                code, details = await _hello_ends(pair.port, "zone-1", "zone-1-other")
                assert code is grpc.StatusCode.ALREADY_EXISTS, details
        refused = [e for e in logs if e["event"] == "refused a second instance of a connected zone"]
        assert len(refused) == 1, refused
        assert state.errors == errors + 50  # each is counted
        assert state.last_error.startswith("refused instance zone-1-other: zone 'zone-1' is")
        await pair.tracker.flush()
        assert len(await pair.store.zone_events("zone-1", "event")) == events + 1
        assert pair.tracker.zones["zone-1"].online


async def test_a_zone_dialling_in_a_loop_is_refused_past_its_streams_per_interval(
    tmp_path: Path,
) -> None:
    most = getattr(gate_module, "STREAMS_PER_ZONE", 20)
    async with running_pair(tmp_path) as pair:
        with capture_logs() as logs:
            ends = [await _hello_ends(pair.port, "zone-1") for _ in range(40)]
        admitted = [e for e in ends if e == (None, "")]
        assert len(admitted) == most
        for code, details in ends[len(admitted) :]:
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details == (
                f"zone 'zone-1' started {most} streams within 10 s: dial again in a few seconds"
            )
        assert len([e for e in logs if e["event"] == "zone refused: dialling too often"]) == 1
        await pair.tracker.flush()
        events = await pair.store.zone_events("zone-1", "event")
        assert len(events) <= 2 * most + 1
        # Another zone is not held back by it.
        assert await _hello_ends(pair.port, "zone-2") == (None, "")
