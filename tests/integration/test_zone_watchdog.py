"""A zone whose stream goes silent (global stuck, not dead) ends it and dials again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from kds._pb import sync_pb2 as pb
from tests.integration.conftest import Cluster, free_port, wait_for

pytestmark = pytest.mark.integration


class StuckGlobal:
    """A fake global: welcomes every zone, promises 200 ms heartbeats, then sends nothing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.streams = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(5)

    async def _sync(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        hello = await context.read()
        assert hello.WhichOneof("msg") == "hello"
        self.streams += 1
        yield pb.GlobalMessage(
            welcome=pb.Welcome(
                global_instance_id="stuck",
                global_store_id="stuck-store",
                mode=pb.Welcome.SNAPSHOT,
                max_unacked=1,
                protocol_version=1,
                heartbeat_interval_ms=200,
            )
        )
        await asyncio.sleep(3600)  # stuck: the TCP link and keepalive pings stay healthy

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self.server = grpc.aio.server()
            handler = grpc.method_handlers_generic_handler(
                "kds.v1.SecretSync",
                {
                    "Sync": grpc.stream_stream_rpc_method_handler(
                        self._sync,
                        request_deserializer=pb.ZoneMessage.FromString,
                        response_serializer=pb.GlobalMessage.SerializeToString,
                    )
                },
            )
            self.server.add_generic_rpc_handlers([handler])
            self.server.add_insecure_port(f"127.0.0.1:{self.port}")
            await self.server.start()
            ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)


def test_zone_reconnects_when_global_goes_silent(cluster: Cluster) -> None:
    """With 200 ms heartbeats promised and none sent, the zone drops the stream after about
    0.6 s, logs why, and dials again: a stuck stream never passes for a live one."""
    fake = StuckGlobal()
    try:
        z = cluster.start_zone(
            "zone-1",
            "--global-address",
            f"grpc://127.0.0.1:{fake.port}",
            "--insecure",  # the fake global serves plaintext
            synced=False,
            token_file=Path("/nonexistent"),
        )
        z.wait_event("global went silent: reconnecting", timeout=10)
        wait_for(lambda: fake.streams >= 3, timeout=15, what="repeated reconnects")
    finally:
        fake.close()
