"""A daemon opening its store at start: PostgreSQL that cannot be reached is waited for, with
a backoff, each failure logged and the service manager told; nothing else is."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from kds.errors import StoreError, StoreUnavailable
from kds.notify import Notifier
from kds.store.pg_target import PgTarget
from kds.store_start import StartRetry

PG = PgTarget(url="postgresql://kds:hunter2@db.example:6543/kds", schema="kds_global")
FAST = {"first_wait": 0.01, "max_wait": 0.02}


class _Notes(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[dict[str, str]] = []

    def send(self, **fields: str) -> bool:
        self.sent.append(fields)
        return True


def _away(message: str = "connection failed: Connection refused") -> StoreUnavailable:
    return StoreUnavailable(f"PostgreSQL at db.example failed: {message}")


class _Opener:
    """Raises each of ``failures`` in turn, then returns "store"."""

    def __init__(self, *failures: BaseException):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "store"


def _run(opener: _Opener, target: Any = PG, wait: float = 30.0, **kw: Any) -> Any:
    async def go() -> Any:
        notes = kw.pop("notes", _Notes())
        return await StartRetry(target, wait, asyncio.Event(), notes, **{**FAST, **kw}).open(opener)

    return asyncio.run(go())


def test_an_unreachable_server_is_tried_again_until_it_answers() -> None:
    opener, notes = _Opener(_away(), _away("failed to resolve host 'db.example'")), _Notes()
    with capture_logs() as logs:
        assert _run(opener, notes=notes) == "store"
    assert opener.calls == 3
    waits = [e for e in logs if e["event"] == "store unreachable at start: trying again"]
    assert [e["attempt"] for e in waits] == [1, 2]
    assert waits[0]["store"] == "postgresql://db.example:6543/kds schema kds_global"
    assert "Connection refused" in waits[0]["error"]
    assert "failed to resolve host" in waits[1]["error"]
    assert all(e["log_level"] == "warning" and e["gives_up_after_s"] == 30.0 for e in waits)
    assert all(0 < e["retry_in_s"] <= 0.1 for e in waits)
    assert any(e["event"] == "store reachable: starting" and e["attempts"] == 3 for e in logs)
    assert "hunter2" not in repr(logs) + repr(notes.sent)
    # The service manager sees what the daemon waits for, and its start timeout moves on.
    assert notes.sent[0]["STATUS"].startswith("waiting for the store at postgresql://db.example")
    assert all(int(n["EXTEND_TIMEOUT_USEC"]) >= 15_000_000 for n in notes.sent)


def test_a_first_try_that_works_logs_nothing() -> None:
    with capture_logs() as logs:
        assert _run(_Opener()) == "store"
    assert logs == []


def test_the_backoff_doubles_up_to_its_cap() -> None:
    opener = _Opener(*[_away() for _ in range(6)])
    with capture_logs() as logs:
        _run(opener, first_wait=0.01, max_wait=0.04)
    waits = [e["retry_in_s"] for e in logs if e["event"].startswith("store unreachable")]
    assert len(waits) == 6
    # jitter adds up to first_wait to each: 0.01-0.02, 0.02-0.03, then the cap 0.04
    assert (
        0.01 <= waits[0] <= 0.02
        and waits[1] >= 0.02
        and waits[-1] == pytest.approx(0.04, abs=0.001)
    )


@pytest.mark.parametrize(
    "error",
    [
        StoreError("store postgresql://db.example has schema version 9, made by a newer kds-sync"),
        ValueError("a bug"),
    ],
)
def test_other_errors_end_the_start_at_once(error: BaseException) -> None:
    opener = _Opener(error)
    with pytest.raises(type(error)):
        _run(opener)
    assert opener.calls == 1


def test_a_server_that_answered_with_an_error_is_not_waited_for() -> None:
    answered = _away("permission denied for schema kds_global")
    answered.away = False
    opener = _Opener(answered)
    with pytest.raises(StoreUnavailable):
        _run(opener)
    assert opener.calls == 1


def test_the_wait_is_bounded_and_the_last_reason_raised() -> None:
    opener = _Opener(*[_away(f"try {i}") for i in range(1000)])
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="try "):
        _run(opener, wait=0.2)
    assert time.monotonic() - started < 2
    assert 2 <= opener.calls < 50
    zero = _Opener(_away(), _away())
    with pytest.raises(StoreUnavailable):
        _run(zero, wait=0)
    assert zero.calls == 1


def test_a_sqlite_store_is_opened_once_whatever_it_raises(tmp_path: Path) -> None:
    opener = _Opener(_away("disk I/O error"))
    with pytest.raises(StoreUnavailable):
        _run(opener, target=tmp_path / "global.db")
    assert opener.calls == 1
    assert _run(_Opener(), target=tmp_path / "global.db") == "store"


def test_a_stop_signal_ends_the_wait() -> None:
    async def go() -> tuple[Any, float, int]:
        stop = asyncio.Event()
        opener = _Opener(*[_away() for _ in range(100)])
        asyncio.get_running_loop().call_later(0.3, stop.set)
        started = time.monotonic()
        with capture_logs() as logs:
            start = StartRetry(PG, 300, stop, _Notes(), first_wait=60, max_wait=60)
            got = await start.open(opener)
        assert any(e["event"] == "stopped while waiting for the store" for e in logs)
        return got, time.monotonic() - started, opener.calls

    got, took, calls = asyncio.run(go())
    assert got is None and took < 5 and calls == 1
