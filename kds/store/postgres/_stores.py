"""The async PostgreSQL stores the daemons use: ``PgGlobalStore`` and ``PgZoneStore``.

Each wraps its role's blocking engine (psycopg's synchronous connections, from a pool) and
runs every call on a writer or a reader thread (kds.store._threads), as the SQLite stores
do: kds.integrity reads the writing transaction synchronously. Callers only await the
methods of kds.store.interface's ``GlobalStore`` / ``ZoneStore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from kds.model import Key, Kind, Resource
from kds.protocol.applier import DecodedBatch
from kds.store._threads import Threads
from kds.store.postgres._global import PgGlobalEngine
from kds.store.postgres._leader import Leadership
from kds.store.postgres._listen import OnEvent, listen
from kds.store.postgres._resources import PgResourceEngine
from kds.store.postgres._zone import PgZoneEngine
from kds.store.results import (
    ChangeRecord,
    Row,
    Snapshot,
    SyncLeaves,
    SyncState,
    WriteResult,
    ZoneApplyResult,
    ZoneEvent,
)

__all__ = ["PgGlobalStore", "PgZoneStore"]

E = TypeVar("E", bound=PgResourceEngine)


class _PgResourceStore(Generic[E]):
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
        self, kind: Kind, mesh: str | None = None, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Row]]:
        return await self._threads.read(self._engine.page, kind, mesh, offset, limit)

    async def list_rows(self, kind: Kind, mesh: str | None = None) -> list[Row]:
        return await self._threads.read(self._engine.list_rows, kind, mesh)

    async def conflicts(self) -> list[Key]:
        return await self._threads.read(self._engine.conflicts)

    async def counts(self) -> dict[str, dict[str, int]]:
        return await self._threads.read(self._engine.counts)

    async def put(self, resource: Resource, now: str) -> WriteResult:
        return await self._threads.write(self._engine.put, resource, now)

    async def put_many(self, resources: Sequence[Resource], now: str) -> list[WriteResult]:
        return await self._threads.write(self._engine.put_many, resources, now)

    async def delete(self, key: Key) -> WriteResult:
        return await self._threads.write(self._engine.delete, key)

    def close(self) -> None:
        # The pool first, from here: a call waiting for a connection (the server away) and
        # every call queued behind it then fail at once instead of each waiting its timeout.
        self._engine.db.close()
        self._threads.close(self._engine.close)

    async def follow(self, on_event: OnEvent, fallback: float = 1.0) -> None:
        """Until cancelled: ``on_event(what)`` for each change an instance sharing this store
        commits, and ``on_event("")`` at least every ``fallback`` seconds
        (kds.store.postgres._listen)."""
        await listen(self._engine.db.target, on_event, fallback)


class PgGlobalStore(_PgResourceStore[PgGlobalEngine]):
    """Global's store (kds.store.interface.GlobalStore) on a PgGlobalEngine."""

    async def head(self) -> int:
        return await self._threads.read(self._engine.head)

    async def log_floor(self) -> int:
        return await self._threads.read(self._engine.log_floor)

    async def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        return await self._threads.read(self._engine.changes_after, revision, upto)

    async def chain_at(self, revision: int) -> bytes | None:
        return await self._threads.read(self._engine.chain_at, revision)

    async def snapshot(self) -> Snapshot:
        return await self._threads.read(self._engine.snapshot)

    async def sync_leaves(self) -> SyncLeaves:
        return await self._threads.read(self._engine.sync_leaves)

    async def commit_time(self, revision: int) -> float | None:
        return await self._threads.read(self._engine.commit_time, revision)

    async def zone_statuses(self) -> dict[str, str]:
        return await self._threads.read(self._engine.zone_statuses)

    async def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        await self._threads.write(self._engine.save_zone_statuses, statuses)

    async def add_zone_events(self, events: Sequence[ZoneEvent], keep: int) -> None:
        await self._threads.write(self._engine.add_zone_events, events, keep)

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


class PgZoneStore(_PgResourceStore[PgZoneEngine]):
    """A zone's store (kds.store.interface.ZoneStore) on a PgZoneEngine."""

    def leadership(self, instance_id: str) -> Leadership:
        """This instance's part in electing the zone's one stream holder (_leader)."""
        return Leadership(self._engine, instance_id)

    async def leader(self) -> tuple[str, int]:
        """(the leading instance, its epoch) as the store records them."""
        return await self._threads.read(self._leader_of)

    def _leader_of(self) -> tuple[str, int]:
        return Leadership(self._engine, "").leader()

    async def sync_state(self) -> SyncState:
        return await self._threads.read(self._engine.sync_state)

    async def sync_leaves(self) -> SyncLeaves:
        return await self._threads.read(self._engine.sync_leaves)

    async def apply_batch(
        self, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        return await self._threads.write(self._engine.apply_batch, batch, global_store_id, now)
