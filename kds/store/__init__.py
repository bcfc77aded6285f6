"""Stores behind one typed async interface (kds.store.interface), and how to open one.

Callers open a store with ``open_global_store`` or ``open_zone_store`` and depend only on the
``GlobalStore`` / ``ZoneStore`` Protocols. The SQLite backend's calls block (SQLite fsyncs on
commit), so ``ThreadedStore`` runs writes on one thread, serialized, and reads on another, so
a large snapshot read never delays a write's acknowledgement for long and never blocks the
event loop. Callers only await its methods.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kds.crypto import DataCipher
from kds.model import Key, Kind, Resource
from kds.store.base import (
    ORIGIN_GLOBAL,
    ORIGIN_ZONE,
    ChangeRecord,
    Row,
    Snapshot,
    SyncState,
    WriteResult,
    ZoneApplyResult,
)
from kds.store.interface import GlobalStore, OnCommit, ResourceStore, ZoneStore
from kds.store.sqlite import DEFAULT_LOG_SIZE, SqliteStore

if TYPE_CHECKING:
    from kds.protocol.applier import DecodedBatch

__all__ = [
    "DEFAULT_LOG_SIZE",
    "ORIGIN_GLOBAL",
    "ORIGIN_ZONE",
    "ChangeRecord",
    "GlobalStore",
    "OnCommit",
    "ResourceStore",
    "Row",
    "Snapshot",
    "SqliteStore",
    "SyncState",
    "ThreadedStore",
    "WriteResult",
    "ZoneApplyResult",
    "ZoneStore",
    "open_global_store",
    "open_zone_store",
]

T = TypeVar("T")


def open_global_store(
    path: str | Path,
    *,
    log_size: int = DEFAULT_LOG_SIZE,
    max_message_bytes: int | None = None,
    cipher: DataCipher | None = None,
    on_commit: OnCommit | None = None,
    clock: Callable[[], float] = time.time,
) -> GlobalStore:
    """Global's store in the SQLite file ``path`` (made if missing)."""
    return ThreadedStore(
        SqliteStore(
            path,
            "global",
            log_size=log_size,
            max_message_bytes=max_message_bytes,
            cipher=cipher,
            on_commit=on_commit,
            clock=clock,
        )
    )


def open_zone_store(
    path: str | Path, *, cipher: DataCipher | None = None, on_commit: OnCommit | None = None
) -> ZoneStore:
    """A zone's store in the SQLite file ``path`` (made if missing)."""
    return ThreadedStore(SqliteStore(path, "zone", cipher=cipher, on_commit=on_commit))


class ThreadedStore:
    """A blocking store behind the async interfaces: writes on one thread, reads on another.

    Implements both GlobalStore and ZoneStore; the engine's role refuses what its role has
    no table for."""

    def __init__(self, engine: SqliteStore):
        self.engine = engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-read")

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def location(self) -> str:
        return str(self.engine.path)

    @property
    def store_id(self) -> str:
        return self.engine.store_id

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args))

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._writer, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._reader, fn, *args)

    # ------------------------------------------------------------------ both roles

    async def get(self, key: Key) -> Row | None:
        return await self._read(self.engine.get, key)

    async def page(
        self, kind: Kind, mesh: str | None = None, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Row]]:
        return await self._read(self.engine.page, kind, mesh, offset, limit)

    async def list_rows(self, kind: Kind, mesh: str | None = None) -> list[Row]:
        return await self._read(self.engine.list_rows, kind, mesh)

    async def conflicts(self) -> list[Key]:
        return await self._read(self.engine.conflicts)

    async def counts(self) -> dict[str, dict[str, int]]:
        return await self._read(self.engine.counts)

    async def put(self, resource: Resource, now: str) -> WriteResult:
        return await self._write(self.engine.put, resource, now)

    async def put_many(self, resources: Sequence[Resource], now: str) -> list[WriteResult]:
        return await self._write(self.engine.put_many, resources, now)

    async def delete(self, key: Key) -> WriteResult:
        return await self._write(self.engine.delete, key)

    def close(self) -> None:
        self._writer.submit(self.engine.close).result()
        self._reader.submit(self.engine.close).result()
        self._writer.shutdown()
        self._reader.shutdown()

    # ------------------------------------------------------------------ global

    async def head(self) -> int:
        return await self._read(self.engine.head)

    async def log_floor(self) -> int:
        return await self._read(self.engine.log_floor)

    async def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        return await self._read(self.engine.changes_after, revision, upto)

    async def chain_at(self, revision: int) -> bytes | None:
        return await self._read(self.engine.chain_at, revision)

    async def snapshot(self) -> Snapshot:
        return await self._read(self.engine.snapshot)

    async def commit_time(self, revision: int) -> float | None:
        return await self._read(self.engine.commit_time, revision)

    async def zone_statuses(self) -> dict[str, str]:
        return await self._read(self.engine.zone_statuses)

    async def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        await self._write(self.engine.save_zone_statuses, statuses)

    async def internal_secrets(self, prefix: str = "") -> dict[str, bytes]:
        return await self._read(self.engine.internal_secrets, prefix)

    async def put_internal_secret(self, name: str, data: bytes, now: str) -> None:
        await self._write(self.engine.put_internal_secret, name, data, now)

    async def delete_internal_secret(self, name: str) -> bool:
        return await self._write(self.engine.delete_internal_secret, name)

    async def add_zone_token(
        self, token_id: str, zone: str, key_name: str, issued: str, expires: str
    ) -> None:
        await self._write(self.engine.add_zone_token, token_id, zone, key_name, issued, expires)

    async def revoke_zone_token(self, token_id: str, now: str) -> dict[str, str] | None:
        return await self._write(self.engine.revoke_zone_token, token_id, now)

    async def zone_tokens(self) -> list[dict[str, str]]:
        return await self._read(self.engine.zone_tokens)

    # ------------------------------------------------------------------ zone

    async def sync_state(self) -> SyncState:
        return await self._read(self.engine.sync_state)

    async def apply_batch(
        self, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        return await self._write(self.engine.apply_batch, batch, global_store_id, now)
