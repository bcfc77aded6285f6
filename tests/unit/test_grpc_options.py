"""The sync port's server options, as grpc applies them: one connection, token or not, holds
at most MAX_STREAMS_PER_CONNECTION streams at once (its further streams wait for a free one),
so a client cannot make global hold a handler per stream by the thousand; and each client
channel has a connection of its own, so clients in one process never queue behind that
limit."""

from __future__ import annotations

import asyncio

import grpc

from kds.grpc_options import MAX_STREAMS_PER_CONNECTION, client_options, server_options

METHOD = "/test.Hold/Hold"


async def test_one_connection_holds_at_most_the_streams_it_may_have() -> None:
    running = 0
    most = 0
    release = asyncio.Event()

    async def hold(requests: object, context: grpc.aio.ServicerContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await release.wait()
        finally:
            running -= 1

    handler = grpc.method_handlers_generic_handler(
        "test.Hold", {"Hold": grpc.stream_stream_rpc_method_handler(hold)}
    )
    server = grpc.aio.server(options=server_options(4 << 20, 5.0, 2.0, 16))
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=client_options(4 << 20, 5.0, 2.0)
        ) as channel:
            calls = [channel.stream_stream(METHOD)() for _ in range(40)]
            for _ in range(100):  # until the first streams reached their handlers
                if running >= MAX_STREAMS_PER_CONNECTION:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # room for any stream beyond the limit to arrive
            assert most == MAX_STREAMS_PER_CONNECTION
            release.set()
            for call in calls:
                call.cancel()
    finally:
        await server.stop(0)


async def test_each_client_channel_has_a_connection_of_its_own() -> None:
    """Ten channels of one process to one address, with the zone's options, each hold a
    stream at once: grpc would share one connection among them otherwise, and streams past
    the per-connection limit would wait."""
    running = 0
    release = asyncio.Event()

    async def hold(requests: object, context: grpc.aio.ServicerContext) -> None:
        nonlocal running
        running += 1
        try:
            await release.wait()
        finally:
            running -= 1

    handler = grpc.method_handlers_generic_handler(
        "test.Hold", {"Hold": grpc.stream_stream_rpc_method_handler(hold)}
    )
    server = grpc.aio.server(options=server_options(4 << 20, 5.0, 2.0, 64))
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options(4 << 20, 5.0, 2.0))
        for _ in range(10)
    ]
    try:
        calls = [ch.stream_stream(METHOD)() for ch in channels]
        for _ in range(250):
            if running == len(channels):
                break
            await asyncio.sleep(0.02)
        assert running == len(channels)
        release.set()
        for call in calls:
            call.cancel()
    finally:
        for ch in channels:
            await ch.close()
        await server.stop(0)
