"""A stopping daemon never hangs on a task that will not end: each gets a grace, then is
named in the log with where it waits, and left behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import structlog.testing

from kds.runtime import Guard


async def _stubborn(release: asyncio.Event) -> None:
    """Ends only once ``release`` is set: swallows every cancellation (as a driver's
    clean-up waiting on a dead server does)."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue


async def _ends_when_cancelled() -> None:
    await asyncio.sleep(3600)


async def test_cancel_all_waits_a_grace_then_names_the_task_and_where_it_waits() -> None:
    release = asyncio.Event()
    guard = Guard(asyncio.Event())
    stuck = guard.start("stuck", _stubborn(release))
    fine = guard.start("fine", _ends_when_cancelled())
    await asyncio.sleep(0)
    began = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        await guard.cancel_all(grace=0.3)
    took = time.monotonic() - began
    assert 0.3 <= took < 2.0
    assert fine.cancelled() and not stuck.done()
    [line] = [e for e in logs if e["event"].startswith("a task did not end")]
    assert line["task"] == "stuck" and line["grace_s"] == 0.3
    assert line["waits_at"][0].endswith("in _stubborn")
    assert "test_runtime_stop.py" in line["waits_at"][0]
    assert any(w.endswith("in wait") for w in line["waits_at"][1:])  # Event.wait under it
    assert guard.failed is None
    release.set()
    await stuck


_PROGRAM = """
import asyncio
from kds.runtime import run_daemon

async def never_ends():
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass

async def main(service):
    asyncio.get_running_loop().create_task(never_ends(), name="never-ends")
    await asyncio.sleep(0)
    return 3

raise SystemExit(run_daemon(main))
"""


def test_a_daemon_whose_task_will_not_end_still_exits_with_its_code() -> None:
    began = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - began
    assert out.returncode == 3, out.stderr
    assert took < 20
    said = out.stdout + out.stderr
    assert "a task did not end within its stop grace" in said
    assert "never-ends" in said and "in never_ends" in said
