"""Both daemons run with the young-generation collector threshold kds.runtime sets."""

from __future__ import annotations

import json
import subprocess
import sys

from kds.runtime import GC_YOUNG_THRESHOLD

_PROGRAM = """
import gc, json
from kds.runtime import run_daemon
before = gc.get_threshold()
seen = []

async def main(service):
    seen.append(gc.get_threshold())
    return 0

code = run_daemon(main)
print(json.dumps({"code": code, "before": before, "inside": seen[0]}))
"""


def test_run_daemon_raises_only_the_young_threshold() -> None:
    # A fresh interpreter: run_daemon sets the process's umask and signal handlers.
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["code"] == 0
    assert got["before"][0] < GC_YOUNG_THRESHOLD
    assert got["inside"] == [GC_YOUNG_THRESHOLD, *got["before"][1:]]
