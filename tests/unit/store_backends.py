"""The store backends the conformance suite (test_store_conformance.py) runs against.

Adding a backend is adding one factory to ``BACKENDS``: given a fresh directory, it makes
GlobalStores and ZoneStores there. The same ``name`` (with the same role) is the same
store: opening it again after closing it reopens what was written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kds.store import GlobalStore, ZoneStore, open_global_store, open_zone_store


class StoreFactory(Protocol):
    def global_store(self, name: str, **options: Any) -> GlobalStore:
        """A global store; options as open_global_store's (log_size, on_commit, clock,
        max_message_bytes)."""
        ...

    def zone_store(self, name: str, **options: Any) -> ZoneStore:
        """A zone store; options as open_zone_store's (on_commit)."""
        ...


class SqliteFactory:
    """SQLite stores, one file per name."""

    def __init__(self, where: Path):
        self.where = where

    def global_store(self, name: str, **options: Any) -> GlobalStore:
        return open_global_store(self.where / f"{name}.db", **options)

    def zone_store(self, name: str, **options: Any) -> ZoneStore:
        return open_zone_store(self.where / f"{name}.db", **options)


BACKENDS: dict[str, Callable[[Path], StoreFactory]] = {"sqlite": SqliteFactory}
