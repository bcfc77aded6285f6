"""A real global against a peer speaking the sync protocol by hand: hostile hellos before the
token is checked, an authenticated zone flooding global with status and rejections, or with
large status reports (read slower, against its stream's byte budget), and one dialling past
its streams per interval (refused before its hello is read)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx

from globalcp.gate import STREAMS_PER_ZONE
from kds._pb import sync_pb2 as pb
from kds.protocol.read_budget import BURST, RATE
from tests.integration.conftest import Cluster, Daemon, wait_for

METHOD = "/kds.v1.SecretSync/Sync"
HUGE = "x" * (4 * 1024 * 1024 - 4096)  # just under the 4 MiB message limit


def _hello(zone: str, instance_id: str, revision: int = 0) -> bytes:
    return pb.ZoneMessage(
        hello=pb.Hello(
            zone=zone,
            instance_id=instance_id,
            software_version="test",
            protocol_version=1,
            resume=pb.ResumePoint(revision=revision),
        )
    ).SerializeToString()


def _with_channel(cluster: Cluster, body: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``body(open_stream)`` against global's sync port, over TLS with its CA."""
    ca = (cluster.tmp / "global" / "ca.crt").read_bytes()

    async def main() -> Any:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
        async with grpc.aio.secure_channel(f"127.0.0.1:{cluster.kds_port}", creds) as ch:
            sync = ch.stream_stream(
                METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )

            def open_stream(token: str, zone: str = "") -> Any:
                named = (("kds-zone", zone),) if zone else ()
                return sync(metadata=(("authorization", f"Bearer {token}"), *named))

            return await body(open_stream)

    return asyncio.run(main())


async def _ended(call: Any, timeout: float = 10) -> tuple[grpc.StatusCode, str]:
    """Read until the stream ends; its status code and details."""

    async def drain() -> None:
        while await call.read() is not grpc.aio.EOF:
            pass

    with contextlib.suppress(grpc.aio.AioRpcError):
        await asyncio.wait_for(drain(), timeout)
    return await call.code(), await call.details()


def _log_size(d: Daemon) -> int:
    return d.log_path.stat().st_size


def _metric(g: Daemon, line_start: str) -> float:
    text = g.http.get("/metrics").text
    return float(next(x.split()[-1] for x in text.splitlines() if x.startswith(line_start)))


def test_hostile_hellos_are_refused_bounded_and_never_reach_a_zone(cluster: Cluster) -> None:
    g = cluster.start_global()
    cluster.start_zone("zone-1")
    token = cluster.zone_token("zone-1").read_text().strip()
    before = g.zone_sync("zone-1")
    size = _log_size(g)

    async def hostile(open_stream: Any) -> list[tuple[grpc.StatusCode, str]]:
        out = []
        for _ in range(10):  # a garbage token: refused before a message is read
            call = open_stream("garbage")
            out.append(await _ended(call))
        for _ in range(5):  # a bad token naming a known zone: refused, counted, logged once
            call = open_stream("garbage", "zone-1")
            out.append(await _ended(call))
        # With zone-1's own token, a hello over its bounds is refused naming the field.
        call = open_stream(token)
        await call.write(_hello("zone-1", HUGE))
        out.append(await _ended(call))
        call = open_stream(token)
        await call.write(_hello("zone-1", "zone-1-beyond", revision=2**63))
        out.append(await _ended(call))
        return out

    ended = _with_channel(cluster, hostile)
    for code, details in ended[:15]:
        assert code is grpc.StatusCode.UNAUTHENTICATED, (code, details)
        assert details == "malformed zone token"
    assert ended[15] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "hello.instance_id: must be at most 300 characters (got 4190208)",
    )
    assert ended[16][0] is grpc.StatusCode.INVALID_ARGUMENT
    assert ended[16][1].startswith("hello.resume.revision: must be at most 9223372036854775807")
    # Global's log grew by a few lines, not by megabytes; nothing of it is zone-1's status.
    wait_for(lambda: g.events("zone refused: bad token", zone="zone-1"), what="refusal logged")
    grown = _log_size(g) - size
    assert grown < 16_384, grown
    assert len(g.events("zone refused: bad token", zone="zone-1")) == 1  # 5 refusals, one line
    after = g.zone_sync("zone-1")
    assert after["totalErrors"] == before["totalErrors"]
    assert after["lastError"] == before["lastError"]
    assert after["status"] == "Online"
    assert _metric(g, 'kds_global_zone_token_refusals_total{code="UNAUTHENTICATED"}') == 15


def _read_batches(call: Any) -> Callable[[], Awaitable[pb.Batch]]:
    async def next_batch() -> pb.Batch:
        while True:
            msg = pb.GlobalMessage.FromString(await asyncio.wait_for(call.read(), 10))
            if msg.WhichOneof("msg") == "batch":
                return msg.batch

    return next_batch


def test_an_authenticated_zone_cannot_flood_global(cluster: Cluster) -> None:
    g = cluster.start_global()
    token = cluster.zone_token("zone-raw").read_text().strip()

    async def flood(open_stream: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        call = open_stream(token)
        await call.write(_hello("zone-raw", "zone-raw-1"))
        batch = await _read_batches(call)()  # the snapshot: the default mesh
        conflicts = [
            pb.ResourceKey(kind=pb.SECRET, mesh="default", name=f"conflict-{i}")
            for i in range(30_000)
        ]
        await call.write(
            pb.ZoneMessage(status=pb.ZoneStatus(conflicts=conflicts)).SerializeToString()
        )
        await asyncio.to_thread(
            wait_for,
            lambda: g.zone_sync("zone-raw")["conflictCount"] == 30_000,
            10,
            "30,000 conflicts counted",
        )
        out["kept"] = g.zone_sync("zone-raw")["conflicts"]
        # Reports flipping between two sets as fast as the zone can send them: global takes
        # one a second (the last one held is taken when due), not one history event each.
        flips = [
            pb.ZoneMessage(
                status=pb.ZoneStatus(
                    conflicts=[pb.ResourceKey(kind=pb.SECRET, mesh="default", name=f"f-{i % 2}")]
                )
            ).SerializeToString()
            for i in range(2_001)
        ]
        started = time.monotonic()
        for m in flips:
            await call.write(m)
        await asyncio.to_thread(
            wait_for,
            lambda: g.zone_sync("zone-raw")["conflictCount"] == 1,
            10,
            "the last report taken",
        )
        events = g.get_json("/zones/zone-raw/events?limit=1000")["events"]
        out["conflict_events"] = sum(1 for e in events if e["type"] == "conflicts")
        out["flip_seconds"] = time.monotonic() - started
        rejected = [
            pb.Rejection(key=pb.ResourceKey(kind=pb.GLOBAL_SECRET, name=f"g-{i}"), reason="no")
            for i in range(20_000)
        ]
        ack = pb.Ack(seq=batch.seq, applied_revision=batch.revision, rejected=rejected)
        await call.write(pb.ZoneMessage(ack=ack).SerializeToString())
        out["flood"] = await _ended(call)

        call = open_stream(token)  # random bytes after a hello
        await call.write(_hello("zone-raw", "zone-raw-1"))
        await _read_batches(call)()
        await call.write(b"\xff\xfe garbage \x00\x01")
        out["garbage"] = await _ended(call)

        old = open_stream(token)  # the same instance dials again: the old stream is ended
        await old.write(_hello("zone-raw", "zone-raw-1"))
        await _read_batches(old)()
        new = open_stream(token)
        await new.write(_hello("zone-raw", "zone-raw-1"))
        await _read_batches(new)()
        out["replaced"] = await _ended(old, 5)
        new.cancel()
        return out

    size = _log_size(g)
    out = _with_channel(cluster, flood)
    z = g.zone_sync("zone-raw")
    assert len(out["kept"]) == 100 and out["kept"][0] == "Secret:default/conflict-0"
    assert z["conflicts"] == ["Secret:default/f-0"]  # the last report taken
    code, details = out["flood"]
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    # Batch 1 is a snapshot's final part: its ack may also refuse up to 1,000 removals.
    assert details == "ack for batch 1 rejects 20000 resources but the batch allows 1001"
    assert sum(z["resources"][k]["rejected"] for k in z["resources"]) == 0
    assert not g.events("zone rejected a resource") and not g.events("zone rejected resources")
    reported = g.events("zone reported conflicts", zone="zone-raw")
    assert reported[0]["count"] == 30_000
    # 2,001 reports sent in a burst: about one taken a second, the last one among them.
    assert out["conflict_events"] <= 2 + out["flip_seconds"], out
    assert len(reported[0]["conflicts"]) == 10
    code, details = out["garbage"]
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "is not a ZoneMessage" in details
    code, details = out["replaced"]
    assert code is grpc.StatusCode.ABORTED, (code, details)
    assert details == "replaced by a new stream from the same zone instance"
    assert _log_size(g) - size < 65_536
    # What the status page and kdsctl read stays small.
    r = httpx.get(
        f"{g.api_url}/zones/zone-raw/_overview",
        headers={"Authorization": f"Bearer {g.admin_token}"},
    )
    assert len(r.content) < 16_384


def test_a_zone_sending_large_reports_non_stop_is_read_slower_not_cut_off(
    cluster: Cluster,
) -> None:
    """Each stream is read against a byte budget (kds.protocol.read_budget): past its burst,
    a zone sending 1 MiB status reports as fast as it can has them read at RATE bytes a
    second, its writes held by flow control, and its stream stays up. Without the budget,
    global read 3,000 such MiBs in 11 s (4 MiB reports), at 77% CPU."""
    g = cluster.start_global()
    token = cluster.zone_token("zone-raw").read_text().strip()
    one = pb.ResourceKey(kind=pb.SECRET, mesh="default", name="c-000000").ByteSize() + 2
    large = pb.ZoneMessage(
        status=pb.ZoneStatus(
            conflicts=[
                pb.ResourceKey(kind=pb.SECRET, mesh="default", name=f"c-{i:06d}")
                for i in range(1024 * 1024 // one)
            ]
        )
    ).SerializeToString()
    last = pb.ZoneStatus(conflicts=[pb.ResourceKey(kind=pb.SECRET, mesh="default", name="z")])
    flood_seconds = 6.0

    async def flood(open_stream: Any) -> dict[str, Any]:
        call = open_stream(token)
        await call.write(_hello("zone-raw", "zone-raw-1"))
        batch = await _read_batches(call)()
        ack = pb.Ack(seq=batch.seq, applied_revision=batch.revision)
        await call.write(pb.ZoneMessage(ack=ack).SerializeToString())
        written = 0
        stop = asyncio.Event()

        async def writer() -> None:
            nonlocal written
            while not stop.is_set():
                await call.write(large)  # held by flow control while global waits
                written += 1
            # The stream is slowed, not ended: a small report after the flood is taken.
            await call.write(pb.ZoneMessage(status=last).SerializeToString())

        task = asyncio.create_task(writer())
        await asyncio.sleep(flood_seconds)
        stop.set()
        out = {"written": written}
        await asyncio.wait_for(task, 30)
        await asyncio.to_thread(
            wait_for,
            lambda: g.zone_sync("zone-raw")["conflicts"] == ["Secret:default/z"],
            30,
            "the report after the flood taken",
        )
        out["status"] = g.zone_sync("zone-raw")["status"]
        call.cancel()
        return out

    out = _with_channel(cluster, flood)
    # Read by global: its burst, then RATE bytes a second; written by the client: those and
    # what gRPC buffers on the way (a report or two). Without the budget, thousands.
    read_at_most = (BURST + RATE * flood_seconds) / len(large) + 1
    assert out["written"] <= read_at_most + 2, out
    assert out["status"] == "Online"
    slowed = g.events(
        "zone sends more than its stream's budget: reading it slower", zone="zone-raw"
    )
    assert slowed and slowed[0]["budget_bytes_per_second"] == RATE, slowed
    assert len(slowed) == 1  # logged once a minute per stream, not once a report
    # Every wait counted for the zone: most of the flood past its burst was waiting.
    waited = _metric(g, 'kds_global_zone_read_slowed_seconds_total{zone="zone-raw"}')
    assert 1.0 <= waited <= flood_seconds + 30, waited
    overview = g.get_json("/zones/zone-raw/_overview")
    assert overview["kdsSync"]["readSlowedSeconds"] >= waited, overview
    assert not g.events("zone broke the protocol")


def test_a_zone_past_its_streams_per_interval_is_refused_before_its_hello_is_read(
    cluster: Cluster,
) -> None:
    """A token's stream beyond its zone's STREAMS_PER_ZONE in an interval is refused before
    global reads its hello: one sending no hello at all is refused at once, not after the
    10 s a hello may take. Refused after the hello, 4 MiB hellos on 4 streams at a time took
    global to 61-64% CPU and 1.1 GB; now 40-50% and 100-200 MB."""
    g = cluster.start_global()
    token = cluster.zone_token("zone-raw").read_text().strip()

    async def dial(open_stream: Any) -> tuple[int, tuple[grpc.StatusCode, str], float]:
        admitted = 0
        for _ in range(STREAMS_PER_ZONE):
            call = open_stream(token)
            await call.write(_hello("zone-raw", "zone-raw-1"))
            await _read_batches(call)()
            admitted += 1
            call.cancel()
        call = open_stream(token)  # no hello
        started = time.monotonic()
        ended = await asyncio.wait_for(_ended(call, 8), 9)
        return admitted, ended, time.monotonic() - started

    admitted, (code, details), took = _with_channel(cluster, dial)
    assert admitted == STREAMS_PER_ZONE
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert details == (
        f"zone 'zone-raw' started {STREAMS_PER_ZONE} streams within 10 s: dial again in a few "
        "seconds"
    )
    assert took < 5, took  # not the 10 s global waits for a hello
    assert len(g.events("zone refused: dialling too often", zone="zone-raw")) == 1
