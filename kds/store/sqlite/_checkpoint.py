"""The SQLite store's checkpoints, made on a thread of their own (Checkpointer)."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from pathlib import Path

__all__ = ["CHECKPOINT_EVERY", "PENDING_FRAMES", "RESTART_FRAMES", "Checkpointer"]

# Write transactions between two looks at the WAL by the thread that checkpoints it off the
# writers' path (Checkpointer); it makes a checkpoint when at least PENDING_FRAMES of the
# WAL's pages are not yet in the database file.
CHECKPOINT_EVERY = 32
PENDING_FRAMES = 256
# The WAL index's header (the -shm file), in SQLite's documented WAL-index format: its
# version, the frames in the WAL (mxFrame) and those already copied (nBackfill), each a
# 32-bit integer in the machine's byte order, at these offsets.
_SHM_VERSION = 3007000
_SHM_HEADER_BYTES = 100
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
    thread runs a passive checkpoint (it never waits for nor blocks a reader or a writer),
    and the automatic one finds nearly every page copied already: its turn costs a little.
    It stays on as the bound on the WAL's size, since under steady writes a passive
    checkpoint never lets the WAL start over. The thread's connection syncs as the others do
    (synchronous=FULL): what the file holds is as safe.

    That bound fails when the thread is slow (a loaded machine, a slow disk's fsync): a
    writer's automatic checkpoint finds the thread's under way and gives up, the thread's
    own covers only the frames written before it began, and the WAL never starts over while
    writes keep coming (it grew past 16 MiB in a test of 6,000 small commits on a loaded
    machine, and to 141 MiB with the writers' checkpoint off). So when more than
    RESTART_FRAMES are left after a passive checkpoint that copied them all (no reader holds
    older ones), the thread makes a RESTART checkpoint, which waits up to RESTART_WAIT_MS for
    the writer and the WAL's readers, and the next write starts the WAL over.

    The thread looks at the WAL every CHECKPOINT_EVERY write transactions and makes a
    checkpoint only when at least PENDING_FRAMES pages wait to be copied (read from the WAL
    index's header), since each one syncs the database file. A zone's one-change batches
    write two or three pages each, and were followed by a checkpoint every 32 batches; now
    by one about every hundred. One zone taking 500 writes 10 ms apart (the harness's
    propagation scenario, TLS), interleaved with the previous code: p99 from the write's
    answer 0.44 / 0.46 / 0.52 ms against 0.58 / 0.51 ms (0.51-0.73 over five earlier runs),
    the zone's CPU per write 0.56-0.58 ms against 0.56-0.66. Transactions of many pages
    still have a checkpoint at every look. The price: when the WAL does reach SQLite's
    1,000 pages (steady writes that never let it start over), the automatic checkpoint
    inside that commit may find up to about PENDING_FRAMES pages to copy, not a few dozen."""

    def __init__(self, path: Path):
        self.path = path
        self.runs = 0  # passive checkpoints made (tests read it)
        self.skipped = 0  # looks at the WAL that found too little to copy
        self.restarts_tried = 0  # RESTART checkpoints begun
        self.restarts = 0  # RESTART checkpoints that completed
        self._commits = 0
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._shm_fd: int | None = None  # the WAL index, read by pending()
        self._closed = False

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
                if self.pending() < PENDING_FRAMES:
                    self.skipped += 1
                    continue
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

    def asked(self) -> bool:
        """A look at the WAL was asked for and has not begun (tests wait for it to settle)."""
        return self._wake.is_set()

    def pending(self) -> int:
        """Pages in the WAL not yet copied into the database file, read from the WAL index's
        header (mxFrame less nBackfill); PENDING_FRAMES if it cannot be read (a missing or
        unexpected header), so that a checkpoint is made as before.

        The -shm file is read through one descriptor kept open until ``close``, never opened
        and closed around a read: SQLite's locks on that file are POSIX record locks, which
        the kernel drops for the whole process when any descriptor of the file is closed.
        With them gone, another process opening the store (a reader, a backup) believes it
        is the first, and truncates and rebuilds the WAL index under the daemon's connections
        (which then die of SIGBUS on the shrunken mapping, or read a wrong index)."""
        fd = self._shm()
        if fd is None:
            return PENDING_FRAMES
        try:
            head = os.pread(fd, _SHM_HEADER_BYTES, 0)
        except OSError:
            return PENDING_FRAMES
        if len(head) < _SHM_HEADER_BYTES:
            return PENDING_FRAMES

        def u32(at: int) -> int:
            return int.from_bytes(head[at : at + 4], sys.byteorder)

        if u32(0) != _SHM_VERSION:
            return PENDING_FRAMES
        frames, copied = u32(16), u32(96)
        return frames - copied if frames >= copied else frames

    def _shm(self) -> int | None:
        """The descriptor of the WAL index, opened on first use (None until it exists)."""
        with self._lock:
            if self._shm_fd is None and not self._closed:
                try:
                    self._shm_fd = os.open(f"{self.path}-shm", os.O_RDONLY)
                except OSError:
                    return None
            return self._shm_fd

    def close(self) -> None:
        """Close the WAL index's descriptor. Only once every connection this process has to
        the store is closed (see ``pending``): closing it drops their locks."""
        self.stop()
        with self._lock:
            self._closed = True
            fd, self._shm_fd = self._shm_fd, None
        if fd is not None:
            os.close(fd)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()
