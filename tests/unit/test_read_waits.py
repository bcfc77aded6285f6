"""A zone's wait for global's next message ends on stop or silence, and only the wait: a
batch being applied when the watchdog looks is never cut short."""

from __future__ import annotations

import asyncio
import time

import pytest

from zonecp.read_waits import ReadWaits


class Silent:
    """A session whose watchdog always finds global silent."""

    ticks = 0
    listening = 0
    quiet_since = 0.0

    def on_listening(self, now: float) -> None:
        self.listening += 1
        self.quiet_since = now

    def watchdog_wait(self, now: float) -> float:
        return 0.01

    def tick(self, now: float) -> bool:
        self.ticks += 1
        return True


async def _reader(waits: ReadWaits, read: asyncio.Future[None]) -> str:
    waits.reading = True
    try:
        await read
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        return f"interrupted: {waits.why}"
    finally:
        waits.reading = False
    return "read"


async def test_silence_ends_a_read_but_not_an_apply() -> None:
    session = Silent()

    async def converse() -> list[str]:
        waits = ReadWaits(session)  # type: ignore[arg-type]
        waits.watch()
        await asyncio.sleep(0.1)  # "applying": the watchdog looks, and waits
        assert waits.why is None and session.ticks == 0
        out = [await _reader(waits, asyncio.get_running_loop().create_future())]
        waits.close()
        return out

    assert await asyncio.wait_for(converse(), 5) == ["interrupted: silent"]
    assert session.ticks == 1


@pytest.mark.parametrize("reading", [True, False])
async def test_a_stop_ends_a_read_at_once_or_is_seen_before_the_next(reading: bool) -> None:
    async def converse() -> str:
        waits = ReadWaits(Silent())  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, waits.interrupt, "stop")
        if not reading:
            await asyncio.sleep(0.05)
            assert waits.why == "stop"  # the next read does not begin
            return "seen"
        return await _reader(waits, loop.create_future())

    assert await asyncio.wait_for(converse(), 5) == ("interrupted: stop" if reading else "seen")


@pytest.mark.parametrize("heard_between", [False, True])
async def test_a_look_late_because_the_loop_stalled_counts_silence_from_then(
    heard_between: bool,
) -> None:
    """The zone's own loop stalled past the watchdog's time: it was not listening, so the late
    look does not judge; global's silence counts from then (on_listening). A second late
    look excuses again only if global was heard since the first: a loop late at every look,
    with nothing from global between, still catches a silent global."""
    session = Silent()

    async def converse() -> str:
        loop = asyncio.get_running_loop()
        waits = ReadWaits(session)  # type: ignore[arg-type]
        waits.watch()
        reader = asyncio.ensure_future(_reader(waits, loop.create_future()))
        await asyncio.sleep(0)  # the reader waits
        time.sleep(0.1)  # the loop stalls: the look due at 0.01 s comes 0.09 s late
        if heard_between:
            loop.call_later(0.01, session.on_listening, 1e9)  # as a message read would
        loop.call_later(0.02, time.sleep, 0.1)  # and stalls again before the next look
        out = await reader
        waits.close()
        return out

    assert await asyncio.wait_for(converse(), 5) == "interrupted: silent"
    assert session.ticks == 1
    # Excused once, or twice with the message between (which counts as one call too).
    assert session.listening == (3 if heard_between else 1)
