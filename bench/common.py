"""Plumbing shared by the harness's processes: ports, process memory, a byte-counting proxy,
line-protocol readers for the fleet processes, and percentiles.

The fleet processes (bench.fleet for zones, bench.etcd_watch for etcd watchers) print one
JSON object per line on stdout; ``Fleet`` reads them on a thread and lets the driver wait
until every member reached a revision.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from kds.model import Resource
from kds.protocol.applier import DecodedBatch, Incoming

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# --profile DIR: each kds process the harness starts is sampled by py-spy (the bench extra
# installs it) into DIR/<scenario>-<process>-<pid>.txt, py-spy's "raw" format (collapsed
# stacks: flamegraph.pl or speedscope read it). Sampling costs the sampled process some CPU,
# so a profiled run's figures are not the benchmark's.
_profile: dict[str, Any] = {"dir": None, "spies": []}


def profile_into(directory: Path) -> None:
    """Sample every process ``sample`` is given from now on into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _profile["dir"] = directory


def sample(pid: int, name: str) -> None:
    """With --profile, start py-spy on ``pid`` (it writes its file when the process ends)."""
    directory = _profile["dir"]
    if directory is None:
        return
    exe = BIN / "py-spy"
    out = directory / f"{name}-{pid}.txt"
    _profile["spies"].append(
        subprocess.Popen(
            [
                *(str(exe), "record", "--pid", str(pid), "--rate", "250"),
                *("--format", "raw", "--output", str(out), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )


def samplers_done(timeout: float = 60.0) -> None:
    """Wait for the py-spy processes (each ends when its process has)."""
    for spy in _profile["spies"]:
        try:
            spy.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(spy)
    _profile["spies"].clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no answer from {url} within {timeout}s")


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def proc_status_kib(pid: int, field: str) -> int:
    """A figure from /proc/PID/status in KiB (VmRSS: resident now; VmHWM: peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_mb(pid: int) -> float:
    return proc_status_kib(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return proc_status_kib(pid, "VmHWM") / 1024


def cpu_s(pid: int) -> float:
    """CPU time (user + system, seconds) a process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's resident memory every ``every`` seconds on a thread; ``peak`` is
    the highest (MB) seen while the ``with`` block ran."""

    def __init__(self, pid: int, every: float = 0.1):
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def stop_process(p: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


class Fleet:
    """One or more fleet processes whose members report applied revisions on stdout.

    Each line is JSON: {"m": member, "rev": revision, "n": changes, "t": unix time} for an
    apply, {"connected": k} as members connect, {"error": text} on a failure.
    """

    def __init__(self, procs: list[subprocess.Popen[str]], members: int, first: int = 0):
        self.procs = procs
        self.members = members
        self.first = first  # member numbers start here
        self.cond = threading.Condition()
        self.rev = [0] * members  # highest revision each member applied
        self.count = [0] * members  # changes each member applied (etcd: events received)
        self.events: list[list[tuple[int, float]]] = [[] for _ in range(members)]
        self.connected = 0
        self.errors: list[str] = []
        # One thread reads every process's reports: a thread per process meant, with a
        # process per member, a thread woken (and the interpreter lock handed over) for
        # every member at every write, on the cores the members and the server share.
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        sel = selectors.DefaultSelector()
        partial: dict[int, bytes] = {}
        for p in self.procs:
            assert p.stdout is not None
            fd = p.stdout.fileno()
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, p)
            partial[fd] = b""
        while sel.get_map():
            for key, _ in sel.select():
                fd, p = key.fd, key.data
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    with self.cond:
                        self.errors.append(f"fleet process {p.pid} exited with {p.wait()}")
                        self.cond.notify_all()
                    continue
                *lines, partial[fd] = (partial[fd] + chunk).split(b"\n")
                msgs = []
                for line in lines:
                    try:
                        msgs.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
                with self.cond:
                    for msg in msgs:
                        self._take(msg)
                    self.cond.notify_all()
        sel.close()

    def _take(self, msg: dict[str, Any]) -> None:
        if "m" in msg:
            m = msg["m"] - self.first
            self.rev[m] = max(self.rev[m], msg["rev"])
            self.count[m] += msg.get("n", 0)
            self.events[m].append((msg["rev"], msg["t"]))
        elif "connected" in msg:
            self.connected += msg["connected"]
        elif "error" in msg:
            self.errors.append(msg["error"])

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: pred() or bool(self.errors), timeout)
            if self.errors and not pred():
                raise RuntimeError(f"{what}: {self.errors[0]}")
            if not ok:
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}")

    def wait_connected(self, timeout: float = 120.0) -> None:
        self.wait(lambda: self.connected >= self.members, timeout, "members to connect")

    def wait_revision(self, rev: int, timeout: float = 300.0) -> None:
        self.wait(lambda: min(self.rev) >= rev, timeout, f"every member at revision {rev}")

    def wait_count(self, n: int, timeout: float = 300.0) -> None:
        self.wait(lambda: min(self.count) >= n, timeout, f"every member to receive {n} changes")

    def last_time(self, member: int) -> float:
        with self.cond:
            return self.events[member][-1][1]

    def first_at(self, member: int, rev: int) -> float:
        """When ``member`` first applied ``rev`` or later."""
        with self.cond:
            for r, t in self.events[member]:
                if r >= rev:
                    return t
        raise RuntimeError(f"member {member} never reached revision {rev}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None and p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()  # fleets stop on stdin EOF
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(p)


def start_fleet(
    module: str,
    members: int,
    procs: int,
    args: list[str],
    log_dir: Path,
    name: str,
    first: int = 0,
    environ: dict[str, str] | None = None,
) -> Fleet:
    """Start ``members`` (numbered from ``first``) across ``procs`` processes of
    ``python -m module``, with ``environ`` (os.environ by default)."""
    procs = max(1, min(procs, members))
    out: list[subprocess.Popen[str]] = []
    per = -(-members // procs)
    for i in range(procs):
        start, count = first + i * per, min(per, members - i * per)
        if count <= 0:
            break
        log = open(log_dir / f"{name}-{i}.log", "ab")  # noqa: SIM115  # the child owns it
        out.append(
            subprocess.Popen(
                [sys.executable, "-m", module, "--first", str(start), "--count", str(count), *args],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**(os.environ if environ is None else environ), "PYTHONUNBUFFERED": "1"},
            )
        )
        log.close()
        sample(out[-1].pid, f"{log_dir.name}-{name}-{i}")
    return Fleet(out, members, first)


# Lines reported on the event loop's thread, written together at the end of the loop's turn.
_pending: list[str] = []
# A write to a pipe larger than PIPE_BUF may be split, and a writer thread's line then land
# inside the loop's batch: one writer at a time.
_write_lock = threading.Lock()


def _write_out(data: bytes) -> None:
    view = memoryview(data)
    with _write_lock:
        while view:
            view = view[os.write(1, view) :]


def _flush_pending() -> None:
    data = "".join(_pending).encode()
    _pending.clear()
    _write_out(data)


@atexit.register
def _flush_at_exit() -> None:
    if _pending:
        _flush_pending()


def report_line(**fields: Any) -> None:
    """Write one JSON line to stdout (fleet processes; any thread), as cheaply as the
    reporting thread can: on an event loop's thread the line waits for the end of the
    loop's turn, so every zone of a process that applied one write reports in one write
    call; from any other thread (a zone's writer thread, applying a snapshot part) it is
    written at once. No thread is woken for it: handing lines to a writer thread cost a
    zone alone in its process about a fifth of its CPU per single write (py-spy), the
    wake-up and the interpreter lock's hand-off each time, and counted it as the zone's.
    The times reported are taken before the call, so neither way delays a figure."""
    line = json.dumps(fields, separators=(",", ":")) + "\n"
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _write_out(line.encode())
        return
    if not _pending:
        loop.call_soon(_flush_pending)
    _pending.append(line)


async def stdin_closed() -> None:
    """Returns when the harness closes this process's stdin (how fleets are told to stop)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


class CountingProxy:
    """A TCP proxy on loopback that counts the bytes it forwards each way."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.down_bytes = 0  # target -> client (global -> zone)
        self.up_bytes = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, down: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await r.read(65536):
                    if down:
                        self.down_bytes += len(data)
                    else:
                        self.up_bytes += len(data)
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(OSError):
                w.close()

        await asyncio.gather(pipe(reader, uw, False), pipe(ur, writer, True))

    def reset(self) -> None:
        self.down_bytes = self.up_bytes = 0

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


# ---------------------------------------------------------------- in-process store benchmarks


def synced_put(r: Resource, rev: int, now: str) -> Incoming:
    """A put of ``r`` at revision ``rev``, as a zone receives it from global."""
    return Incoming(rev, r.key, r.with_meta(version=rev, creation_time=now, modification_time=now))


def final_batch(
    seq: int, from_revision: int, changes: list[Incoming], snapshot: bool = False
) -> DecodedBatch:
    """A whole batch (its last part) carrying ``changes``, up to the last one's revision."""
    end = changes[-1].revision
    return DecodedBatch(
        seq=seq,
        from_revision=from_revision,
        revision=end,
        snapshot=snapshot,
        final=True,
        head_revision=end,
        changes=tuple(changes),
    )
