"""Opening a daemon's store at start, and its first reads, waiting for a PostgreSQL server
that is not there yet or went away for a moment.

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

The reads a daemon makes once the store is open and before it serves (global: the head, the
default mesh, the zones' status, the signing keys and revocations, the CA; a zone: its sync
state) are tried again the same way (``StartRetry.run``), within the same wait, counted from
the first try at the open: a server that restarts just after the open does not end the
start. The writes among them (on a new store: the default mesh, the CA, the first signing
key) are each made only where missing, so a try that follows one cut off makes none twice.

Only a failure to reach the server is waited out: any other error ends the start at once,
as does every error of the SQLite store, which is a local file. That includes a server that
answered with a refusal trying again cannot fix (a login refused: a wrong password, an
unknown role, no pg_hba.conf entry; or no such database: kds.store.postgres._refused), a
store made by a newer release and another role's store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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

__all__ = ["FIRST_WAIT", "MAX_WAIT", "StartRetry"]

log = structlog.get_logger("kds.store")

FIRST_WAIT = 1.0  # seconds before the second try; doubling from there
MAX_WAIT = 15.0  # the longest wait between two tries, jitter included
_CONNECT_S = 5.0  # a try's own bound: the store's connect timeout

T = TypeVar("T")


def _away(e: BaseException) -> bool:
    return isinstance(e, StoreUnavailable) and e.away


class StartRetry:
    """A daemon's start on the store at ``target``: each step (the open, then the first
    reads) tried again while PostgreSQL cannot be reached, until a try would start more than
    ``wait`` seconds after the first try of the first step; no step is tried again on SQLite.
    A stop signal (``stop``) ends the wait."""

    def __init__(
        self,
        target: Path | PgTarget,
        wait: float,
        stop: asyncio.Event,
        notifier: Notifier,
        *,
        first_wait: float = FIRST_WAIT,
        max_wait: float = MAX_WAIT,
    ):
        self.target = target
        self.wait = wait
        self.stop = stop
        self.notifier = notifier
        self.first_wait = first_wait
        self.max_wait = max_wait
        self._started: float | None = None

    async def open(self, open_: Callable[[], T]) -> T | None:
        """``open_()``, the store; None if stopped while waiting."""

        async def step() -> T:
            return open_()

        return await self.run(step, "opening the store")

    async def run(self, step: Callable[[], Awaitable[T]], doing: str) -> T | None:
        """``await step()``, tried again while PostgreSQL cannot be reached (``doing`` says
        what it does, in the log); None if ``stop`` was set first. The last failure (or any
        other error) is raised."""
        if self._started is None:
            self._started = time.monotonic()
        if not isinstance(self.target, PgTarget):
            return await step()
        from kds.store.postgres import describe  # psycopg: loaded for PostgreSQL only

        location = describe(self.target.url, self.target.schema)
        started = self._started
        stop = self.stop
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
                doing=doing,
                error=str(error),
                attempt=state.attempt_number,
                retry_in_s=round(retry_in, 2),
                waited_s=round(time.monotonic() - started, 1),
                gives_up_after_s=self.wait,
            )
            self.notifier.send(
                STATUS=f"waiting for the store at {location} (attempt {state.attempt_number})",
                EXTEND_TIMEOUT_USEC=str(int((retry_in + _CONNECT_S + 10) * 1e6)),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(_away),
            # What is left of the wait, counted from the first step's first try.
            stop=stop_before_delay(max(0.0, self.wait - (time.monotonic() - started))),
            wait=wait_exponential_jitter(
                multiplier=self.first_wait, max=self.max_wait, jitter=min(1.0, self.first_wait)
            ),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        done: T | None = None
        async for attempt in retrying:
            with attempt:
                if stop.is_set():
                    log.info("stopped while waiting for the store", store=location)
                    return None
                tries += 1
                done = await step()
        if tries > 1:
            log.info(
                "store reachable: starting",
                store=location,
                doing=doing,
                attempts=tries,
                waited_s=round(time.monotonic() - started, 1),
            )
        return done
