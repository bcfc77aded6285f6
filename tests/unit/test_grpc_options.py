"""The sync port's server options, as grpc applies them: one connection, token or not, holds
at most MAX_STREAMS_PER_CONNECTION streams at once (its further streams wait for a free one),
so a client cannot make global hold a handler per stream by the thousand; and each client
channel has a connection of its own, so clients in one process never queue behind that
limit; and a stream whose handler does not read holds no more than its first HTTP/2 window."""

from __future__ import annotations

import asyncio
import contextlib
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


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([ftype, flags])
        + stream.to_bytes(4, "big")
        + payload
    )


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field, not indexed (names and values under 127 bytes)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


async def _bytes_taken_unread(port: int, seconds: float) -> int:
    """Open a stream by hand, announce a 4 MiB message and send as much of it as the server's
    HTTP/2 windows let through while its handler never reads: how many bytes that was."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = b"".join(
        _literal(k, v)
        for k, v in [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", METHOD.encode()),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
    )
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0) + _frame(1, 4, 1, headers))
    windows = {"conn": 65_535, "stream": 65_535}
    opened = asyncio.Event()

    async def read_frames() -> None:
        while True:
            head = await reader.readexactly(9)
            payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
            ftype, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big")
            if ftype == 4 and not flags & 1:  # SETTINGS: ack; its initial window
                for i in range(0, len(payload), 6):
                    if int.from_bytes(payload[i : i + 2], "big") == 4:
                        windows["stream"] = int.from_bytes(payload[i + 2 : i + 6], "big")
                writer.write(_frame(4, 1, 0))
            elif ftype == 8:  # WINDOW_UPDATE
                windows["stream" if stream else "conn"] += int.from_bytes(payload, "big")
                opened.set()

    frames = asyncio.create_task(read_frames())
    sent, loop = 0, asyncio.get_running_loop()
    body = b"\x00" + (4 << 20).to_bytes(4, "big") + b"x" * (4 << 20)
    deadline = loop.time() + seconds
    try:
        while loop.time() < deadline and sent < len(body):
            room = min(windows["conn"], windows["stream"], 16_384, len(body) - sent)
            if room <= 0:
                opened.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(opened.wait(), max(0.01, deadline - loop.time()))
                continue
            writer.write(_frame(0, 0, 1, body[sent : sent + room]))
            windows["conn"] -= room
            windows["stream"] -= room
            sent += room
            await writer.drain()
    finally:
        frames.cancel()
        writer.close()
    return sent


async def test_a_stream_nobody_reads_holds_at_most_its_first_window() -> None:
    """grpc's bandwidth-delay probes grew the window of a stream whose handler never read:
    256 such streams took global to 538 MB. Global waits to read a stream's hello until its
    token verified, so the data a stream may send before that is its first window."""
    async with holding_server(8) as holder:
        taken = await _bytes_taken_unread(holder.port, 2.0)
    assert taken <= 128 << 10, taken
