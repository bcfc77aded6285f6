"""Test-only crash points (kds.failpoints): armed only by their environment variable, read
once at start; an unknown point is refused; an armed point SIGKILLs the process exactly at
its Nth reach, and an unarmed one does nothing."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from kds import failpoints
from kds.errors import ConfigError


def test_nothing_is_armed_without_the_variable() -> None:
    failpoints.arm_from_environ({})
    assert failpoints.armed() == []
    failpoints.reach("api-after-commit")  # no effect: this process lives on


def test_the_variable_is_parsed_and_bad_entries_are_named() -> None:
    assert failpoints.parse("api-after-commit, zone-batch-before-ack@3") == {
        "api-after-commit": 1,
        "zone-batch-before-ack": 3,
    }
    with pytest.raises(ConfigError, match="unknown crash point 'api-after-comit'"):
        failpoints.parse("api-after-comit")
    for bad in ("api-after-commit@0", "api-after-commit@x", "api-after-commit@-1"):
        with pytest.raises(ConfigError, match="must be 1 to 1000000"):
            failpoints.parse(bad)


def test_an_armed_point_kills_the_process_at_its_nth_reach() -> None:
    code = (
        "from kds import failpoints\n"
        "failpoints.arm_from_environ()\n"
        "for i in range(5):\n"
        "    print(f'step-{i}', flush=True)\n"
        "    failpoints.reach('zone-batch-before-ack')\n"
        "    failpoints.reach('api-after-commit')\n"
    )
    env = {failpoints.ENV: "zone-batch-before-ack@3"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == -signal.SIGKILL
    steps = [w for w in proc.stdout.split() if w.startswith("step-")]
    assert steps == ["step-0", "step-1", "step-2"]  # killed at the third reach, not before
    assert "TEST-ONLY crash points armed" in proc.stdout + proc.stderr
    assert "crash point reached" in proc.stdout + proc.stderr
