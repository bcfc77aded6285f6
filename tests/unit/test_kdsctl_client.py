"""kdsctl's HTTP client (the standard library's http.client) against scripted servers on
127.0.0.1: proxies from the environment, a kept-alive connection the server closed, the
timeout, a base URL with a path, and URLs it cannot use."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

import kdsctl.answers
import kdsctl.client
from kdsctl.client import ApiClient, ApiError, ApiUnreachable

OK = json.dumps({"items": []}).encode()


def _answer(status: str = "200 OK", body: bytes = OK, close: bool = False) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class Scripted:
    """Accepts connections one after another; ``script(conn, heads)`` serves each one."""

    def __init__(self, script: Callable[[socket.socket, list[bytes]], None]):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        self.connections = 0
        self._script = script
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._script(conn, self.heads)


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    made: list[Scripted] = []

    def make(script: Callable[[socket.socket, list[bytes]], None]) -> Scripted:
        made.append(Scripted(script))
        return made[-1]

    yield make
    for s in made:
        s.sock.close()


def _one_answer(conn: socket.socket, heads: list[bytes]) -> None:
    """Answers one request, keeps the connection alive in HTTP terms, then closes it."""
    heads.append(_read_head(conn))
    conn.sendall(_answer())


def _serve_all(conn: socket.socket, heads: list[bytes]) -> None:
    """Answers every request on the connection, keeping it alive."""
    while head := _read_head(conn):
        heads.append(head)
        conn.sendall(_answer())


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_plain_http_goes_through_the_environment_proxy(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)
    proxy = scripted(_one_answer)
    monkeypatch.setenv("HTTP_PROXY", f"http://ops:p%40ss@127.0.0.1:{proxy.port}")
    client = ApiClient("http://global.example:5681", timeout=5, token="t0k")
    try:
        assert client.get("/meshes") == {"items": []}
    finally:
        client.close()
    head = proxy.heads[0].decode()
    assert head.startswith("GET http://global.example:5681/meshes HTTP/1.1\r\n")
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'ops:p@ss').decode()}" in head
    assert "Authorization: Bearer t0k" in head


def test_no_proxy_bypasses_it(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)
    proxy = scripted(_one_answer)
    api = scripted(_one_answer)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    client = ApiClient(f"http://127.0.0.1:{api.port}", timeout=5)
    try:
        assert client.get("/meshes") == {"items": []}
    finally:
        client.close()
    assert proxy.connections == 0 and api.heads[0].startswith(b"GET /meshes HTTP/1.1")


def test_https_asks_the_proxy_for_a_tunnel(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)

    def refuse(conn: socket.socket, heads: list[bytes]) -> None:
        heads.append(_read_head(conn))
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    proxy = scripted(refuse)
    monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")
    client = ApiClient("https://global.example:5681", timeout=5)
    with pytest.raises(ApiUnreachable, match=r"the proxy refused the tunnel.*403"):
        client.get("/meshes")
    assert proxy.heads[0].startswith(b"CONNECT global.example:5681 HTTP/1.")


def test_a_closed_kept_alive_connection_is_replaced_for_a_read_only(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)
    api = scripted(_one_answer)  # closes each connection after one answer
    client = ApiClient(f"http://127.0.0.1:{api.port}/", timeout=5)
    try:
        assert client.get("/a") == {"items": []}
        assert client.get("/b") == {"items": []}  # sent again on a new connection
        assert api.connections == 2
        # A write is not sent twice: the server may have applied it before closing.
        with pytest.raises(ApiUnreachable, match="closed the connection without an answer") as e:
            client.post("/c", {})
    finally:
        client.close()
    assert [h.split(b" ")[1] for h in api.heads] == [b"/a", b"/b"]
    # The API answered on that connection: not the sync port (a global stopping under a
    # long apply was named as one), and the write may have been made.
    assert "sync port" not in str(e.value)
    assert "it may be stopping or restarting" in str(e.value)
    assert "the write may have been made: read it back" in str(e.value)


def test_keep_alive_reuses_one_connection(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)

    api = scripted(_serve_all)
    client = ApiClient(f"http://127.0.0.1:{api.port}/api/v1", timeout=5)
    try:
        for _ in range(3):
            client.get("/meshes")
    finally:
        client.close()
    assert api.connections == 1
    assert all(h.startswith(b"GET /api/v1/meshes HTTP/1.1") for h in api.heads)


def test_a_connection_idle_too_long_is_not_used_for_a_write(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API closes a connection idle for 30 s; a write sent on it as it does so would end
    without an answer, so the client opens a new one after REUSE_IDLE_S of quiet."""
    clear_proxy_env(monkeypatch)

    api = scripted(_serve_all)
    client = ApiClient(f"http://127.0.0.1:{api.port}/", timeout=5)
    clock = [1000.0]
    monkeypatch.setattr(kdsctl.client, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    try:
        client.get("/a")
        clock[0] += kdsctl.client.REUSE_IDLE_S - 1
        client.post("/b", {})
        assert api.connections == 1
        clock[0] += kdsctl.client.REUSE_IDLE_S
        client.post("/c", {})
        assert api.connections == 2
    finally:
        client.close()


def test_no_answer_within_the_timeout(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)
    done = threading.Event()

    def hang(conn: socket.socket, heads: list[bytes]) -> None:
        heads.append(_read_head(conn))
        done.wait(10)

    api = scripted(hang)
    client = ApiClient(f"http://127.0.0.1:{api.port}", timeout=0.2)
    try:
        with pytest.raises(ApiUnreachable, match=r"no answer from .*/meshes within 0\.2s"):
            client.get("/meshes")
    finally:
        done.set()
        client.close()


def test_an_answer_trickled_a_byte_at_a_time_ends_after_the_timeout(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each byte well within the timeout, the answer far past it: the timeout bounds the
    answer, not each read of it (before, this held the client 0.05 s per byte: 6 s)."""
    clear_proxy_env(monkeypatch)
    done = threading.Event()

    def trickle(conn: socket.socket, heads: list[bytes]) -> None:
        heads.append(_read_head(conn))
        for byte in _answer(body=OK + b" " * 80):
            if done.wait(0.05):
                return
            conn.sendall(bytes([byte]))

    _get_refused_within(
        scripted(trickle), 0.5, r"no whole answer from .*/meshes within 0\.5s", 2, done
    )


def _get_refused_within(
    api: Scripted, timeout: float, match: str, seconds: float, done: threading.Event
) -> None:
    """GET /meshes from ``api`` with ``timeout`` ends ApiUnreachable matching ``match``
    within ``seconds``; ``done`` then tells the server's script to stop."""
    client = ApiClient(f"http://127.0.0.1:{api.port}", timeout=timeout)
    start = time.monotonic()
    try:
        with pytest.raises(ApiUnreachable, match=match):
            client.get("/meshes")
        assert time.monotonic() - start < seconds
    finally:
        done.set()
        client.close()


def test_interim_answers_without_end_are_refused_past_the_answer_limit(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    """http.client skips any number of 1xx answers: before, a server sending them without end
    held the client for as long as it did."""
    clear_proxy_env(monkeypatch)
    monkeypatch.setattr(kdsctl.answers, "MAX_ANSWER_BYTES", 64 * 1024)
    done = threading.Event()

    def interim(conn: socket.socket, heads: list[bytes]) -> None:
        heads.append(_read_head(conn))
        with contextlib.suppress(OSError):
            while not done.is_set():
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)

    _get_refused_within(scripted(interim), 5, r"interim \(1xx\) answers, is larger than", 20, done)


def test_a_large_answer_may_take_longer_than_the_timeout_at_a_steady_pace(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second more per MiB: 3 MiB sent over 0.6 s arrives with a 0.2 s timeout."""
    clear_proxy_env(monkeypatch)
    body = json.dumps({"items": ["x" * 1024] * 3 * 1024}).encode()

    def steady(conn: socket.socket, heads: list[bytes]) -> None:
        heads.append(_read_head(conn))
        answer = _answer(body=body, close=True)
        step = len(answer) // 12 + 1
        for i in range(0, len(answer), step):
            time.sleep(0.05)
            conn.sendall(answer[i : i + step])

    api = scripted(steady)
    client = ApiClient(f"http://127.0.0.1:{api.port}", timeout=0.2)
    try:
        assert len(client.get("/meshes")["items"]) == 3 * 1024
    finally:
        client.close()


def test_an_error_answer_that_is_not_json_names_the_status(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)

    def teapot(conn: socket.socket, heads: list[bytes]) -> None:
        heads.append(_read_head(conn))
        conn.sendall(_answer("502 Bad Gateway", b"<html>", close=True))

    api = scripted(teapot)
    client = ApiClient(f"http://127.0.0.1:{api.port}", timeout=5)
    with pytest.raises(ApiError, match="HTTP 502 Bad Gateway"):
        client.get("/meshes")


@pytest.mark.parametrize(
    "url", ["127.0.0.1:5681", "ftp://127.0.0.1", "http://", "http://127.0.0.1:99999"]
)
def test_an_unusable_url_says_so(url: str) -> None:
    with pytest.raises(ApiUnreachable, match="is not a valid URL"):
        ApiClient(url, timeout=5).get("/meshes")
