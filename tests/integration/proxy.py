"""A small TCP proxy between a zone and global, for cutting links in tests.

Runs its own asyncio loop in a thread, listens on a loopback port and forwards to global.
``cut()`` resets every live connection (both ends see the link die); ``down()`` also refuses
new ones until ``up()``. No privileges needed, so it runs in CI.

``resets`` counts the links a cut killed while they were live (a cut that lands while the zone
is between reconnect attempts kills nothing) and ``live`` the links open now: a test that
wants to know a cut really hit the zone, and that the zone came back, reads those two.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class Proxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._accepting = True
        self.resets = 0
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._accepting:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def _call(self, fn: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(fn, self._loop)  # type: ignore[arg-type]
        fut.result(5)

    async def _cut(self) -> None:
        self.resets += len(self._writers) // 2  # each link holds a writer at either end
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    @property
    def live(self) -> int:
        """Links open through the proxy right now."""
        return len(self._writers) // 2

    def cut(self) -> None:
        """Reset every live connection through the proxy."""
        self._call(self._cut())

    def down(self) -> None:
        """Cut the link and refuse new connections (a partition)."""
        self._accepting = False
        self.cut()

    def up(self) -> None:
        self._accepting = True

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
