"""A throwaway PostgreSQL server for the tests: its own data dir, a free loopback port.

``shared_server()`` starts one for the whole test session on first use (about 1 s); it is
stopped and removed when the test process exits. The server binaries are Debian's (``pg_config
--bindir``, else /usr/lib/postgresql/*/bin); scripts/setup-postgres installs them and
.ci/run calls it. Without them a test asking for the server is skipped with the reason
(and, in CI, that skip is a failure: tests/conftest.py). As root the server runs as the
``postgres`` user (initdb refuses root); otherwise as the current user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["PgServer", "find_bindir", "shared_server", "stop_shared_server"]


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One server in a temp dir; ``url`` connects as the superuser ``postgres`` (trust).

    ``netns``: the server runs in that network namespace, listening on ``host`` (an address
    the namespace holds, reached over a veth pair: tests/netns.py)."""

    def __init__(
        self, bindir: Path, fsync: bool = False, netns: str | None = None, host: str = "127.0.0.1"
    ):
        self.bindir = bindir
        self.fsync = fsync  # off for the tests (speed); on for measurements
        self.host = host
        self.dir = Path(tempfile.mkdtemp(prefix="kds-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@{host}:{self.port}/postgres"
        self._as: list[str] = ["ip", "netns", "exec", netns] if netns else []
        if os.geteuid() == 0:
            self._as += ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        if host != "127.0.0.1":  # initdb trusts loopback only; this, the namespace's link
            with open(self.data / "pg_hba.conf", "a") as f:
                f.write("host all all samenet trust\n")

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run(
            [*self._as, str(self.bindir / tool), *args], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr[-2000:]}")

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses={self.host} -k {self.dir}"
        opts += "" if self.fsync else " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o", opts,
                  "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no checkpoint, recovery at the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: PgServer | None = None


def shared_server() -> PgServer:
    """The session's server, started on first use; skips the test when none can be."""
    global _shared
    if _shared is None:
        bindir = find_bindir()
        if bindir is None:
            pytest.skip(
                "PostgreSQL's server binaries are not installed: run scripts/setup-postgres"
            )
        server = PgServer(bindir)
        try:
            server.start()
        except RuntimeError:
            server.remove()
            raise
        _shared = server
        atexit.register(stop_shared_server)
    return _shared


def stop_shared_server() -> None:
    global _shared
    if _shared is not None:
        _shared.remove()
        _shared = None
