"""The sync port's server options, as grpc applies them: one connection, token or not, holds
at most MAX_STREAMS_PER_CONNECTION streams at once (its further streams wait for a free one),
so a client cannot make global hold a handler per stream by the thousand; and each client
channel has a connection of its own, so clients in one process never queue behind that
limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from kds.grpc_options import MAX_STREAMS_PER_CONNECTION, client_options, server_options

METHOD = "/test.Hold/Hold"


class Holder:
    """A server whose one method holds each stream until ``release`` is set, counting the
    streams that reached it (running now, and the most at once)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.port = 0

    async def hold(self, requests: object, context: grpc.aio.ServicerContext) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1

    async def until(self, streams: int) -> None:
        """Wait (up to 5 s) for ``streams`` streams to reach the handler."""
        for _ in range(250):
            if self.running >= streams:
                return
            await asyncio.sleep(0.02)


@asynccontextmanager
async def holding_server(max_connections: int) -> AsyncIterator[Holder]:
    holder = Holder()
    handler = grpc.method_handlers_generic_handler(
        "test.Hold", {"Hold": grpc.stream_stream_rpc_method_handler(holder.hold)}
    )
    server = grpc.aio.server(options=server_options(4 << 20, 5.0, 2.0, max_connections))
    server.add_generic_rpc_handlers([handler])
    holder.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield holder
    finally:
        holder.release.set()
        await server.stop(0)


def _channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options(4 << 20, 5.0, 2.0))


async def test_one_connection_holds_at_most_the_streams_it_may_have() -> None:
    async with holding_server(16) as server, _channel(server.port) as channel:
        calls: list[grpc.aio.StreamStreamCall] = [
            channel.stream_stream(METHOD)() for _ in range(40)
        ]
        await server.until(MAX_STREAMS_PER_CONNECTION)  # the first streams reached it
        await asyncio.sleep(0.5)  # room for any stream beyond the limit to arrive
        assert server.most == MAX_STREAMS_PER_CONNECTION
        for call in calls:
            call.cancel()


async def test_each_client_channel_has_a_connection_of_its_own() -> None:
    """Ten channels of one process to one address, with the zone's options, each hold a
    stream at once: grpc would share one connection among them otherwise, and streams past
    the per-connection limit would wait."""
    async with holding_server(64) as server:
        channels = [_channel(server.port) for _ in range(10)]
        try:
            calls: list[grpc.aio.StreamStreamCall] = [ch.stream_stream(METHOD)() for ch in channels]
            await server.until(len(channels))
            assert server.running == len(channels)
            for call in calls:
                call.cancel()
        finally:
            for ch in channels:
                await ch.close()
