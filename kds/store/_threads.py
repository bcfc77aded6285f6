"""The async stores over a blocking engine: writes on one thread, reads on another.

Both backends' engines block (SQLite fsyncs on commit; psycopg's connections are
synchronous, and kds.integrity reads the writing transaction synchronously), so one generic
store serves both: ``ThreadedGlobalStore`` / ``ThreadedZoneStore`` implement
kds.store.interface's ``GlobalStore`` / ``ZoneStore`` by handing each call to its engine
(kds.store._global, ._zone) on the writer or the reader thread. Writes are serialized on
the writer thread (a transaction, its commit and its ``on_commit`` hook run there, in
order); reads run on the reader thread, so a large snapshot read never delays a write's
acknowledgement for long and never blocks the event loop. Callers only await.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from kds.model import Key, Kind, Resource
from kds.protocol.applier import DecodedBatch
from kds.store._engine import ResourceEngine
from kds.store._global import GlobalEngine
from kds.store._names import secrets_named
from kds.store._zone import ZoneEngine
from kds.store.results import (
    ChangeRecord,
    LeafChanges,
    Row,
    Selection,
    Snapshot,
    SyncLeaves,
    SyncState,
    WriteResult,
    ZoneApplyResult,
    ZoneEvent,
)

__all__ = ["ThreadedGlobalStore", "ThreadedResourceStore", "ThreadedZoneStore", "Threads"]

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
        """Let the reads and writes already submitted end, then run ``close`` on each thread
        (to release what it holds) and stop both. ``close`` closes every thread's
        connection: run while the other thread was in a query (a snapshot read for a zone
        whose stream had just ended), it crashed the process with SIGSEGV. Called from the
        event loop's thread, which submits nothing while it waits here."""
        for pending in (self._writer.submit(_nothing), self._reader.submit(_nothing)):
            pending.result()
        self._writer.submit(close).result()
        self._reader.submit(close).result()
        self._writer.shutdown()
        self._reader.shutdown()


def _nothing() -> None:
    """Submitted to a thread to wait for the work queued on it before."""


E = TypeVar("E", bound=ResourceEngine)
G = TypeVar("G", bound=GlobalEngine)
Z = TypeVar("Z", bound=ZoneEngine)


class ThreadedResourceStore(Generic[E]):
    """What both roles' async stores share (kds.store.interface.ResourceStore)."""

    def __init__(self, engine: E):
        self._engine = engine
        self._threads = Threads()

    @property
    def backend(self) -> str:
        return self._engine.backend

    @property
    def location(self) -> str:
        return self._engine.location

    @property
    def store_id(self) -> str:
        return self._engine.store_id

    async def get(self, key: Key) -> Row | None:
        return await self._threads.read(self._engine.get, key)

    async def page(
        self,
        kind: Kind,
        mesh: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        select: Selection | None = None,
    ) -> tuple[int, list[Row]]:
        return await self._threads.read(self._engine.page, kind, mesh, offset, limit, select)

    async def list_rows(self, kind: Kind, mesh: str | None = None) -> list[Row]:
        return await self._threads.read(self._engine.list_rows, kind, mesh)

    async def secrets_named(self, names: Collection[str]) -> list[Key]:
        return await self._threads.read(secrets_named, self._engine, names)

    async def conflicts(self) -> list[Key]:
        return await self._threads.read(self._engine.conflicts)

    async def counts(self) -> dict[str, dict[str, int]]:
        return await self._threads.read(self._engine.counts)

    async def sync_leaves(self) -> SyncLeaves:
        return await self._threads.read(self._engine.sync_leaves)

    async def sync_leaves_into(self, take: Callable[[Key, bytes], None]) -> int:
        return await self._threads.read(self._engine.sync_leaves_into, take)

    async def put(self, resource: Resource, now: str) -> WriteResult:
        return await self._threads.write(self._engine.put, resource, now)

    async def put_many(
        self, resources: Sequence[Resource], now: str, kubernetes: Collection[int] = ()
    ) -> list[WriteResult]:
        return await self._threads.write(self._engine.put_many, resources, now, kubernetes)

    async def delete(self, key: Key) -> WriteResult:
        return await self._threads.write(self._engine.delete, key)

    def close(self) -> None:
        self._threads.close(self._engine.close)


class ThreadedGlobalStore(ThreadedResourceStore[G]):
    """Global's store (kds.store.interface.GlobalStore) on a GlobalEngine."""

    async def versions_page(self, kind: Kind, limit: int) -> tuple[int, list[tuple[Key, int]]]:
        return await self._threads.read(self._engine.versions_page, kind, limit)

    async def head(self) -> int:
        return await self._threads.read(self._engine.head)

    async def log_floor(self) -> int:
        return await self._threads.read(self._engine.log_floor)

    async def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        return await self._threads.read(self._engine.changes_after, revision, upto)

    async def chain_at(self, revision: int) -> bytes | None:
        return await self._threads.read(self._engine.chain_at, revision)

    async def sync_leaves_since(self, revision: int, most: int) -> LeafChanges | None:
        return await self._threads.read(self._engine.sync_leaves_since, revision, most)

    async def snapshot(self) -> Snapshot:
        return await self._threads.read(self._engine.snapshot)

    async def snapshot_units(self, take: Callable[[list[ChangeRecord]], None]) -> tuple[int, bytes]:
        return await self._threads.read(self._engine.snapshot_units, take)

    async def commit_time(self, revision: int) -> float | None:
        return await self._threads.read(self._engine.commit_time, revision)

    async def zone_statuses(self) -> dict[str, str]:
        return await self._threads.read(self._engine.zone_statuses)

    async def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        await self._threads.write(self._engine.save_zone_statuses, statuses)

    async def add_zone_events(self, events: Sequence[ZoneEvent], keep: int) -> None:
        await self._threads.write(self._engine.add_zone_events, events, keep)

    async def prune_zone_events(self, seen_since: float, total: int) -> int:
        return await self._threads.write(self._engine.prune_zone_events, seen_since, total)

    async def zone_events(
        self, zone: str, kind: str, since: float = 0.0, limit: int = 1000
    ) -> list[ZoneEvent]:
        return await self._threads.read(self._engine.zone_events, zone, kind, since, limit)

    async def internal_secrets(self, prefix: str = "") -> dict[str, bytes]:
        return await self._threads.read(self._engine.internal_secrets, prefix)

    async def put_internal_secret(self, name: str, data: bytes, now: str) -> None:
        await self._threads.write(self._engine.put_internal_secret, name, data, now)

    async def add_internal_secrets(self, secrets: dict[str, bytes], now: str) -> dict[str, bytes]:
        return await self._threads.write(self._engine.add_internal_secrets, secrets, now)

    async def delete_internal_secret(self, name: str) -> bool:
        return await self._threads.write(self._engine.delete_internal_secret, name)

    async def add_zone_token(
        self, token_id: str, zone: str, key_name: str, issued: str, expires: str
    ) -> None:
        await self._threads.write(
            self._engine.add_zone_token, token_id, zone, key_name, issued, expires
        )

    async def revoke_zone_token(self, token_id: str, now: str) -> dict[str, str] | None:
        return await self._threads.write(self._engine.revoke_zone_token, token_id, now)

    async def zone_tokens(self) -> list[dict[str, str]]:
        return await self._threads.read(self._engine.zone_tokens)


class ThreadedZoneStore(ThreadedResourceStore[Z]):
    """A zone's store (kds.store.interface.ZoneStore) on a ZoneEngine."""

    async def sync_state(self) -> SyncState:
        return await self._threads.read(self._engine.sync_state)

    async def bind_zone(self, zone: str) -> str:
        return await self._threads.write(self._engine.bind_zone, zone)

    async def apply_batch(
        self, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        return await self._threads.write(self._engine.apply_batch, batch, global_store_id, now)
