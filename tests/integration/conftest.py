"""Real globalcp / zonecp processes on loopback ports, driven through kdsctl and the HTTP API.

Daemons log JSON lines to a file per process; tests read those lines to assert what was
logged (warnings, resume figures) and, at the end, that no secret value ever reached a log.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent


# JSON logs the tests read; short keepalive so dead peers are noticed fast.
_TEST_ARGS = (
    "--log-format",
    "json",
    "--log-level",
    "debug",
    "--keepalive-interval",
    "1s",
    "--keepalive-timeout",
    "1s",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (httpx.HTTPError, OSError, TypeError, KeyError) as e:  # not there yet
            last = e
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Daemon:
    def __init__(self, name: str, argv: list[str], log_path: Path, api_url: str, data_dir: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.api_url = api_url
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=api_url, timeout=5)
        # Added to the environment of the next start only (e.g. a test-only crash point).
        self.env_once: dict[str, str] = {}
        # Put before argv at every start (e.g. nsenter into a mount namespace of its own).
        self.prefix: list[str] = []
        # The exit status of a process found already ended at teardown (a crash the test did
        # not cause shows here: a negative status is the signal that killed it).
        self.ended_alone: int | None = None
        self._signalled = False  # the test stopped or signalled the running process
        self._crash_armed = False  # started with a test-only crash point (kds.failpoints)
        # Exit statuses of processes of this daemon that died of a signal nobody sent them
        # (a crash in native code): the cluster fixture fails the test on any.
        self.crashes: list[int] = []

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def read_only_token(self) -> str:
        return (self.data_dir / "read-only-token").read_text().strip()

    def launch(self) -> None:
        """Start the process without waiting for its API (see ``start``)."""
        logf = open(self.log_path, "ab")  # noqa: SIM115  # the child owns it
        self._note_end()
        env = {**os.environ, **self.env_once} if self.env_once else None
        self._crash_armed = "KDS_TEST_ONLY_CRASH_AT" in self.env_once
        self.env_once = {}
        self._signalled = False
        self.proc = subprocess.Popen([*self.prefix, *self.argv], stdout=logf, stderr=logf, env=env)
        logf.close()

    def _note_end(self) -> None:
        """Record a process that died of a signal the test did not send (see ``crashes``)."""
        if self.proc is None or self.proc.poll() is None:
            return
        if self.proc.returncode < 0 and not self._signalled and not self._crash_armed:
            self.crashes.append(self.proc.returncode)
            self._signalled = True  # counted once

    def start(self) -> Daemon:
        self.launch()
        wait_for(self._ready, 15, f"{self.name} API at {self.api_url}")
        # The API needs the daemon's admin token, created in its data dir at first start.
        self.http.headers["Authorization"] = f"Bearer {self.admin_token}"
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log_text()}")
        try:
            return self.http.get("/").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.proc is not None
        self._signalled = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # The daemons dump every thread's stack to their log on SIGABRT
                # (faulthandler): what held this one is then in the failure's report.
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                raise AssertionError(
                    f"{self.name} did not stop within {timeout}s "
                    "(its threads' stacks, taken then, end its log)"
                ) from None
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self._signalled = True
        os.kill(self.proc.pid, sig)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": line, "_raw": True})
        return out

    def events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.logs()
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]

    def wait_event(self, event: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        found = wait_for(lambda: self.events(event, **match), timeout, f"{self.name} log {event!r}")
        return found[-1]  # type: ignore[no-any-return]

    # -- API shortcuts
    def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.put(path, json=body)

    def zone_sync(self, zone: str) -> dict[str, Any]:
        """Global's own figures for ``zone``: the kdsSync field of its ZoneOverview."""
        return self.get_json(f"/zones/{zone}/_overview")["kdsSync"]  # type: ignore[no-any-return]

    def get_json(self, path: str) -> Any:
        """The JSON body of a 200; None for a 404 (absent). Any other status fails the test
        with the status and the error body (errors never carry secret data), so an "absent"
        check cannot pass on a 401 or a 500."""
        r = self.http.get(path)
        if r.status_code == 200:
            return r.json()
        if r.status_code == 404:
            return None
        raise AssertionError(f"GET {path} on {self.name}: HTTP {r.status_code}: {r.text[:500]}")

    def secret(self, mesh: str, name: str) -> Any:
        return self.get_json(f"/meshes/{mesh}/secrets/{name}")


class Cluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.daemons: list[Daemon] = []
        self.kds_port = free_port()
        self.global_api = free_port()
        # Daemons started with this before their argv, their data dirs seen through ``view``
        # (tests.integration.small_disks: data dirs on small disks of their own).
        self.prefix: list[str] = []
        self.view: Callable[[Path], Path] = lambda path: path

    def start_global(self, *extra: str) -> Daemon:
        api = f"http://127.0.0.1:{self.global_api}"
        argv = [
            str(BIN / "globalcp"),
            "run",
            "--data-dir",
            str(self.tmp / "global"),
            "--api-address",
            f"127.0.0.1:{self.global_api}",
            "--kds-address",
            f"127.0.0.1:{self.kds_port}",
            *_TEST_ARGS,
            *extra,
        ]
        d = Daemon("global", argv, self.tmp / "global.log", api, self.view(self.tmp / "global"))
        d.prefix = list(self.prefix)
        self.daemons.append(d)
        self.global_daemon = d
        return d.start()

    def zone_token(self, zone: str, valid_for: str = "1h") -> Path:
        """A token for ``zone`` from global, in a file for --token-file."""
        r = self.global_daemon.http.post("/zone-tokens", json={"zone": zone, "validFor": valid_for})
        assert r.status_code == 201, r.text
        path = self.tmp / f"{zone}-{r.json()['id'][:8]}.token"
        path.touch(mode=0o600)  # as `kdsctl generate zone-token --output-file` writes it
        path.write_text(r.json()["token"] + "\n")
        return path

    def start_zone(
        self,
        zone: str,
        *extra: str,
        api_port: int | None = None,
        synced: bool = True,
        token_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        """Start a zone the secure way (TLS verified with global's CA, a token from global);
        with ``synced`` wait until it holds global's default mesh."""
        port = api_port or free_port()
        token_file = token_file or self.zone_token(zone)
        argv = [
            str(BIN / "zonecp"),
            "run",
            "--zone",
            zone,
            "--global-address",
            f"grpcs://127.0.0.1:{self.kds_port}",
            "--ca-file",
            str(self.tmp / "global" / "ca.crt"),
            "--token-file",
            str(token_file),
            "--data-dir",
            str(self.tmp / zone),
            "--api-address",
            f"127.0.0.1:{port}",
            *_TEST_ARGS,
            "--reconnect-max-delay",
            "1s",
            *extra,
        ]
        d = Daemon(
            zone,
            argv,
            self.tmp / f"{zone}.log",
            f"http://127.0.0.1:{port}",
            self.view(self.tmp / zone),
        )
        d.prefix = list(self.prefix)
        self.daemons.append(d)
        d.env_once = dict(env or {})
        d.start()
        if synced:
            wait_for(lambda: d.get_json("/meshes/default"), what=f"{zone} first sync")
        return d

    def restart(self, d: Daemon) -> Daemon:
        d.stop()
        return d.start()

    def kdsctl(
        self,
        *args: str,
        api: str | None = None,
        input: str | None = None,
        check: bool = True,
        token: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kdsctl against ``api`` (default global) with that daemon's admin token."""
        url = api or f"http://127.0.0.1:{self.global_api}"
        if token is None:
            token = next((d.admin_token for d in self.daemons if d.api_url == url), "")
        env = {**os.environ, "KDSCTL_API_URL": url, "KDSCTL_TOKEN": token}
        r = subprocess.run(
            [str(BIN / "kdsctl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"kdsctl {' '.join(args)} failed: {r.stdout}\n{r.stderr}")
        return r

    def all_logs(self) -> str:
        return "\n".join(d.log_text() for d in self.daemons)

    def close(self) -> None:
        for d in self.daemons:
            if d.proc and d.proc.poll() is not None and not d._signalled:
                d.ended_alone = d.proc.returncode
            d._note_end()
            if d.proc and d.proc.poll() is None:
                try:
                    d.signal(signal.SIGCONT)
                    d.stop()
                except (AssertionError, ProcessLookupError):
                    d.proc.kill()
            d.http.close()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for d in c.daemons:
                sys.stderr.write(f"\n----- {d.name} log{_ended(d)} -----\n{d.log_text()[-6000:]}\n")
        elif crashed := [d for d in c.daemons if d.crashes]:
            # A test can pass with a daemon dead of SIGSEGV or SIGBUS beside it (one whose
            # checks do not involve it); such a crash is a bug whatever the test checks.
            pytest.fail(
                "; ".join(f"{d.name} died of {_signal_names(d.crashes)}" for d in crashed)
                + " during the test, which did not kill it. Its log's end:\n"
                + crashed[0].log_text()[-6000:]
            )


def _signal_names(codes: list[int]) -> str:
    names = []
    for rc in codes:
        try:
            names.append(signal.Signals(-rc).name)
        except ValueError:
            names.append(f"signal {-rc}")
    return ", ".join(names)


def _ended(d: Daemon) -> str:
    """How a daemon that was gone before teardown ended, for the failure's report."""
    rc = d.ended_alone
    if rc is None:
        return ""
    if rc < 0:
        return f" (it had died of {_signal_names([rc])} before teardown)"
    return f" (it had exited with status {rc} before teardown)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
