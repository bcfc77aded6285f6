"""Opening a daemon's store at start, waiting for a PostgreSQL server that is not there yet.

A host's services start together: the database may come up after the control plane, or be
restarting when it starts. A daemon that exits at once then leans on its service manager's
restarts, which are limited (systemd stops after five starts within ten seconds by default;
Kubernetes waits up to five minutes between them). Instead the daemon tries again, with a
backoff of 1 s doubling up to 15 s (up to 1 s of jitter added, 15 s at most), for up to
``--postgres-start-wait`` (5 minutes by default):

- each failure is logged as a warning with the server's reason;
- the service manager's status line says what the daemon waits for, and its start timeout is
  pushed back for as long as the daemon waits (``EXTEND_TIMEOUT_USEC``);
- a stop signal ends the wait (a try under way finishes first: the connect timeout, 5 s).

Only a failure to reach the server is waited out: any other error ends the start at once,
as does every error of the SQLite store, which is a local file. That includes a server that
answered with a refusal trying again cannot fix (a login refused: a wrong password, an
unknown role, no pg_hba.conf entry; or no such database: kds.store.postgres._refused), a
store made by a newer release and another role's store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from kds.errors import StoreUnavailable
from kds.notify import Notifier
from kds.store.pg_target import PgTarget

__all__ = ["FIRST_WAIT", "MAX_WAIT", "open_store"]

log = structlog.get_logger("kds.store")

FIRST_WAIT = 1.0  # seconds before the second try; doubling from there
MAX_WAIT = 15.0  # the longest wait between two tries, jitter included
_CONNECT_S = 5.0  # a try's own bound: the store's connect timeout

T = TypeVar("T")


def _away(e: BaseException) -> bool:
    return isinstance(e, StoreUnavailable) and e.away


async def open_store(
    open_: Callable[[], T],
    target: Path | PgTarget,
    wait: float,
    stop: asyncio.Event,
    notifier: Notifier,
    *,
    first_wait: float = FIRST_WAIT,
    max_wait: float = MAX_WAIT,
) -> T | None:
    """``open_()``, the store at ``target``; on PostgreSQL tried again while it fails
    because the server cannot be reached, until a try would start more than ``wait`` seconds
    after the first; None if ``stop`` was set first. The last failure (or any other error)
    is raised."""
    if not isinstance(target, PgTarget):
        return open_()
    from kds.store.postgres import describe  # psycopg: loaded for PostgreSQL only

    location = describe(target.url, target.schema)
    started = time.monotonic()
    tries = 0

    async def sleep(seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await stop.wait()
        except TimeoutError:
            pass

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_in = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "store unreachable at start: trying again",
            store=location,
            error=str(error),
            attempt=state.attempt_number,
            retry_in_s=round(retry_in, 2),
            waited_s=round(time.monotonic() - started, 1),
            gives_up_after_s=wait,
        )
        notifier.send(
            STATUS=f"waiting for the store at {location} (attempt {state.attempt_number})",
            EXTEND_TIMEOUT_USEC=str(int((retry_in + _CONNECT_S + 10) * 1e6)),
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception(_away),
        stop=stop_before_delay(wait),
        wait=wait_exponential_jitter(
            multiplier=first_wait, max=max_wait, jitter=min(1.0, first_wait)
        ),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    opened: T | None = None
    async for attempt in retrying:
        with attempt:
            if stop.is_set():
                log.info("stopped while waiting for the store", store=location)
                return None
            tries += 1
            opened = open_()
    if tries > 1:
        log.info(
            "store reachable: starting",
            store=location,
            attempts=tries,
            waited_s=round(time.monotonic() - started, 1),
        )
    return opened
