"""A blocking engine's calls, run off the event loop: writes on one thread, reads on another.

Writes are serialized on the writer thread (a transaction, its commit and its ``on_commit``
hook run there, in order); reads run on the reader thread, so a large snapshot read never
delays a write's acknowledgement for long and never blocks the event loop. A backend whose
calls block builds its async store on this; callers of the store never see it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Threads"]

T = TypeVar("T")


class Threads:
    """One writer thread and one reader thread."""

    def __init__(self) -> None:
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-read")

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(fn, *args))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, functools.partial(fn, *args))

    def close(self, close: Callable[[], object]) -> None:
        """Run ``close`` on each thread (to release what it holds), then stop both."""
        self._writer.submit(close).result()
        self._reader.submit(close).result()
        self._writer.shutdown()
        self._reader.shutdown()
