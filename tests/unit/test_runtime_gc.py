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


_SETTLE = """
import gc, json, weakref
from kds.runtime import settle_heap

class Node:
    pass

loaded = [Node() for _ in range(1000)]   # what a daemon loads: kept for its life
garbage = Node(); garbage.me = garbage    # a cycle loading left behind
gone = weakref.ref(garbage); del garbage
settle_heap()
frozen = gc.get_freeze_count()
later = Node(); later.me = later          # a cycle made while serving
after = weakref.ref(later); del later
gc.collect()
print(json.dumps({"frozen": frozen, "left_behind_collected": gone() is None,
                  "later_collected": after() is None, "loaded": len(loaded)}))
"""


def test_settle_heap_freezes_what_is_loaded_and_collects_the_rest() -> None:
    """settle_heap collects what loading left behind before freezing what is alive, and a
    cycle made afterwards is still collected."""
    out = subprocess.run(
        [sys.executable, "-c", _SETTLE], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["frozen"] >= 1000
    assert got["left_behind_collected"] and got["later_collected"]
