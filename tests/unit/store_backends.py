"""The store backends the conformance suite (test_store_conformance.py) runs against.

Adding a backend is adding one factory to ``BACKENDS``: given a fresh directory, it makes
GlobalStores and ZoneStores there. The same ``name`` (with the same role) is the same
store: opening it again after closing it reopens what was written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kds.model import Key, Kind, Resource
from kds.protocol.applier import Incoming
from kds.store import GlobalStore, PgTarget, ZoneStore, open_global_store, open_zone_store
from tests.pgserver import shared_server

# Test data both store suites (conformance and SQLite's own) use.
T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-01T00:00:01Z"
MESH = Key(Kind.MESH, "", "default")
S1 = Key(Kind.SECRET, "default", "s1")
G1 = Key(Kind.GLOBAL_SECRET, "", "g1")
G2 = Key(Kind.GLOBAL_SECRET, "", "g2")
GSID = "global-store-a"


def mk(key: Key, data: bytes = b"v", **kw: object) -> Resource:
    """A resource with ``key`` (a Mesh carries no data)."""
    return Resource(
        key.kind, key.name, mesh=key.mesh, data=b"" if key.kind is Kind.MESH else data, **kw
    )  # type: ignore[arg-type]


def inc_put(r: Resource, rev: int = 1) -> Incoming:
    """A synced put of ``r`` at revision ``rev``, as a zone receives it."""
    return Incoming(rev, r.key, r.with_meta(version=rev, creation_time=T0, modification_time=T0))


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


class PostgresFactory:
    """PostgreSQL stores on the session's throwaway server (tests/pgserver.py), one schema
    per directory and name: a fresh directory is a fresh set of stores."""

    def __init__(self, where: Path):
        self.url = shared_server().url
        self.prefix = "t" + hashlib.blake2b(str(where).encode(), digest_size=6).hexdigest()

    def target(self, name: str) -> PgTarget:
        return PgTarget(self.url, f"{self.prefix}_{name}")

    def global_store(self, name: str, **options: Any) -> GlobalStore:
        return open_global_store(self.target(name), **options)

    def zone_store(self, name: str, **options: Any) -> ZoneStore:
        return open_zone_store(self.target(name), **options)


BACKENDS: dict[str, Callable[[Path], StoreFactory]] = {
    "sqlite": SqliteFactory,
    "postgres": PostgresFactory,
}
