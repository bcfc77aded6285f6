"""The SQLite store's checkpoints, made on a thread of their own (Checkpointer)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["CHECKPOINT_EVERY", "RESTART_FRAMES", "Checkpointer"]

# Write transactions between two checkpoints made off the writers' path (Checkpointer).
CHECKPOINT_EVERY = 32
# WAL frames left after a passive checkpoint beyond which the thread restarts the WAL itself:
# twice what SQLite's automatic checkpoint lets it hold (1,000 pages, 4 MiB).
RESTART_FRAMES = 2000
# How long that restart may wait for a writer to finish, or for readers to leave the WAL.
# Writers wait while it is pending (readers never do): it gives up and tries again at the
# next checkpoint rather than hold them up behind a long read.
RESTART_WAIT_MS = 100


class Checkpointer:
    """Copies the WAL's committed pages into the database file on a thread of its own.

    SQLite's automatic checkpoint runs inside the committing call once the WAL holds 1,000
    pages: it copies them and syncs the file, which took up to 27 ms where a commit of one
    resource takes 0.2, every few hundred small commits. A zone applies its batches on its
    event loop, so everything there waited; with ten zones, each write waited on one of
    them about one time in forty, which is the p99 of a write reaching every zone. Here a
    thread runs a passive checkpoint (it never waits for nor blocks a reader or a writer)
    every CHECKPOINT_EVERY write transactions, and the automatic one finds nearly every page
    copied already: its turn costs a little. It stays on as the bound on the WAL's size, since
    under steady writes a passive checkpoint never lets the WAL start over. The thread's
    connection syncs as the others do (synchronous=FULL): what the file holds is as safe.

    That bound fails when the thread is slow (a loaded machine, a slow disk's fsync): a
    writer's automatic checkpoint finds the thread's under way and gives up, the thread's
    own covers only the frames written before it began, and the WAL never starts over while
    writes keep coming (it grew past 16 MiB in a test of 6,000 small commits on a loaded
    machine, and to 141 MiB with the writers' checkpoint off). So when more than
    RESTART_FRAMES are left after a passive checkpoint that copied them all (no reader holds
    older ones), the thread makes a RESTART checkpoint, which waits up to RESTART_WAIT_MS for
    the writer and the WAL's readers, and the next write starts the WAL over."""

    def __init__(self, path: Path):
        self.path = path
        self.runs = 0  # passive checkpoints made (tests read it)
        self.restarts_tried = 0  # RESTART checkpoints begun
        self.restarts = 0  # RESTART checkpoints that completed
        self._commits = 0
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def committed(self) -> None:
        """A write transaction committed (any thread): counted, a checkpoint every so many."""
        self._commits += 1  # a lost count among racing writers only moves a checkpoint
        if self._commits < CHECKPOINT_EVERY:
            return
        self._commits = 0
        with self._lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sqlite-checkpoint", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")  # a passive one never waits
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                try:
                    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                    # Not while a reader holds older frames (a long read, such as a
                    # snapshot's): the restart would wait for it, and the writers with it.
                    if frames > RESTART_FRAMES and copied == frames:
                        self.restarts_tried += 1
                        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                        self.restarts += not busy
                except sqlite3.Error:
                    # The writers' own checkpoint still runs as SQLite's: nothing is lost
                    # but the time this thread would have saved them.
                    continue
        finally:
            conn.close()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()
