"""The SQLite store's checkpoints, made on a thread of their own (Checkpointer)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["CHECKPOINT_EVERY", "Checkpointer"]

# Write transactions between two checkpoints made off the writers' path (Checkpointer).
CHECKPOINT_EVERY = 32


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
    connection syncs as the others do (synchronous=FULL): what the file holds is as safe."""

    def __init__(self, path: Path):
        self.path = path
        self.runs = 0  # passive checkpoints made (tests read it)
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
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
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
