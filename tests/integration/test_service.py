"""Running as a service: real daemons talking the notify protocol to a socket this test binds
(as systemd's would be), and SIGHUP reloading a running global without dropping a zone."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import BIN, Cluster, Daemon, b64, free_port, wait_for

pytestmark = pytest.mark.integration


class NotifySocket:
    """A datagram socket collecting (time, {KEY: VALUE}) as a service manager would."""

    def __init__(self) -> None:
        self.name = f"kds-test-{uuid.uuid4().hex[:12]}"
        self.address = "@" + self.name  # the abstract namespace: no path length limit
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str, value: str | None = None) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in list(self.messages) if key in m and value in (None, m[key])]

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in list(self.messages) if "STATUS" in m]

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._thread.join(2)


@pytest.fixture
def notify_sockets() -> Iterator[list[NotifySocket]]:
    made: list[NotifySocket] = []
    yield made
    for s in made:
        s.close()


def _notify_env(monkeypatch: pytest.MonkeyPatch, sock: NotifySocket, watchdog_usec: int) -> None:
    # The daemon inherits the environment at start; each gets its own socket.
    monkeypatch.setenv("NOTIFY_SOCKET", sock.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)


def test_global_and_zone_notify_ready_status_watchdog_and_stopping(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, notify_sockets: list[NotifySocket]
) -> None:
    g_sock, z_sock = NotifySocket(), NotifySocket()
    notify_sockets += [g_sock, z_sock]
    _notify_env(monkeypatch, g_sock, 1_000_000)  # a ping every 0.5 s
    g = cluster.start_global()
    wait_for(lambda: g_sock.with_key("READY", "1"), 10, "global's READY=1")
    # By the time READY=1 was sent, the API answers ready.
    assert g.http.get("/readyz").status_code == 200
    [(_, ready)] = g_sock.with_key("READY", "1")
    assert ready["STATUS"] == "serving 0 zones, revision 1"

    _notify_env(monkeypatch, z_sock, 1_000_000)
    z = cluster.start_zone("zone-a", synced=False)
    wait_for(lambda: z_sock.with_key("READY", "1"), 15, "the zone's READY=1")
    assert z.http.get("/readyz").status_code == 200
    assert z_sock.with_key("READY", "1")[0][1]["STATUS"] == "synced to revision 1"
    assert z_sock.statuses()[0] == "connecting to global"
    wait_for(lambda: "serving 1 zones, revision 1" in g_sock.statuses(), 5, "global's status")

    # A write moves both status lines.
    assert g.put("/meshes/default/secrets/s1", {"type": "Secret", "data": b64("x")}).is_success
    wait_for(lambda: "serving 1 zones, revision 2" in g_sock.statuses(), 5, "global revision 2")
    wait_for(lambda: "synced to revision 2" in z_sock.statuses(), 5, "zone revision 2")

    # Watchdog pings every half of WATCHDOG_USEC (0.5 s): count them over 3 s.
    start = time.monotonic()
    time.sleep(3)
    pings = [t for t, _ in g_sock.with_key("WATCHDOG", "1") if start <= t <= start + 3]
    assert 4 <= len(pings) <= 8, pings
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 1.0, gaps  # well within WATCHDOG_USEC

    # Global goes away: the zone keeps serving its last state and says so.
    assert cluster.global_daemon.stop() == 0
    stopping = g_sock.with_key("STOPPING", "1")
    assert stopping and stopping[-1][1]["STATUS"] == "stopping"
    wait_for(
        lambda: "global unreachable, serving last state" in z_sock.statuses(), 10, "zone status"
    )
    assert z.stop(signal.SIGTERM) == 0
    assert z_sock.with_key("STOPPING", "1")


def test_without_notify_socket_nothing_changes(cluster: Cluster) -> None:
    g = cluster.start_global()
    assert g.http.get("/readyz").status_code == 200
    assert not g.events("cannot notify the service manager")


def _global_with_config(cluster: Cluster, config: Path) -> Daemon:
    """A global whose log level comes from its config file (no --log-level flag)."""
    tmp = cluster.tmp
    argv = [
        str(BIN / "globalcp"),
        "run",
        "--config",
        str(config),
        "--data-dir",
        str(tmp / "global"),
        "--api-address",
        f"127.0.0.1:{cluster.global_api}",
        "--kds-address",
        f"127.0.0.1:{cluster.kds_port}",
        "--log-format",
        "json",
    ]
    api = f"http://127.0.0.1:{cluster.global_api}"
    d = Daemon("global", argv, tmp / "global.log", api, tmp / "global")
    cluster.daemons.append(d)
    cluster.global_daemon = d
    return d.start()


def test_sighup_reloads_global_without_dropping_the_zone(cluster: Cluster) -> None:
    config = cluster.tmp / "globalcp.yaml"
    config.write_text("log-level: info\nheartbeat-interval: 2s\n")
    g = _global_with_config(cluster, config)
    cluster.start_zone("zone-a")
    before = g.zone_sync("zone-a")
    assert before["status"] == "Online"
    body = {"type": "Secret", "data": b64("same")}
    assert g.put("/meshes/default/secrets/s1", body).is_success
    assert g.put("/meshes/default/secrets/s1", body).is_success  # unchanged: a debug line
    assert not g.events("resource unchanged")  # not at info

    config.write_text("log-level: debug\nheartbeat-interval: 1s\nlog-size: 5000\n")
    g.signal(signal.SIGHUP)
    g.wait_event("reloaded: log-level info -> debug, heartbeat-interval 2s -> 1s")
    restart = g.wait_event("needs a restart: log-size")
    assert restart["changes"] == ["log-size 10000 -> 5000"]
    assert g.put("/meshes/default/secrets/s1", body).is_success
    g.wait_event("resource unchanged", name="s1")

    # A file that does not validate is refused naming the option; the daemon runs on.
    config.write_text("log-level: debug\nheartbeat-interval: soon\n")
    g.signal(signal.SIGHUP)
    refused = g.wait_event("reload refused: the running configuration is kept")
    assert "--heartbeat-interval" in refused["error"]
    assert g.http.get("/readyz").status_code == 200

    # The zone's stream was never dropped: the same connection, still online, still syncing.
    after = g.zone_sync("zone-a")
    assert after["status"] == "Online"
    assert after["connections"] == before["connections"]
    assert g.put("/meshes/default/secrets/s2", {"type": "Secret", "data": b64("y")}).is_success
    zone = next(d for d in cluster.daemons if d.name == "zone-a")
    wait_for(lambda: zone.secret("default", "s2"), 10, "s2 on the zone")
    assert g.stop() == 0


def test_sighup_before_a_config_file_changes_nothing(cluster: Cluster) -> None:
    """No --config: a reload re-reads flags and environment as at start, nothing changes."""
    g = cluster.start_global()
    g.signal(signal.SIGHUP)
    g.wait_event("reloaded: nothing changed")
    assert g.http.get("/readyz").status_code == 200


def test_a_daemon_whose_log_reader_went_away_still_stops_on_sigterm(tmp_path: Path) -> None:
    """A zone logging into a pipe nobody reads any more (its supervisor's logger died) keeps
    running and stops on SIGTERM: a log line that cannot be written is dropped, not raised."""
    zone = subprocess.Popen(
        [
            str(BIN / "zonecp"), "run", "--zone", "piped", "--data-dir", str(tmp_path / "z"),
            "--api-address", f"127.0.0.1:{free_port()}",
            # Nothing listens there: the zone keeps dialling and logging each failure.
            "--global-address", f"grpc://127.0.0.1:{free_port()}", "--insecure",
            "--reconnect-max-delay", "0.2s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert zone.stdout is not None
        assert zone.stdout.readline()  # it is up and logging
        zone.stdout.close()  # the reader goes away
        time.sleep(1)  # the zone logs into the broken pipe meanwhile
        assert zone.poll() is None, "the zone died of its broken log pipe"
        zone.send_signal(signal.SIGTERM)
        assert zone.wait(10) == 0
    finally:
        if zone.poll() is None:
            zone.kill()
            zone.wait()


@pytest.mark.parametrize(
    ("role", "sig", "says"),
    [("global", signal.SIGBUS, "Bus error"), ("zone", signal.SIGABRT, "Aborted")],
)
def test_a_daemon_dying_of_a_fatal_signal_says_where(
    cluster: Cluster, role: str, sig: signal.Signals, says: str
) -> None:
    """A fatal signal from native code (SIGBUS, as a truncated memory mapping raises; SIGABRT,
    as an abort() in a library or systemd's watchdog sends) ends a daemon without a Python
    exception; its log then ends with Python's "Fatal Python error" and the stack of every
    thread, the event loop's among them, instead of nothing."""
    g = cluster.start_global()
    d = g if role == "global" else cluster.start_zone("zone-1")
    d.signal(sig)
    assert d.proc is not None
    assert d.proc.wait(10) == -sig
    text = d.log_text()
    assert f"Fatal Python error: {says}" in text
    assert "most recent call first" in text and "asyncio" in text  # the stacks, the loop's too
    assert d.admin_token not in text.split("Fatal Python error", 1)[1]  # stacks, no values
