"""A zone writes its hello only after global's headers admit the stream, over real loopback
gRPC. Global refuses a bad token before it reads the hello, with a status alone; a hello
written as that refusal arrived failed as grpc's "INTERNAL: Internal error from Core", the
reason lost (15 of 300 dials here), and the zone showed that as its last error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from kds._pb import sync_pb2 as pb
from kds.store.sqlite import SqliteZoneStore, ZoneEngine
from kds.wire import ADMITTED_METADATA
from zonecp import dial
from zonecp.client import METHOD, ZoneClient
from zonecp.dial import StreamEnded

Handler = Callable[[Any, grpc.aio.ServicerContext], Any]


@asynccontextmanager
async def _global(handler: Handler) -> AsyncIterator[int]:
    """A loopback server answering the sync method with ``handler``; its port."""
    server = grpc.aio.server()
    service, method = METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                service, {method: grpc.stream_stream_rpc_method_handler(handler)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@asynccontextmanager
async def _zone(tmp_path: Path, port: int) -> AsyncIterator[ZoneClient]:
    engine = ZoneEngine(tmp_path / "zone.db")
    store = SqliteZoneStore(engine)
    try:
        yield ZoneClient(
            store,
            zone="zone-1",
            global_address=f"grpc://127.0.0.1:{port}",
            software_version="test",
            max_message_bytes=1 << 20,
            keepalive_interval=5,
            keepalive_timeout=5,
            reconnect_max_delay=1,
            insecure=True,
        )
    finally:
        store.close()


async def _refusal(client: ZoneClient, *, before_hello: bool = True) -> str:
    """The end of one dial as the zone logs and shows it. A refusal before the hello comes
    from waiting for the headers (StreamEnded); one after, from a read (the call's error)."""
    ended = StreamEnded if before_hello else grpc.aio.AioRpcError
    with pytest.raises(ended) as e:
        await client._stream_once(asyncio.Event())
    return dial.describe(e.value)


async def test_a_refusal_before_the_hello_always_reaches_the_zone_with_its_reason(
    tmp_path: Path,
) -> None:
    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no zone token")

    async with _global(refuse) as port, _zone(tmp_path, port) as client:
        seen = [await _refusal(client) for _ in range(100)]
    assert set(seen) == {"UNAUTHENTICATED: no zone token"}


async def test_an_admitted_stream_gets_its_hello_and_a_later_refusal_still_reads_as_itself(
    tmp_path: Path,
) -> None:
    hellos: list[str] = []

    async def admit_then_refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.send_initial_metadata(((ADMITTED_METADATA, "1"),))
        msg = pb.ZoneMessage.FromString(await context.read())
        hellos.append(msg.hello.zone)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "issued for zone 'zone-2'")

    async with _global(admit_then_refuse) as port, _zone(tmp_path, port) as client:
        for _ in range(20):
            assert (
                await _refusal(client, before_hello=False)
                == "PERMISSION_DENIED: issued for zone 'zone-2'"
            )
    assert hellos == ["zone-1"] * 20


async def test_a_global_that_sends_no_headers_before_the_hello_still_gets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A global of an earlier release answers only after the hello: the zone writes it once
    ADMISSION_WAIT_S has passed without headers."""
    monkeypatch.setattr(dial, "ADMISSION_WAIT_S", 0.3)
    waited: list[float] = []

    async def older_global(requests: Any, context: grpc.aio.ServicerContext) -> None:
        started = time.monotonic()
        msg = pb.ZoneMessage.FromString(await context.read())
        waited.append(time.monotonic() - started)
        assert msg.WhichOneof("msg") == "hello"
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stop here")

    async with _global(older_global) as port, _zone(tmp_path, port) as client:
        assert await _refusal(client, before_hello=False) == "FAILED_PRECONDITION: stop here"
    assert len(waited) == 1 and 0.25 <= waited[0] < 3
