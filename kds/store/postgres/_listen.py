"""Wake-ups between instances sharing a PostgreSQL store: LISTEN/NOTIFY, with a fallback.

A write transaction that changes something other instances keep in memory sends a
notification on the store's channel (its schema name) with what changed (``change``: the
change log moved; ``secrets``: signing keys or token revocations); PostgreSQL delivers it
to every listening session when, and only if, the transaction commits. ``listen`` holds one
connection of its own, LISTENs, and calls ``on_event`` with each payload. A notification
can be lost (the listening connection broke, the server restarted): so ``on_event("")``
runs after every ``fallback`` seconds without one, and after each reconnection, and the
callee re-reads what it follows instead of trusting the payloads alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog
from psycopg import sql

from kds.store.postgres._db import PgTarget, connection_kwargs, describe, first_line
from kds.store.postgres._refused import refusal

__all__ = ["OnEvent", "connect_own", "first_line", "listen"]

log = structlog.get_logger("kds.store")

OnEvent = Callable[[str], Awaitable[None]]


async def listen(
    target: PgTarget, on_event: OnEvent, fallback: float = 1.0, retry_max: float = 5.0
) -> None:
    """Forever (until cancelled): deliver the store's notifications to ``on_event``."""
    where = describe(target.url, target.schema)
    delay = 0.2
    down_since: float | None = None  # when the connection was lost or first refused
    told = False  # this outage's "unreachable" was logged
    loop = asyncio.get_running_loop()
    while True:
        try:
            conn = await connect_own(target)
        except (psycopg.Error, OSError) as e:
            if down_since is None:
                down_since = loop.time()
            refused = refusal(e, target.url, where) if isinstance(e, psycopg.Error) else None
            if not told:  # once per outage, not at every retry
                told = True
                if refused is not None:  # the server is there and says no
                    log.error("PostgreSQL refuses this daemon's connections: writes refused, "
                              "wake-ups paused (a password file is read at start: "
                              "restart after changing it)", store=where, error=str(refused))  # fmt: skip
                else:
                    log.error("PostgreSQL unreachable: writes refused, wake-ups paused",
                              store=where, error=first_line(e))  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max)
            continue
        try:
            async with conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(target.schema)))
                # Listening: the outage is over and the backoff starts again from its
                # shortest. Not before, so a server that takes connections and drops them at
                # once (shutting down, a proxy in front of a dead one) is retried with
                # backoff, not in a spin.
                if down_since is not None:
                    log.info("PostgreSQL reachable again", store=where,
                             down_s=round(loop.time() - down_since, 1))  # fmt: skip
                    down_since = None
                told = False
                delay = 0.2
                await on_event("")  # whatever was sent while no one listened
                while True:
                    got = False
                    async for n in conn.notifies(timeout=fallback):
                        got = True
                        await on_event(n.payload)
                    if not got:
                        await on_event("")
        except (psycopg.Error, OSError) as e:
            down_since = down_since or loop.time()
            log.error("PostgreSQL connection for wake-ups lost: reconnecting", store=where,
                      error=first_line(e), retry_in=delay)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max)


async def connect_own(target: PgTarget) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        target.url, **connection_kwargs(target, autocommit=True)
    )
