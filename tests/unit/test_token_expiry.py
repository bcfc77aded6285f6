"""A live stream ends once its zone token's ``exp`` has passed by the wall clock too, not only
by a timer on the loop's monotonic clock: a wall clock set forward, or a host suspended and
resumed (the monotonic clock may not advance meanwhile), let a stream outlive its token by
that much. The clocks are injected: nothing here waits for a real expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import jwt

from globalcp.token_expiry import TokenExpiry, check_delay
from globalcp.tokens import TokenRefused, ZoneTokens
from kds.clock import rfc3339
from tests.unit.inprocess import CallAborted, FakeCall, resume_hello, running_pair, wait_until

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class _WallClock:
    """A wall clock the test sets."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_check_delay_is_the_interval_or_what_is_left_and_none_once_expired() -> None:
    expires = T0 + dt.timedelta(seconds=10)
    assert check_delay(expires, T0, 2.0) == 2.0
    assert check_delay(expires, T0 + dt.timedelta(seconds=9.5), 2.0) == 0.5
    assert check_delay(expires, expires, 2.0) is None
    assert check_delay(expires, T0 + dt.timedelta(hours=1), 2.0) is None


async def test_a_wall_clock_jump_past_exp_ends_within_one_interval() -> None:
    wall = _WallClock(T0)
    ended: list[float] = []
    loop = asyncio.get_running_loop()
    expiry = TokenExpiry(
        T0 + dt.timedelta(hours=1), lambda: ended.append(loop.time()), every=0.02, wall_clock=wall
    )
    try:
        await asyncio.sleep(0.1)
        assert not ended  # an hour left by both clocks
        # The host slept two hours: the wall clock moved, the loop's clock did not.
        wall.now = T0 + dt.timedelta(hours=2)
        jumped = loop.time()
        await wait_until(lambda: ended, 2.0, "the expiry by the wall clock")
        assert ended[0] - jumped < 0.5
        await asyncio.sleep(0.1)
        assert len(ended) == 1  # once
    finally:
        expiry.cancel()


async def test_the_loop_timer_still_ends_it_when_the_wall_clock_stands_still() -> None:
    wall = _WallClock(T0)  # never moves (a wall clock set back would be the same)
    ended: list[str] = []
    TokenExpiry(
        T0 + dt.timedelta(seconds=0.05), lambda: ended.append("end"), every=10.0, wall_clock=wall
    )
    await wait_until(lambda: ended, 2.0, "the expiry by the loop's clock")
    await asyncio.sleep(0.1)
    assert ended == ["end"]


async def test_an_expired_token_ends_at_once_and_a_cancelled_expiry_never_ends() -> None:
    wall = _WallClock(T0)
    ended: list[str] = []
    TokenExpiry(
        T0 - dt.timedelta(seconds=1), lambda: ended.append("past"), every=1.0, wall_clock=wall
    )
    assert ended == ["past"]
    expiry = TokenExpiry(
        T0 + dt.timedelta(seconds=0.05), lambda: ended.append("late"), every=0.01, wall_clock=wall
    )
    expiry.cancel()
    wall.now = T0 + dt.timedelta(hours=1)
    await asyncio.sleep(0.15)
    assert ended == ["past"]


async def test_a_live_stream_ends_when_the_wall_clock_passes_its_token_s_exp(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path, heartbeat_interval=0.1) as pair:
        tokens = ZoneTokens(pair.store, "kds-sync")
        await tokens.load()
        now = dt.datetime.now(dt.UTC)
        token, info = await tokens.issue("zone-x", 3600, now)
        pair.servicer.tokens = tokens
        wall = _WallClock(now)
        pair.servicer.wall_clock = wall
        hello = resume_hello("zone-x", pair.store.store_id)
        context = FakeCall(token, hello)
        task = asyncio.create_task(pair.servicer.sync(None, context))
        await wait_until(lambda: "zone-x" in pair.servicer.links, 5.0, "the stream admitted")
        await asyncio.sleep(0.3)
        assert not task.done()  # an hour left
        # Suspended for two hours and resumed: only the wall clock moved.
        wall.now = now + dt.timedelta(hours=2)
        done, _ = await asyncio.wait([task], timeout=5)
        assert task in done, "the stream outlived its token"
        assert isinstance(task.exception(), CallAborted)
        assert context.aborted is not None
        assert context.aborted[0] is grpc.StatusCode.UNAUTHENTICATED
        assert context.aborted[1].startswith(f"zone token {info.token_id} expired at ")
        assert "zone-x" not in pair.servicer.links


async def test_a_token_s_shown_expiry_is_its_exp_claim(tmp_path: Path) -> None:
    """The token's exp claim holds whole seconds: its expiry was shown with the milliseconds
    of the issuing instant (expiresAt 03:32:36.528Z), and the refusal then said it expired
    at 03:32:36.000Z, half a second before the expiry shown."""
    async with running_pair(tmp_path) as pair:
        tokens = ZoneTokens(pair.store, "kds-sync")
        await tokens.load()
        issued_at = T0 + dt.timedelta(seconds=10, milliseconds=528)
        token, info = await tokens.issue("zone-x", 1, issued_at)
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        assert info.expires_at == rfc3339(dt.datetime.fromtimestamp(exp, dt.UTC))
        assert info.expires_at == "2026-01-01T00:00:11.000Z"
        listed = [t for t in await pair.store.zone_tokens() if t["id"] == info.token_id]
        assert [t["expiresAt"] for t in listed] == [info.expires_at]
        try:
            tokens.verify(token, "zone-x", issued_at + dt.timedelta(seconds=1))
        except TokenRefused as e:
            assert e.reason == f"zone token {info.token_id} expired at {info.expires_at}"
        else:
            raise AssertionError("an expired token was accepted")
