"""A zone's engine on PostgreSQL: the shared engine (kds.store._zone) over a schema several
zonecp instances may share, with fencing.

Writers hold the store's advisory lock. Only the leader applies batches: with ``fencing``
set, each batch first checks that the store's leader epoch is still the one this instance
took, in the applying transaction, so an old leader that was paused past its lease cannot
apply after a new leader took over.
"""

from __future__ import annotations

from typing import Unpack

from kds.errors import StoreError
from kds.store._rows import Conn, get_meta
from kds.store._zone import ZoneEngine, ZoneOptions
from kds.store.postgres._db import Database, PgTarget

__all__ = ["NotLeader", "PgZoneEngine"]


class NotLeader(StoreError):
    """This zone instance no longer leads: another took the stream (its batch not applied)."""


class PgZoneEngine(ZoneEngine):
    """A zone's store on PostgreSQL as a blocking engine."""

    db: Database
    # The leader epoch this instance holds (kds.store.postgres._leader); None: no check
    # (a single instance, or the tests).
    fencing: int | None = None

    def __init__(self, target: PgTarget, **options: Unpack[ZoneOptions]):
        super().__init__(Database(target, self.role), **options)

    def _before_apply(self, conn: Conn) -> None:
        if self.fencing is None:
            return
        held = get_meta(conn, "leader_epoch", "0")
        if held != str(self.fencing):
            raise NotLeader(
                f"this instance led the zone's stream at epoch {self.fencing}, but the "
                f"store is at epoch {held}: another instance took over; batch not applied"
            )
