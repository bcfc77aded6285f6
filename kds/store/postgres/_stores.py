"""The async PostgreSQL stores the daemons use: ``PgGlobalStore`` and ``PgZoneStore``.

The shared thread-backed stores (kds.store._threads) over the PostgreSQL engines, plus what
sharing one store between instances needs: ``follow`` (LISTEN/NOTIFY wake-ups, _listen)
and, for a zone, its leadership (_leader).
"""

from __future__ import annotations

from typing import TypeVar

from kds.store._threads import ThreadedGlobalStore, ThreadedResourceStore, ThreadedZoneStore
from kds.store.postgres._global import PgGlobalEngine
from kds.store.postgres._leader import Leadership
from kds.store.postgres._listen import OnEvent, listen
from kds.store.postgres._zone import PgZoneEngine

__all__ = ["PgGlobalStore", "PgZoneStore"]


P = TypeVar("P", PgGlobalEngine, PgZoneEngine)


class _Follow(ThreadedResourceStore[P]):
    def close(self) -> None:
        # The pool first, from here: a call waiting for a connection (the server away) and
        # every call queued behind it then fail at once instead of each waiting its timeout.
        self._engine.db.close()
        super().close()

    async def follow(self, on_event: OnEvent, fallback: float = 1.0) -> None:
        """Until cancelled: ``on_event(what)`` for each change an instance sharing this store
        commits, and ``on_event("")`` at least every ``fallback`` seconds
        (kds.store.postgres._listen)."""
        await listen(self._engine.db.target, on_event, fallback)


class PgGlobalStore(ThreadedGlobalStore[PgGlobalEngine], _Follow[PgGlobalEngine]):
    """Global's store (kds.store.interface.GlobalStore) on a PgGlobalEngine."""


class PgZoneStore(ThreadedZoneStore[PgZoneEngine], _Follow[PgZoneEngine]):
    """A zone's store (kds.store.interface.ZoneStore) on a PgZoneEngine."""

    def leadership(self, instance_id: str) -> Leadership:
        """This instance's part in electing the zone's one stream holder (_leader)."""
        return Leadership(self._engine, instance_id)

    async def leader(self) -> tuple[str, int]:
        """(the leading instance, its epoch) as the store records them."""
        return await self._threads.read(Leadership(self._engine, "").leader)
