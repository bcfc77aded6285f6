"""A daemon's life: signals, guarded root tasks, graceful stop.

SIGINT and SIGTERM only set the stop event; the daemon's main coroutine then closes its
servers with a short grace. SIGHUP asks the daemon to reload its configuration (see
kds/reload.py); a daemon that has not yet said how ignores it with a warning. A root task
that dies is logged with its name and stops the daemon (exit code 1) instead of leaving a
half-working process behind.

Both daemons collect cyclic garbage less often than CPython's default (``tune_gc``), and
give freed memory back to the system on their own when their resident size grows
(``keep_memory_trimmed``, kds.memory.Keeper).

No code here or in the daemons waits with ``asyncio.wait_for``: on Python 3.11, a task
cancelled in the same turn of the loop as the awaited thing completes has its cancellation
swallowed (wait_for returns the result), so a loop around it never ends; a stop then waited
its full grace on a status flusher that was still going round. ``asyncio.timeout`` raises
the cancellation whatever else happened in that turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import fcntl
import gc
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from kds import failpoints, memory
from kds.errors import ConfigError
from kds.notify import Notifier
from kds.secret_files import sync_dir

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "Guard",
    "Service",
    "check_ports_free",
    "ensure_private_dir",
    "keep_memory_trimmed",
    "run_daemon",
    "tune_gc",
]

log = structlog.get_logger("kds.runtime")


# Seconds a stopping daemon gives its cancelled tasks to end, twice at most (its root
# tasks, then whatever they left), with the API's own wait between: well within the 90 s a
# service manager gives a stop by default.
STOP_GRACE = 2.0


def waits_at(task: asyncio.Task[Any]) -> list[str]:
    """Where a suspended task waits: each coroutine of its await chain, outermost first, as
    ``file:line in function`` (names and lines only, never values)."""
    out: list[str] = []
    obj: Any = task.get_coro()
    while obj is not None and len(out) < 50:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        frame = frame or getattr(obj, "ag_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        nxt = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        obj = nxt or getattr(obj, "ag_await", None)
    return out


async def cancel_within(tasks: list[asyncio.Task[Any]], grace: float) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait up to ``grace`` seconds for them to end; log each one still
    running then, with where it waits, and return those."""
    for t in tasks:
        t.cancel()
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for t in pending:
        log.error("a task did not end within its stop grace: left behind",
                  task=t.get_name(), grace_s=grace, waits_at=waits_at(t))  # fmt: skip
    return list(pending)


class Guard:
    """Starts named root tasks; the first one to fail sets ``failed`` and the stop event."""

    def __init__(self, stop: asyncio.Event):
        self.stop = stop
        self.failed: BaseException | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._done)
        self.tasks.append(task)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("root task failed", task=task.get_name(), error=repr(exc), exc_info=exc)
            self.failed = self.failed or exc
            self.stop.set()

    async def cancel_all(self, grace: float = STOP_GRACE) -> None:
        """Cancel every task and wait up to ``grace`` seconds for them to end. One still
        running then is named in the log with where it waits, and left behind: a stopping
        daemon never hangs on one task's clean-up (a driver waiting on a dead server)."""
        tasks = list(self.tasks)  # each task's done callback removes it from self.tasks
        await cancel_within(tasks, grace)


class Service:
    """What a daemon's main coroutine gets from its process: the stop event, the service
    manager's notifier (a no-op without NOTIFY_SOCKET), a way to load its configuration again
    as at start, and ``on_reload``, which the daemon sets to what SIGHUP should do."""

    def __init__(
        self,
        stop: asyncio.Event,
        notifier: Notifier | None = None,
        load_config: Callable[[], Any] | None = None,
    ):
        self.stop = stop
        self.notifier = notifier or Notifier(None)
        self.load_config = load_config
        self.on_reload: Callable[[], object] | None = None

    def reload(self) -> None:
        if self.on_reload is None:
            log.warning("SIGHUP ignored: the daemon is not running yet")
            return
        self.on_reload()


def check_ports_free(addresses: dict[str, tuple[str, int]]) -> None:
    """Bind each ``--option: (host, port)`` for a moment and let it go, so a daemon that could
    not listen stops before it writes anything (data dir, CA, tokens). A ConfigError names the
    first option that cannot listen. Port 0 (any free port) is not checked."""
    for option, (host, port) in addresses.items():
        if port == 0:
            continue
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
        except (OSError, UnicodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise ConfigError(f"{option} {host}:{port}: cannot listen: {reason}") from None


def ensure_private_dir(path: Path) -> Path:
    """Create the data dir (0700) and lock it for this process's lifetime: two daemons on one
    store would both serve and sync it, so the second is refused, naming the first's pid."""
    try:
        made = [d for d in (path, *path.parents) if not d.exists()]
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A directory made now is in its parent only once the parent is synced: the store's
        # own syncs cover the files in the data dir, not the data dir's entry, so a power
        # cut after a first start could take the whole data dir (store, marker, CA, tokens).
        for d in reversed(made):
            sync_dir(d.parent)
        os.chmod(path, 0o700)
        fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise ConfigError(f"--data-dir {path}: cannot create or use it: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"--data-dir {path} is in use by another process (pid {holder}); "
            "give each daemon its own data dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held_locks.append(fd)  # closed (and so released) when the process exits
    return path


_held_locks: list[int] = []


# Net allocations between two collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect the youngest generation every GC_YOUNG_THRESHOLD net allocations, not 700.

    A daemon builds objects by the ten thousand at once (a zone decoding a batch, global
    parsing an apply), none of them in reference cycles; each young collection scans them
    and the older collections it triggers scan the whole heap. With the default, a zone spent
    0.045 s of CPU decoding 10,000 synced secrets, 0.024 s with this. The older generations'
    thresholds stay as they are; at most this many more young objects wait to be collected
    (a few MB at worst)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def settle_heap() -> None:
    """Once a daemon has loaded (modules, configuration, store) and before it serves: collect
    what loading left behind, then move every object alive now out of the collector's sight
    (``gc.freeze``). They live as long as the daemon, yet each full collection walked all of
    them again: 26-40 ms a collection, ten of them (0.31 s) while 100 zones connected to a
    global, each a pause for every stream and request. Frozen objects are still freed when
    nothing refers to them; only a cycle among them is never collected, and what loading
    builds stays for the daemon's life anyway."""
    gc.collect()
    gc.freeze()


MEMORY_CHECK_INTERVAL = 10.0  # seconds between looks at the resident size


async def keep_memory_trimmed(
    stop: asyncio.Event,
    interval: float = MEMORY_CHECK_INTERVAL,
    keeper: memory.Keeper | None = None,
) -> None:
    """Until ``stop``: every ``interval`` seconds, give freed memory back to the system if
    the resident size grew past the keeper's slack since the last time (a thread does the
    walk, so the event loop never waits for it). A look is one read of /proc; a release,
    a full collection and a walk of the allocator's free lists, tens of milliseconds. Where
    a release can give nothing back (the C library is not glibc), returns at once."""
    if keeper is None:
        if not memory.available():
            return
        keeper = memory.Keeper()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):  # not wait_for: see above
                await stop.wait()
        if not stop.is_set() and keeper.due():
            await asyncio.to_thread(keeper.release)


def run_daemon(
    main: Callable[[Service], Awaitable[int]], load_config: Callable[[], Any] | None = None
) -> int:
    """Run ``main(service)`` on a fresh event loop with signal handling; return exit code.
    ``load_config`` loads the configuration again as at start, for reloads."""

    # Everything a daemon creates (store, WAL, future key files) is private to its user.
    os.umask(0o077)
    # A fatal signal from native code (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL: SQLite, grpc's
    # core, OpenSSL) would end the process without a line; Python then writes "Fatal Python
    # error" and every thread's stack (names and lines, never values) to stderr first.
    faulthandler.enable(all_threads=True)
    tune_gc()
    failpoints.arm_from_environ()  # test-only crash points; nothing unless the variable is set

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        hits = {"n": 0}

        def on_signal(sig: signal.Signals) -> None:
            hits["n"] += 1
            if hits["n"] > 1:
                log.warning("second signal: exiting now", signal=sig.name)
                os._exit(130)
            stop.set()  # first: nothing that follows may keep the daemon from stopping
            log.info("stopping", signal=sig.name)

        service = Service(stop, Notifier.from_environ(), load_config)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, service.reload)
        code = await main(service)
        # Whatever the daemon's tasks left running gets one grace; asyncio.run would then
        # cancel and wait for it without bound, so one that still runs ends the process
        # here, its stop already logged and its store closed.
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if await cancel_within(left, STOP_GRACE):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code

    return asyncio.run(runner())
