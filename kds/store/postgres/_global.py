"""Global's engine on PostgreSQL: the shared engine (kds.store._global, ._changelog) over a
schema several global instances may share.

Writers hold the store's advisory lock (kds.store.postgres._db), so with several global
instances on one database the head each reads is the last committed one: revisions are
gap-free and commit in revision order. Meta holds the head, the chain at the head, the
floor and the chain there.

Zone claims (globalcp.zone_claims) are kept on PostgreSQL's clock, so the instances'
clocks need not agree: a status's ``lease_until`` is stored as PostgreSQL's
``clock_timestamp()`` plus the time the claim had left on the saving instance's clock, and
read back as the reading instance's clock plus the time it has left on PostgreSQL's. Each
instance thus compares a claim with its own clock, and every instance sees it lapse at the
same moment (give or take the time a save or a read takes).
"""

from __future__ import annotations

import json
import math
from typing import Unpack

from kds.store._global import DEFAULT_LOG_SIZE, GlobalEngine, GlobalOptions
from kds.store._rows import Conn
from kds.store.postgres._db import Database, PgTarget

__all__ = ["DEFAULT_LOG_SIZE", "PgGlobalEngine"]

_LEASE = "lease_until"  # globalcp.zone_state.ZoneState's field: when a claim lapses


class PgGlobalEngine(GlobalEngine):
    """Global's store on PostgreSQL as a blocking engine."""

    db: Database

    def __init__(self, target: PgTarget, **options: Unpack[GlobalOptions]):
        super().__init__(Database(target, self.role), **options)

    def zone_statuses(self) -> dict[str, str]:
        with self.db.read() as conn:
            shift = self.clock() - _db_now(conn)
            rows = conn.execute("SELECT name, status FROM zone_status ORDER BY name").fetchall()
        return {name: _shift_lease(status, shift) for name, status in rows}

    def save_zone_statuses(self, statuses: dict[str, str]) -> None:
        with self.db.write() as conn:
            shift = _db_now(conn) - self.clock()
            conn.executemany(
                self.db.STATUS_UPSERT,
                [(name, _shift_lease(text, shift)) for name, text in sorted(statuses.items())],
            )


def _db_now(conn: Conn) -> float:
    """PostgreSQL's clock now (seconds since the epoch; ``clock_timestamp()``, not the
    transaction's start)."""
    (now,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    return float(now)


def _shift_lease(status: str, shift: float) -> str:
    """``status`` (JSON) with a claim's ``lease_until`` moved by ``shift`` seconds from one
    clock to the other; a status without a claim (0, missing, not a number) as it is."""
    try:
        raw = json.loads(status)
    except json.JSONDecodeError:
        return status
    lease = raw.get(_LEASE) if isinstance(raw, dict) else None
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not math.isfinite(lease):
        return status
    if lease <= 0:
        return status
    raw[_LEASE] = lease + shift
    return json.dumps(raw, sort_keys=True)
