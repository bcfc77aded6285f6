"""kds.notify against a real UNIX datagram socket the test binds, as systemd's would be."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from kds.notify import Notifier


def parse(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n") if line)


class Listener:
    def __init__(self, sock: socket.socket, address: str):
        self.sock = sock
        self.address = address

    def recv_all(self, wait: float = 0.2) -> list[dict[str, str]]:
        out = []
        self.sock.settimeout(wait)
        while True:
            try:
                out.append(parse(self.sock.recv(4096)))
            except TimeoutError:
                return out


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    s.bind(str(path))
    yield Listener(s, str(path))
    s.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"kds-test-{uuid.uuid4().hex}"
    s.bind("\0" + name)
    yield Listener(s, "@" + name)
    s.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled
    assert n.send(READY="1") is False
    n.ready("x")
    n.stopping()


def test_ready_status_stopping_reach_a_path_socket(listener: Listener) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": listener.address})
    n.ready("serving 0 zones, revision 1")
    n.status("serving 0 zones, revision 1")  # unchanged: not sent again
    n.status("serving 1 zones,\nrevision 2")  # a newline cannot start a field
    n.stopping()
    n.status("too late")
    assert listener.recv_all() == [
        {"READY": "1", "STATUS": "serving 0 zones, revision 1"},
        {"STATUS": "serving 1 zones, revision 2"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]


def test_abstract_namespace_address(abstract_listener: Listener) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": abstract_listener.address})
    assert n.send(STATUS="hello")
    assert abstract_listener.recv_all() == [{"STATUS": "hello"}]


def test_a_gone_socket_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert n.send(READY="1") is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid_only() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000"}
    assert Notifier.from_environ(env).watchdog_interval == 1.0
    env_other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environ(env_other).watchdog_interval == 0.0
    env_mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(env_mine).watchdog_interval == 1.0
    assert Notifier.from_environ({"NOTIFY_SOCKET": "@x"}).watchdog_interval == 0.0


def test_a_service_manager_that_stops_reading_never_blocks_the_sender(
    listener: Listener,
) -> None:
    """Sends run on the event loop: once the socket's queue is full (the kernel holds about
    ten datagrams for a reader that does not read), a message is dropped, with one warning,
    instead of blocking the daemon until the reader comes back."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": listener.address})
    started = time.monotonic()
    with capture_logs() as logs:
        sent = [n.send(STATUS=f"line {i}") for i in range(200)]
    assert time.monotonic() - started < 2.0
    assert sent[0] and not sent[-1]
    assert [e["event"] for e in logs] == ["cannot notify the service manager"]
    got = listener.recv_all()
    assert got[0] == {"STATUS": "line 0"} and len(got) == sent.count(True)


async def test_run_pings_while_healthy_sends_ready_once_and_stops_pinging_when_unhealthy(
    listener: Listener,
) -> None:
    got: list[dict[str, str]] = []
    done = threading.Event()

    def receive() -> None:  # as systemd does, as the messages come: its queue never fills
        listener.sock.settimeout(0.05)
        while not done.is_set():
            try:
                got.append(parse(listener.sock.recv(4096)))
            except TimeoutError:
                continue

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    n = Notifier.from_environ({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"})
    state = {"healthy": True, "ready": False, "line": "connecting to global"}
    task = asyncio.create_task(
        n.run(lambda: bool(state["healthy"]), lambda: (bool(state["ready"]), str(state["line"])))
    )
    started = time.monotonic()
    await asyncio.sleep(0.55)
    state.update(ready=True, line="synced to revision 3")
    await asyncio.sleep(0.35)
    state["healthy"] = False
    await asyncio.sleep(0.5)
    task.cancel()
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.1)
    done.set()
    reader.join()
    pings = [m for m in got if m.get("WATCHDOG") == "1"]
    # Every 0.1 s (half of 0.2 s) for the ~0.9 s it was healthy, none in the last 0.5 s.
    assert 6 <= len(pings) <= 11, (len(pings), elapsed)
    assert {"STATUS": "connecting to global"} in got
    readies = [m for m in got if "READY" in m]
    assert readies == [{"READY": "1", "STATUS": "synced to revision 3"}]
    # Nothing at all once unhealthy: the last message is from the healthy period.
    assert got.index(readies[0]) > got.index({"STATUS": "connecting to global"})


async def test_a_hung_loop_sends_no_pings(listener: Listener) -> None:
    """Pings come from the event loop: while it is blocked none is sent, so systemd's watchdog
    fires. Arrival times are read by a thread, so a busy machine cannot blur the windows."""
    arrivals: list[tuple[float, dict[str, str]]] = []
    done = threading.Event()

    def receive() -> None:
        listener.sock.settimeout(0.05)
        while not done.is_set():
            try:
                data = listener.sock.recv(4096)
            except TimeoutError:
                continue
            arrivals.append((time.monotonic(), parse(data)))

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    n = Notifier.from_environ({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"})
    task = asyncio.create_task(n.run(lambda: True, lambda: (True, "ok")))
    deadline = time.monotonic() + 5
    while not any(m.get("WATCHDOG") == "1" for _, m in arrivals) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    blocked_at = time.monotonic()
    time.sleep(0.6)  # the event loop is blocked: the task cannot run
    unblocked_at = time.monotonic()
    task.cancel()
    done.set()
    reader.join()
    assert any(m.get("WATCHDOG") == "1" for _, m in arrivals)
    # A ping already in flight when the loop blocked may land just after; none later.
    late = [
        t for t, m in arrivals if m.get("WATCHDOG") == "1" and blocked_at + 0.1 < t < unblocked_at
    ]
    assert late == []
