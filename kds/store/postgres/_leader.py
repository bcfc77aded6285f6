"""One leader among a zone's zonecp instances sharing a PostgreSQL store.

Every instance serves the zone's API from the shared store; only the leader holds the sync
stream to global and applies its batches. Leadership is a session-level advisory lock on
the store, held on a connection of the leader's own:

- A leader that dies (SIGKILL, its host gone) loses its connection, and with it the lock,
  as soon as the server notices: at once for a killed process (its socket is closed), within
  the server's TCP keepalive for a lost host.
- A leader that is paused (SIGSTOP, a long GC, a VM frozen) sends nothing: its session sets
  ``idle_session_timeout``, so the server ends it, and frees the lock, after
  ``idle_timeout`` seconds without a heartbeat. The leader sends one every
  ``heartbeat`` seconds.
- Fencing: each new leader takes the next epoch in the store (``meta.leader_epoch``, in a
  write transaction) and applies batches only while the store is still at its epoch (the
  check runs inside each applying transaction: kds.store.postgres._zone). An old leader
  that wakes up after losing the lock cannot apply anything, even before its own heartbeat
  tells it that it lost.

``meta.leader`` names the leading instance, for /status on every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog
from psycopg import sql

from kds.errors import StoreError
from kds.store.postgres._db import LOCK_LEADER, get_meta, set_meta
from kds.store.postgres._listen import connect_own, first_line
from kds.store.postgres._zone import PgZoneEngine

__all__ = ["Leadership"]

log = structlog.get_logger("kds.store")


class Leadership:
    def __init__(
        self,
        engine: PgZoneEngine,
        instance_id: str,
        *,
        heartbeat: float = 1.0,
        idle_timeout: float = 5.0,
    ):
        self.engine = engine
        self.instance_id = instance_id
        self.heartbeat = heartbeat
        self.idle_timeout = idle_timeout
        self.leading = False
        self.leader_seen = ""  # the leading instance as last read while standing by

    def leader(self) -> tuple[str, int]:
        """(the leading instance's id, its epoch) as the store records them (blocking)."""
        with self.engine.db.read() as conn:
            return get_meta(conn, "leader"), int(get_meta(conn, "leader_epoch", "0"))

    async def run(
        self, lead: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event | None = None
    ) -> None:
        """Until ``stop`` is set (or cancelled): wait to become leader, then ``lead(lost)``
        until ``lost`` is set (the lock's session ended) or ``lead`` returns; then try again.
        Once ``stop`` is set the lock is let go and never taken again (a stopping instance
        taking the next epoch would only hold up the standby)."""
        stop = stop or asyncio.Event()  # none given: until cancelled
        while not stop.is_set():
            conn = await self._acquire()
            if stop.is_set():
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()
                return
            lost = asyncio.Event()
            failed = False
            try:
                try:
                    epoch = await asyncio.to_thread(self._take_epoch)
                except StoreError as e:
                    # The server went away (or restarted) between the lock and the epoch: a
                    # failure to try again, never the end of the zone's sync.
                    log.warning("cannot take the next leader epoch: trying again", error=str(e))
                    await asyncio.sleep(self.heartbeat)
                    continue  # the lock's connection is closed below
                self.engine.fencing = epoch
                self.leading = True
                log.info("leading the zone's sync stream", instance=self.instance_id, epoch=epoch)
                beat = asyncio.create_task(self._heartbeat(conn, lost))
                try:
                    await lead(lost)
                except StoreError as e:
                    # The store failed under the sync (the server went away): let go of the
                    # lead and try for it again, as when the lock's session ends.
                    log.warning("the store failed while leading: trying again", error=str(e))
                    failed = True
                finally:
                    beat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beat
            finally:
                self.leading = False
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()
            if stop.is_set():
                log.info("let go of the zone's sync stream: stopping", instance=self.instance_id)
                return
            log.warning("no longer leading the zone's sync stream", instance=self.instance_id)
            if failed:  # the lock is free meanwhile: another instance may take it
                await asyncio.sleep(self.heartbeat)

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        """A connection holding the leader lock (waits, trying every heartbeat)."""
        db = self.engine.db
        waited = unreachable = False
        while True:
            try:
                conn = await connect_own(db.target)
            except (psycopg.Error, OSError) as e:
                if not unreachable:  # once per outage, not every second
                    log.warning("cannot reach PostgreSQL to lead the zone", error=first_line(e))
                    unreachable = True
                await asyncio.sleep(self.heartbeat)
                continue
            unreachable = False
            try:
                ms = int(self.idle_timeout * 1000)
                await conn.execute(f"SET idle_session_timeout = {ms}")
                cur = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (db.lock, LOCK_LEADER)
                )
                row = await cur.fetchone()
                if row and row[0]:
                    return conn
                cur = await conn.execute(
                    sql.SQL("SELECT value FROM {}.meta WHERE key='leader'").format(
                        sql.Identifier(db.target.schema)
                    )
                )
                seen = await cur.fetchone()
                self.leader_seen = str(seen[0]) if seen else ""
            except (psycopg.Error, OSError) as e:
                log.warning("cannot take the zone's leader lock", error=first_line(e))
            await conn.close()
            if not waited:
                log.info("another instance leads the zone's sync stream: standing by")
                waited = True
            await asyncio.sleep(self.heartbeat)

    def _take_epoch(self) -> int:
        with self.engine.db.write() as conn:
            epoch = int(get_meta(conn, "leader_epoch", "0")) + 1
            set_meta(conn, "leader_epoch", epoch)
            set_meta(conn, "leader", self.instance_id)
        return epoch

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any], lost: asyncio.Event) -> None:
        try:
            while True:
                await asyncio.sleep(self.heartbeat)
                async with asyncio.timeout(self.idle_timeout):
                    await conn.execute("SELECT 1")
        except (psycopg.Error, OSError, TimeoutError) as e:
            log.error("the zone's leader lock was lost", error=first_line(e))
            lost.set()
