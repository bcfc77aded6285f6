"""Crash points for tests: make a daemon SIGKILL itself at a named point of its write and
apply paths, so a fault test can land a crash exactly there instead of at a random moment.

TEST-ONLY. Nothing happens unless the process starts with the environment variable
``KDS_TEST_ONLY_CRASH_AT`` set; it is read once, when the daemon starts (``arm_from_environ``
in kds.runtime.run_daemon), and a daemon started with it logs a warning saying so before
anything else. Its value is a comma-separated list of ``NAME`` or ``NAME@N`` (die at the Nth
time the point is reached; the first by default); an unknown name or a bad count is refused
at start, so a typo cannot leave a test believing it injected a crash it did not.

The points (``POINTS``):

  api-after-commit             an API write (PUT, DELETE, POST /_apply) committed, its answer
                               not yet sent: the client never learns whether it was made.
  global-commit-before-wake    global's store committed a transaction and has not yet woken
                               the zones' streams with it (the store's writer thread).
  zone-batch-before-ack        a zone committed a batch from global and has not yet sent the
                               ack (global will send it again, or more, on the next stream).
  zone-snapshot-part-applied   a zone committed a part of a snapshot that is not its last.

Reaching an armed point logs one line ("TEST-ONLY crash point reached") and kills the process
with SIGKILL: no cleanup, no flush beyond that line, as a power cut or the OOM killer would.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping

import structlog

from kds.errors import ConfigError

__all__ = ["ENV", "POINTS", "arm", "arm_from_environ", "armed", "reach"]

ENV = "KDS_TEST_ONLY_CRASH_AT"

POINTS = frozenset(
    {
        "api-after-commit",
        "global-commit-before-wake",
        "zone-batch-before-ack",
        "zone-snapshot-part-applied",
    }
)

log = structlog.get_logger("kds.failpoints")

# Armed points: name -> how many more times it may be reached before the crash.
_armed: dict[str, int] = {}


def parse(value: str) -> dict[str, int]:
    """``NAME[@N],...`` as {name: N}; ConfigError naming the bad entry."""
    out: dict[str, int] = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        name, _, count = entry.partition("@")
        if name not in POINTS:
            raise ConfigError(
                f"{ENV}: unknown crash point {name[:60]!r} (known: {', '.join(sorted(POINTS))})"
            )
        if count and not (count.isascii() and count.isdigit() and 1 <= int(count) <= 1_000_000):
            raise ConfigError(f"{ENV}: {entry[:80]!r}: the count after @ must be 1 to 1000000")
        out[name] = int(count or 1)
    return out


def arm(points: Mapping[str, int]) -> None:
    """Arm ``points`` (name -> the hit that crashes), replacing what was armed."""
    _armed.clear()
    _armed.update(points)


def arm_from_environ(environ: Mapping[str, str] = os.environ) -> None:
    """Read ``KDS_TEST_ONLY_CRASH_AT`` once, at start; warn loudly when it arms anything."""
    points = parse(environ.get(ENV, ""))
    arm(points)
    if points:
        log.warning(
            "TEST-ONLY crash points armed: this process will SIGKILL itself at them; "
            f"never set {ENV} outside tests",
            points=sorted(f"{k}@{v}" for k, v in points.items()),
        )


def armed() -> list[str]:
    return sorted(_armed)


def reach(name: str) -> None:
    """Called at the point ``name``: kills the process if it is armed and due."""
    if not _armed:
        return  # the production path: one dict check
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    log.warning("TEST-ONLY crash point reached: SIGKILL", point=name)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
