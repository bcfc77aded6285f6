"""How a zone's stream stops waiting for global's next message (zonecp.client)."""

from __future__ import annotations

import asyncio
import time

from kds.protocol.zone_session import ZoneSession

__all__ = ["ReadWaits"]

# How late a watchdog may fire before the zone takes it that its own loop was stalled.
STALL = 0.05


class ReadWaits:
    """Ends a stream's wait for global's next message, without a task and a wait per message
    (they were about a tenth of a zone's CPU per single write): the zone stopping and the
    session's watchdog (a timer, set again only when it fires early) cancel the conversing
    task, but only while it waits in ``call.read()``, never while it applies a batch; what
    they asked for is then seen before the next read. Cancelling a read cancels the call:
    the stream ends either way.

    A watchdog that fires well after its time means the zone's own loop was stalled (a
    garbage collection, a starved CPU, a paused machine): the zone was not listening, as
    while it applies a batch, and global's messages may be waiting unread. So global's
    silence counts from then instead, unless the last such excuse was the last thing that
    moved it: a loop late at every look, with nothing heard from global between, still lets
    a silent global be caught at the next look."""

    def __init__(self, session: ZoneSession):
        self.session = session
        self.task = asyncio.current_task()
        self.reading = False
        self.why: str | None = None  # "stop" or "silent" once asked
        self._timer: asyncio.TimerHandle | None = None
        self._excused: float | None = None  # the session's quiet_since after the last excuse

    def interrupt(self, why: str) -> None:
        if self.why is None:
            self.why = why
            if self.reading and self.task is not None:
                self.task.cancel()

    def watch(self, at_least: float = 0.0) -> None:
        """Start the watchdog (after the welcome, which says how long global may be silent)."""
        wait = self.session.watchdog_wait(time.monotonic())
        if wait is not None and self.why is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(wait, at_least), self._check)

    def _check(self) -> None:
        timer, self._timer = self._timer, None
        if self.why is not None:
            return
        session = self.session
        late = timer is not None and asyncio.get_running_loop().time() - timer.when() > STALL
        if late and session.quiet_since != self._excused:
            session.on_listening(time.monotonic())
            self._excused = session.quiet_since
        elif self.reading and session.tick(time.monotonic()):
            self.interrupt("silent")
            return
        # Heard from global since, busy applying a batch (the watchdog judges only waits for
        # global), or stalled itself: look again later.
        self.watch(at_least=0.05)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
