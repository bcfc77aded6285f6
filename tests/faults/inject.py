"""The fault suite's faults (tests.faults.runner's FaultRun injects them between operations).

  kill-zone, kill-global   SIGKILL at a random moment, then a restart
  crash-global-answer      global restarted with a crash point (kds.failpoints): it dies on
                           its next API write, after the commit and before the answer
  crash-global-wake        ... after a commit and before it wakes the zones' streams
  crash-zone-ack           a zone restarted with a crash point: it dies after committing its
                           next batch from global, before the ack
  crash-zone-snapshot      a zone's data dir emptied (its own secrets go with it) and the zone
                           restarted with a crash point: it dies after applying a part of the
                           snapshot it then takes that is not the last
  partition                the zone's proxy refuses and cuts connections for a while
  stop-zone, stop-global   SIGSTOP for a while, then SIGCONT
  corrupt                  a synced row of a running zone altered behind the store's back
                           (its row digest no longer matches): anti-entropy must repair it
  restore                  a zone stopped and its data dir replaced by an older copy of it
  disk-full-zone           the zone's disk (a small tmpfs of its own) filled for a while
  disk-full-global         global's disk filled for a while

A process that died at a crash point is started again (unarmed) before the next step.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kds.failpoints import ENV
from tests.faults.checker import History
from tests.integration.conftest import Daemon
from tests.integration.proxy import Proxy
from tests.integration.small_disks import SmallDisks

__all__ = ["FAULTS", "Injector", "ZoneProc"]

FAULTS = (
    "kill-zone",
    "kill-global",
    "crash-global-answer",
    "crash-global-wake",
    "crash-zone-ack",
    "crash-zone-snapshot",
    "partition",
    "stop-zone",
    "stop-global",
    "corrupt",
    "restore",
    "disk-full-zone",
    "disk-full-global",
)
CRASH_POINTS = {
    "crash-global-answer": "api-after-commit",
    "crash-global-wake": "global-commit-before-wake",
    "crash-zone-ack": "zone-batch-before-ack",
    "crash-zone-snapshot": "zone-snapshot-part-applied",
}


class ZoneProc:
    """One zone process slot: its daemon, the proxy it dials global through, its lives."""

    def __init__(self, name: str, daemon: Daemon, proxy: Proxy | None):
        self.name = name
        self.daemon = daemon
        self.proxy = proxy
        self.life = 1
        self.log_offsets = [(1, 0)]  # (life, the log's size when it started)
        self.saved: Path | None = None
        self.stopped = False
        self.full = False  # its disk is filled
        self.armed = False  # started with a crash point that has not fired yet

    @property
    def up(self) -> bool:
        proc = self.daemon.proc
        return proc is not None and proc.poll() is None and not self.stopped


class Injector:
    """Fault injection for a run with one global (``g``) and ``zones``."""

    rng: random.Random
    work: Path
    g: Daemon
    zones: list[ZoneProc]
    disks: SmallDisks
    history: History
    faults: Counter[str]
    say: Any
    _seq: int
    _heal: list[tuple[float, str, Any]]
    _global_stopped: bool
    _global_full: bool
    _global_armed: bool
    _unexpected: int

    def _fault(self) -> None:
        what = self.rng.choice(FAULTS)
        zone = self.rng.choice(self.zones)
        now = time.monotonic()
        g_alive = self.g.proc is not None and self.g.proc.poll() is None
        g_ok = g_alive and not self._global_stopped and not self._global_full
        z_ok = zone.up and not zone.full
        if what == "kill-zone" and z_ok:
            zone.daemon.stop(signal.SIGKILL)
            time.sleep(self.rng.uniform(0.0, 0.5))
            self._start_zone(zone)
        elif what == "kill-global" and g_ok:
            self.g.stop(signal.SIGKILL)
            time.sleep(self.rng.uniform(0.0, 0.5))
            self.g.start()
            self._global_armed = False
        elif what in ("crash-global-answer", "crash-global-wake") and g_ok:
            self.g.stop(signal.SIGKILL)
            self.g.env_once = {ENV: CRASH_POINTS[what]}
            self.g.start()
            self._global_armed = True
        elif what == "crash-zone-ack" and z_ok:
            self._arm_zone(zone, CRASH_POINTS[what], empty=False)
        elif what == "crash-zone-snapshot" and z_ok:
            self._arm_zone(zone, CRASH_POINTS[what], empty=True)
        elif what == "partition" and zone.proxy is not None and zone.proxy._accepting:
            zone.proxy.down()
            self._heal.append((now + self.rng.uniform(0.3, 3.0), "partition", zone))
        elif what == "stop-zone" and zone.up:
            zone.daemon.signal(signal.SIGSTOP)
            zone.stopped = True
            self._heal.append((now + self.rng.uniform(0.2, 2.0), "stop-zone", zone))
        elif what == "stop-global" and g_alive and not self._global_stopped:
            self.g.signal(signal.SIGSTOP)
            self._global_stopped = True
            self._heal.append((now + self.rng.uniform(0.2, 1.5), "stop-global", None))
        elif what == "corrupt" and z_ok:
            if not self._corrupt(zone):
                return
        elif what == "restore" and z_ok:
            self._restore(zone)
        elif what == "disk-full-zone" and z_ok:
            self.disks.fill(self.work / zone.name)
            zone.full = True
            self._heal.append((now + self.rng.uniform(0.5, 3.0), "disk-full-zone", zone))
        elif what == "disk-full-global" and g_ok:
            self.disks.fill(self.work / "global")
            self._global_full = True
            self._heal.append((now + self.rng.uniform(0.5, 2.0), "disk-full-global", None))
        else:
            return
        self.faults[what] += 1
        self.say(f"fault: {what}" + ("" if what.endswith("global") else f" {zone.name}"))

    def _heal_due(self, now: float) -> None:
        due = [h for h in self._heal if h[0] <= now]
        self._heal = [h for h in self._heal if h[0] > now]
        for _, what, zone in due:
            if what == "partition":
                zone.proxy.up()
            elif what == "stop-zone":
                with contextlib.suppress(ProcessLookupError):
                    zone.daemon.signal(signal.SIGCONT)
                zone.stopped = False
            elif what == "stop-global":
                with contextlib.suppress(ProcessLookupError):
                    self.g.signal(signal.SIGCONT)
                self._global_stopped = False
            elif what == "disk-full-zone":
                self.disks.free(self.work / zone.name)
                zone.full = False
            elif what == "disk-full-global":
                self.disks.free(self.work / "global")
                self._global_full = False

    def _revive(self) -> None:
        """Start again, unarmed, a process that died at its crash point."""
        proc = self.g.proc
        if proc is not None and proc.poll() is not None and not self._global_full:
            self._exited(self.g, self._global_armed)
            self.g.start()
            self._global_armed = False
        for z in self.zones:
            proc = z.daemon.proc
            if not z.stopped and not z.full and proc is not None and proc.poll() is not None:
                self._exited(z.daemon, z.armed)
                self._start_zone(z)

    def _exited(self, d: Daemon, armed: bool) -> None:
        """Count ``d``'s death if it was not at its crash point: it died by itself."""
        assert d.proc is not None
        if not (armed and d.proc.returncode == -signal.SIGKILL):
            self._unexpected += 1
            self.say(f"{d.name} exited by itself ({d.proc.returncode}): restarted")

    def _disarm(self) -> None:
        """The end: restart, unarmed, every process whose crash point has not fired."""
        self._revive()
        if self._global_armed:
            self.g.stop()
            self.g.start()
            self._global_armed = False
        for z in self.zones:
            if z.armed:
                z.daemon.stop()
                self._start_zone(z)

    def _arm_zone(self, zone: ZoneProc, point: str, empty: bool) -> None:
        """Restart ``zone`` with ``point`` armed (cut off from global while it starts, so the
        crash cannot come before its API answers); ``empty``: on an empty data dir."""
        assert zone.proxy is not None
        was_up = zone.proxy._accepting
        zone.proxy.down()
        zone.daemon.stop(signal.SIGKILL)
        if empty:
            # Its own writes are lost with its store: not sync's doing.
            self.history.local_resets.setdefault(zone.name, []).append(self._seq)
            _clear(zone.daemon.data_dir)
        zone.daemon.env_once = {ENV: point}
        self._start_zone(zone, reset=empty)
        if was_up:
            zone.proxy.up()

    def _start_zone(self, zone: ZoneProc, reset: bool = False) -> None:
        zone.life += 1
        zone.log_offsets.append((zone.life, zone.daemon.log_path.stat().st_size))
        if reset:
            self.history.reset_lives.add((zone.name, zone.life))
        zone.armed = ENV in zone.daemon.env_once
        zone.daemon.start()

    def _corrupt(self, zone: ZoneProc) -> bool:
        """Alter a synced row's value behind the store's back (its digest no longer matches).
        Done inside the disks' namespace: SQLite resolves the /proc/PID/root link of a path
        seen from outside, and would open (and make) a file of the same name outside."""
        store = self.work.resolve() / zone.name / "zone.db"
        done = subprocess.run(
            [*self.disks.prefix, sys.executable, "-c", _CORRUPT, str(store)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode == 0 and done.stdout.strip() == "1"

    def _restore(self, zone: ZoneProc) -> None:
        """Keep a copy of the zone's data dir the first time; later, put it back."""
        if zone.saved is None:
            zone.daemon.stop()
            zone.saved = self.work / f"{zone.name}.saved"
            shutil.copytree(zone.daemon.data_dir, zone.saved)
            self._start_zone(zone)
            return
        zone.daemon.stop(signal.SIGKILL)
        # Its own writes since the copy are lost with it: not sync's doing.
        self.history.local_resets.setdefault(zone.name, []).append(self._seq)
        _clear(zone.daemon.data_dir)
        shutil.copytree(zone.saved, zone.daemon.data_dir, dirs_exist_ok=True)
        self._start_zone(zone, reset=True)


_CORRUPT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=5)
try:
    cur = conn.execute(
        "UPDATE resources SET data=X'00' WHERE rowid = (SELECT rowid FROM resources "
        "WHERE origin='global' AND kind='Secret' ORDER BY random() LIMIT 1)"
    )
    conn.commit()
    print(cur.rowcount)
except sqlite3.Error:
    print(0)
"""


def _clear(path: Path) -> None:
    """Remove what ``path`` holds (it may be a mount point: it stays)."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
