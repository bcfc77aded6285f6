"""Global's engine on PostgreSQL: the shared engine (kds.store._global, ._changelog) over a
schema several global instances may share.

Writers hold the store's advisory lock (kds.store.postgres._db), so with several global
instances on one database the head each reads is the last committed one: revisions are
gap-free and commit in revision order. Meta holds the head, the chain at the head, the
floor and the chain there.
"""

from __future__ import annotations

from typing import Unpack

from kds.store._global import DEFAULT_LOG_SIZE, GlobalEngine, GlobalOptions
from kds.store.postgres._db import Database, PgTarget

__all__ = ["DEFAULT_LOG_SIZE", "PgGlobalEngine"]


class PgGlobalEngine(GlobalEngine):
    """Global's store on PostgreSQL as a blocking engine."""

    db: Database

    def __init__(self, target: PgTarget, **options: Unpack[GlobalOptions]):
        super().__init__(Database(target, self.role), **options)
