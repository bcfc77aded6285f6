"""The SQLite backend's engines and async stores: the shared ones (kds.store._global,
._zone, ._threads) over a SQLite file (kds.store.sqlite._db)."""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from kds.store._global import GlobalEngine as _GlobalEngine
from kds.store._global import GlobalOptions
from kds.store._threads import ThreadedGlobalStore, ThreadedZoneStore
from kds.store._zone import ZoneEngine as _ZoneEngine
from kds.store._zone import ZoneOptions
from kds.store.sqlite._db import Database

__all__ = ["GlobalEngine", "SqliteGlobalStore", "SqliteZoneStore", "ZoneEngine"]


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


class SqliteGlobalStore(ThreadedGlobalStore[GlobalEngine]):
    """Global's store (kds.store.interface.GlobalStore) on a SQLite file."""


class SqliteZoneStore(ThreadedZoneStore[ZoneEngine]):
    """A zone's store (kds.store.interface.ZoneStore) on a SQLite file."""
