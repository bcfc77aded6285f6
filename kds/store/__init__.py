"""Stores behind one interface, and AsyncStore, which runs a store off the event loop.

A store's methods block (SQLite fsyncs on commit). AsyncStore runs writes on one thread, so
they are serialized, and reads on another, so a large snapshot read never delays a write's
acknowledgement for long and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kds.store.base import (
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    Row,
    Snapshot,
    Store,
    SyncState,
    WriteResult,
    ZoneApplyResult,
)
from kds.store.sqlite import DEFAULT_LOG_SIZE, SqliteStore

__all__ = [
    "DEFAULT_LOG_SIZE",
    "ORIGIN_GLOBAL",
    "ORIGIN_ZONE",
    "AsyncStore",
    "ChangeRecord",
    "Row",
    "Snapshot",
    "SqliteStore",
    "Store",
    "SyncState",
    "WriteResult",
    "ZoneApplyResult",
]

T = TypeVar("T")


class AsyncStore:
    def __init__(self, store: SqliteStore):
        self.sync = store
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-read")

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._writer, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._reader, fn, *args)

    def close(self) -> None:
        self._writer.submit(self.sync.close).result()
        self._reader.submit(self.sync.close).result()
        self._writer.shutdown()
        self._reader.shutdown()
