"""Giving memory freed after a heavy phase back to the operating system.

CPython frees a large transient structure (a snapshot cut into parts, a store's anti-entropy
leaves) to the C allocator, and glibc keeps most of it: its heaps only shrink from the top,
and the heaps of the threads that read the store (``asyncio.to_thread``, the store's
readers) are never trimmed on their own. The process's resident size then stays at its peak
long after the phase. ``release()`` asks glibc to return every free page it holds
(``malloc_trim(0)``, which also trims the other threads' heaps and releases free pages in
the middle of a heap). It frees nothing live, so calling it is always safe; it costs a walk
over the allocator's free lists (milliseconds for a few hundred megabytes), so it is called
after a phase that freed a lot, never per message.

A daemon also gives memory back on its own, the way a garbage-collected runtime's scavenger
does: ``Keeper`` watches the resident size and releases when it has grown by more than a
slack since the last release, so memory freed by a phase that called no ``release()`` (a
burst of connections, checks ending in another order) does not stay resident.

Where the C library is not glibc (musl, macOS), ``release()`` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import os
import threading
from collections.abc import Callable

__all__ = ["Keeper", "available", "freed", "release", "release_soon", "resident_bytes"]


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _load_trim()
_lock = threading.Lock()  # one trim at a time
# A release asked for while another thread trims: the memory that caller freed may lie where
# the running trim has already walked, so the trimming thread walks once more after it. Not
# doing so left a burst of concurrent frees (100 zones' anti-entropy checks finishing
# together) up to 15 MB above what one more trim gave back.
_again = False
# A large free noted since the keeper's last release (``freed``).
_freed = False


def available() -> bool:
    """Whether ``release()`` can return memory here (the C library is glibc)."""
    return _trim is not None


def release() -> bool:
    """Return the C allocator's free memory to the operating system (blocking: a walk of the
    allocator's free lists, so call it off the event loop after a large free); True if
    glibc released something. A no-op where the C library is not glibc. While another thread
    is releasing, returns False at once and that thread walks the heaps once more after its
    walk, so what this caller freed is given back too."""
    global _again
    if _trim is None:
        return False
    released = False
    while True:
        if not _lock.acquire(blocking=False):
            _again = True
            # Still held after the request was noted: its holder checks the note after it
            # lets go, so it walks again. Free now: the holder went without seeing it.
            if not _lock.acquire(blocking=False):
                return released
        try:
            _again = False
            # A full collection first: it also empties CPython's free lists, whose few
            # thousand spare objects, scattered over the heap, each keep a whole arena
            # (1 MiB) in use.
            gc.collect()
            released = bool(_trim(0)) or released
        finally:
            _lock.release()
        if not _again:
            return released


def freed() -> None:
    """Note that a large structure was just freed (a zone's anti-entropy tree): the daemon's
    ``Keeper`` gives memory back at its next look, once however many were noted meanwhile.
    A flag, cheap from any thread; for frees too frequent or too many to release each."""
    global _freed
    _freed = True


def release_soon(loop: asyncio.AbstractEventLoop) -> None:
    """``release()`` on ``loop``'s executor, for a finalizer (``weakref.finalize``) of a large
    structure shared by streams: scheduled, since the object is not yet freed while its
    finalizer runs. Safe from any thread, and once the loop is closed (nothing then)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
        loop.call_soon_threadsafe(loop.run_in_executor, None, release)


def resident_bytes() -> int | None:
    """This process's resident set size; None where /proc is not there to read it."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Keeper:
    """Decides when a daemon gives freed memory back on its own: at a check (``due``), when
    the resident size grew by more than ``slack`` bytes over what it was after the last
    release. Growth that is live memory (more zones, more secrets) costs one release in
    vain, then becomes the new baseline; only further growth asks again."""

    def __init__(
        self,
        slack: int = 8 << 20,
        rss: Callable[[], int | None] = resident_bytes,
        releaser: Callable[[], bool] = release,
    ):
        self.slack = slack
        self._rss = rss
        self._release = releaser
        self.baseline = rss()

    def due(self) -> bool:
        """Whether the resident size grew past the slack since the last release, or a large
        free was noted (``freed``)."""
        if _freed:
            return True
        now = self._rss()
        if now is None:
            return False
        if self.baseline is None or now < self.baseline:
            self.baseline = now  # it shrank on its own: measure growth from here
            return False
        return now - self.baseline > self.slack

    def release(self) -> None:
        """Release (blocking: call it off the event loop), then take the new baseline."""
        global _freed
        _freed = False
        self._release()
        self.baseline = self._rss()
