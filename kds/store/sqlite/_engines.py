"""The SQLite backend's engines and async stores: the shared ones (kds.store._global,
._zone, ._threads) over a SQLite file (kds.store.sqlite._db)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar, Unpack

from kds.model import Key
from kds.protocol.applier import DecodedBatch
from kds.store._global import GlobalEngine as _GlobalEngine
from kds.store._global import GlobalOptions
from kds.store._threads import ThreadedGlobalStore, ThreadedResourceStore, ThreadedZoneStore
from kds.store._zone import ZoneEngine as _ZoneEngine
from kds.store._zone import ZoneOptions
from kds.store.results import Row, ZoneApplyResult
from kds.store.sqlite._db import Database, ReaderBusy, WriterBusy

__all__ = ["GlobalEngine", "SqliteGlobalStore", "SqliteZoneStore", "ZoneEngine"]

# A range batch with at most this many changes is applied on the event loop's thread.
INLINE_APPLY_CHANGES = 16


class GlobalEngine(_GlobalEngine):
    """Global's store file as a blocking engine (one call at a time per thread)."""

    db: Database

    def __init__(self, path: str | Path, **options: Unpack[GlobalOptions]):
        self.path = Path(path)
        super().__init__(Database(self.path, self.role), **options)


class ZoneEngine(_ZoneEngine):
    """A zone's store file as a blocking engine (one call at a time per thread)."""

    db: Database

    def __init__(self, path: str | Path, **options: Unpack[ZoneOptions]):
        self.path = Path(path)
        super().__init__(Database(self.path, self.role), **options)

    def apply_batch_now(
        self, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        """apply_batch, on the caller's thread, only if no other writer holds the store:
        raises WriterBusy, having done nothing, if one does."""
        with self.db.write_now() as conn:
            return self._apply_in(conn, batch, global_store_id, now)


_E = TypeVar("_E", GlobalEngine, ZoneEngine)


class _GetOnTheLoop(ThreadedResourceStore[_E]):
    """``get`` of one resource on the event loop's own thread, through the file's
    busy_timeout=0 connection (Database.read_now), or on the reader thread in the rare moment
    the file is locked against readers."""

    async def get(self, key: Key) -> Row | None:
        engine = self._engine
        try:
            with engine.db.read_now() as conn:
                return engine._get_in(conn, key)
        except ReaderBusy:
            return await self._threads.read(engine.get, key)


class SqliteGlobalStore(_GetOnTheLoop[GlobalEngine], ThreadedGlobalStore[GlobalEngine]):
    """Global's store (kds.store.interface.GlobalStore) on a SQLite file. One resource is
    read on the event loop's own thread, as on a zone (SqliteZoneStore says why)."""


class SqliteZoneStore(_GetOnTheLoop[ZoneEngine], ThreadedZoneStore[ZoneEngine]):
    """A zone's store (kds.store.interface.ZoneStore) on a SQLite file.

    A small range batch (the usual one: a write or a few) is applied on the event loop's
    own thread when no other writer holds the file, without the hop to the writer thread
    and back. The hop costs more than such an apply (a profile of 50 zones in one process
    had the thread hand-off at about 180 us per batch, the apply itself at about 70 us);
    it is not synced to disk (a crash may lose the last batches, which global sends again),
    so it never waits on the disk either. Anything bigger, a snapshot, or a store another
    writer holds at that moment (a zone-local API write) goes through the writer thread.

    One resource is read (``get``: the API's GET of one resource) on the event loop's own
    thread too: in WAL mode a read never waits for a writer, and the hop to the reader thread
    and back cost more than the read (a zone answering GETs of one secret as fast as a client
    asked spent 0.39-0.46 ms of CPU per GET, 0.085 ms of it the reader thread's read). A list,
    whose size has no such bound, still goes through the reader thread."""

    async def apply_batch(
        self, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        if not batch.snapshot and len(batch.changes) <= INLINE_APPLY_CHANGES:
            try:
                return self._engine.apply_batch_now(batch, global_store_id, now)
            except WriterBusy:
                pass
        return await super().apply_batch(batch, global_store_id, now)
