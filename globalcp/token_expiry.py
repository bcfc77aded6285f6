"""Ending a zone's live stream when its token expires.

A token is verified when its stream starts; one that expires during the stream ends it then.
A timer on the event loop's clock (the monotonic one) alone could be late by any amount: a
wall clock set forward, or a host suspended and resumed (the monotonic clock may not advance
while it sleeps), leaves that timer with time to run while the token's ``exp`` has passed.
So the stream's token is also compared with the wall clock every check interval (the
heartbeat interval): a stream outlives its token by at most that interval, whichever clock
moved. ``check_delay`` is the pure part (the caller passes the time).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

__all__ = ["TokenExpiry", "check_delay"]


def check_delay(expires: dt.datetime, now: dt.datetime, every: float) -> float | None:
    """Seconds until the token's expiry should next be checked against the wall clock, at
    most ``every``; None once ``now`` is at or past ``expires`` (the stream must end)."""
    left = (expires - now).total_seconds()
    if left <= 0:
        return None
    return min(every, left)


class TokenExpiry:
    """Calls ``end()`` once, when the token's ``expires`` has passed by the loop's clock or by
    ``wall_clock``, whichever comes first; ``cancel()`` when the stream ends for another
    reason."""

    def __init__(
        self,
        expires: dt.datetime,
        end: Callable[[], None],
        *,
        every: float,
        wall_clock: Callable[[], dt.datetime],
    ):
        self._expires = expires
        self._end = end
        self._every = every
        self._wall_clock = wall_clock
        self._loop = asyncio.get_running_loop()
        left = (expires - wall_clock()).total_seconds()
        # Normal operation: one timer at the expiry, on the loop's clock.
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            max(0.0, left), self._expired
        )
        self._check: asyncio.TimerHandle | None = None
        self._schedule_check()

    def _schedule_check(self) -> None:
        delay = check_delay(self._expires, self._wall_clock(), self._every)
        if delay is None:
            self._expired()
        else:
            self._check = self._loop.call_later(delay, self._schedule_check)

    def _expired(self) -> None:
        if self._timer is None:
            return  # already ended, or cancelled
        self.cancel()
        self._end()

    def cancel(self) -> None:
        for handle in (self._timer, self._check):
            if handle is not None:
                handle.cancel()
        self._timer = self._check = None
