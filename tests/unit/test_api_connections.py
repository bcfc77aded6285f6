"""What a client can make the API hold (kds.api._connections): connections beyond the most
are answered 503 and closed; a request's head that does not arrive in time, trickled or not,
and a body that pauses too long end their connection. The real API (serve_api) on a loopback
port, with a small limit and short timeouts so the tests need not open a thousand
connections nor wait half a minute."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

import kds.api._body
import kds.api._connections
from kds.api import ApiContext, serve_api
from kds.api._connections import REFUSAL_LOG_EVERY_S, ConnectionGate, _Guarded, peer_of
from kds.api.auth import ApiTokens
from kds.logging import HttpServerErrors
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore
from kds.tls import ReloadingServerSSLContext, issue_server_cert, make_ca

LIMIT = 3
IDLE = 0.6


async def _serve(
    store: SqliteGlobalStore, request: pytest.FixtureRequest, tls: ssl.SSLContext | None = None
) -> web.AppRunner:
    """The API on a loopback port with this module's small limits; a test's
    ``@pytest.mark.peer_connections(N)`` and ``@pytest.mark.peer_handshakes(N)`` set how many
    connections, and TLS handshakes under way, one address may have."""
    with pytest.MonkeyPatch.context() as mp:
        for name, constant in (
            ("peer_connections", "PEER_CONNECTIONS"),
            ("peer_handshakes", "PEER_HANDSHAKES"),
        ):
            marker = request.node.get_closest_marker(name)
            if marker is not None:
                mp.setattr(kds.api._connections, constant, marker.args[0])
        return await serve_api(
            ApiContext(store=store, role="global"),
            ("127.0.0.1", 0),
            ssl_context=tls,
            max_connections=LIMIT,
            idle_s=IDLE,
        )


@pytest.fixture
async def api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[int]:
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "global.db"))
    runner = await _serve(store, request)
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
        store.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of one answer."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return status, body


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except TimeoutError:
        return False


def test_the_gate_counts_refuses_and_logs_once_a_minute() -> None:
    gate = ConnectionGate(2)
    assert gate.admit() and gate.admit()
    assert not gate.admit() and gate.refused == 1 and gate.open == 2
    gate.release()
    assert gate.admit() and gate.open == 2
    assert gate.log_due(100.0)
    assert not gate.log_due(100.0 + REFUSAL_LOG_EVERY_S - 1)
    assert gate.log_due(100.0 + REFUSAL_LOG_EVERY_S)
    assert b"503 Service Unavailable" in gate.refusal and b"Connection: close" in gate.refusal


async def test_a_connection_beyond_the_most_gets_503_and_the_others_are_served(api: int) -> None:
    held = [await asyncio.open_connection("127.0.0.1", api) for _ in range(LIMIT)]
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", api)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = await _answer(reader)
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == 503 and f"{LIMIT} connections open" in answer["detail"]
    refusals = [e for e in logs if e["event"] == "API connection refused: too many open"]
    assert len(refusals) == 1 and refusals[0]["limit"] == LIMIT, logs
    writer.close()
    # One held connection sends a request: it is served as usual.
    r, w = held[0]
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, body = await _answer(r)
    assert status == 200 and json.loads(body)["role"] == "global"
    for _, w in held:
        w.close()


async def test_a_head_not_sent_in_time_ends_the_connection_even_trickled(api: int) -> None:
    silent_r, silent_w = await asyncio.open_connection("127.0.0.1", api)
    trickle_r, trickle_w = await asyncio.open_connection("127.0.0.1", api)
    trickle_w.write(b"GET / HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        for _ in range(100):  # a header byte every 50 ms: a head that never ends
            await asyncio.sleep(0.05)
            if trickle_w.is_closing():
                return
            trickle_w.write(b"X")

    task = asyncio.create_task(trickle())
    assert await _closed_within(silent_r, IDLE + 3)
    assert await _closed_within(trickle_r, 3)
    task.cancel()
    # The slots are free again: as many new connections as the most are all served.
    for _ in range(LIMIT):
        r, w = await asyncio.open_connection("127.0.0.1", api)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await _answer(r))[0] == 200
        w.close()
    silent_w.close()
    trickle_w.close()


async def test_a_body_that_pauses_too_long_is_a_408(
    api: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kds.api._body, "BODY_IDLE_S", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", api)
    writer.write(
        b"PUT /meshes/m1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"type": "Mesh", '
    )
    status, body = await _answer(reader)
    assert status == 408, body
    assert "no part of the request body arrived for 0.3 s" in json.loads(body)["detail"]
    writer.close()


def test_the_gate_bounds_the_connections_of_one_address() -> None:
    gate = ConnectionGate(10, connections_per_peer=2)
    assert gate.admit("192.0.2.1") and gate.admit("192.0.2.1")
    assert not gate.admit("192.0.2.1") and gate.refused == 1 and not gate.full
    assert gate.admit("192.0.2.2")  # another address is not held back
    assert gate.admit(None) and gate.admit(None) and gate.admit(None)  # unknown: the limit only
    gate.release("192.0.2.1")
    assert gate.admit("192.0.2.1")
    for peer in ("192.0.2.1", "192.0.2.1", "192.0.2.2", None, None, None):
        gate.release(peer)
    assert gate.by_peer == {} and gate.open == 0


def test_a_client_is_counted_by_its_ipv4_address_or_its_ipv6_64() -> None:
    assert peer_of("192.0.2.7") == "192.0.2.7"
    assert peer_of("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4 through an IPv6 socket
    assert peer_of("2001:db8:1:2:a:b:c:d") == peer_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert peer_of("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert peer_of("fe80::1%eth0") == "fe80::/64"
    assert peer_of("::1") == "::1"
    assert peer_of("not an address") == "not an address"


class _Transport(asyncio.Transport):
    def __init__(self, peername: tuple[object, ...]):
        super().__init__()
        self.peername = peername
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peername if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass


async def test_every_address_of_one_ipv6_64_shares_one_share_of_connections() -> None:
    """A client that walks the addresses of its /64 (each connection from a new one) is held
    to one address's share; a client in another /64 is not."""
    gate = ConnectionGate(100, connections_per_peer=3)
    made: list[str] = []

    def connect(address: str) -> _Guarded:
        guarded = _Guarded(lambda: _App(made), gate, None)
        guarded.connection_made(_Transport((address, 443, 0, 0)))
        return guarded

    held = [connect(f"2001:db8:1:2::{n:x}") for n in range(1, 4)]
    assert len(made) == 3
    connect("2001:db8:1:2:ffff::1")
    assert len(made) == 3 and gate.refused == 1 and gate.by_peer == {"2001:db8:1:2::/64": 3}
    connect("2001:db8:1:3::1")
    assert len(made) == 4
    held[0].connection_lost(None)
    connect("2001:db8:1:2::99")
    assert len(made) == 5


class _App(asyncio.Protocol):
    def __init__(self, made: list[str]):
        made.append("app")


async def _get_from(port: int, source: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return await _answer(reader)
    finally:
        writer.close()


@pytest.mark.peer_connections(2)
async def test_one_address_cannot_take_every_connection(api: int) -> None:
    """An address holding its share of connections is answered 503 naming that share, and
    logged; another address still gets in, and the first gets in again once it closes one."""
    held = [await asyncio.open_connection("127.0.0.1", api) for _ in range(2)]
    await asyncio.sleep(0.1)
    with capture_logs() as logs:
        status, body = await _get_from(api, "127.0.0.1")
    assert status == 503
    assert "this address has 2 connections open" in json.loads(body)["detail"]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "API connection refused: too many open from one address"
    ]
    assert (await _get_from(api, "127.0.0.2"))[0] == 200
    held[0][1].close()
    await asyncio.sleep(0.1)
    assert (await _get_from(api, "127.0.0.1"))[0] == 200
    held[1][1].close()


def test_the_gate_bounds_the_handshakes_of_one_address() -> None:
    gate = ConnectionGate(10, handshakes_per_peer=2)
    assert gate.begin_handshake("192.0.2.1") and gate.begin_handshake("192.0.2.1")
    assert not gate.begin_handshake("192.0.2.1") and gate.refused == 1
    assert gate.begin_handshake("192.0.2.2")  # another address is not held back
    gate.end_handshake("192.0.2.1")
    assert gate.begin_handshake("192.0.2.1")
    for peer in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        gate.end_handshake(peer)
    assert gate.handshaking == {}


@pytest.fixture
async def tls_api(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[int, ssl.SSLContext]]:
    """The API over TLS, with its own CA."""
    ca = make_ca("test CA")
    pair = issue_server_cert(ca, ["127.0.0.1"])
    (tmp_path / "api.crt").write_bytes(pair.cert_pem)
    (tmp_path / "api.key").write_bytes(pair.key_pem)
    server_tls = ReloadingServerSSLContext(tmp_path / "api.crt", tmp_path / "api.key").context
    client_tls = ssl.create_default_context(cadata=ca.cert_pem.decode())
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "global.db"))
    runner = await _serve(store, request, server_tls)
    try:
        yield int(runner.addresses[0][1]), client_tls
    finally:
        await runner.cleanup()
        store.close()


async def _get_over_tls(port: int, tls: ssl.SSLContext) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=tls), 5)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return await _answer(reader)
    finally:
        writer.close()


async def test_tls_handshakes_under_way_count_against_the_most(
    tls_api: tuple[int, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections that never finish their TLS handshake hold a file descriptor each, as
    open connections do: they count against the most from the accept on, and are closed
    once the handshake has taken HANDSHAKE_S, which frees their places."""
    monkeypatch.setattr(kds.api._connections, "HANDSHAKE_S", 1.0)
    port, tls = tls_api
    assert (await _get_over_tls(port, tls))[0] == 200
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(LIMIT)]
    await asyncio.sleep(0.1)
    status, body = await _get_over_tls(port, tls)  # handshaked, then refused
    assert status == 503 and f"{LIMIT} connections open" in json.loads(body)["detail"]
    for reader, _ in silent:
        assert await _closed_within(reader, 3), "a handshake outlived HANDSHAKE_S"
    assert (await _get_over_tls(port, tls))[0] == 200
    for _, writer in silent:
        writer.close()


@pytest.mark.peer_handshakes(2)
async def test_one_address_cannot_hold_more_than_its_share_of_handshakes(
    tls_api: tuple[int, ssl.SSLContext],
) -> None:
    """Beyond its share, a new connection from an address still in handshakes is closed at
    once, so one client cannot fill the API with handshakes it never ends."""
    port, tls = tls_api
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _closed_within(reader, 2), "a third handshake from one address was held"
    for _, w in silent:
        w.close()
    writer.close()
    await asyncio.sleep(0.1)
    assert (await _get_over_tls(port, tls))[0] == 200  # their places are free again


async def test_a_failed_handshake_frees_its_place(tls_api: tuple[int, ssl.SSLContext]) -> None:
    port, tls = tls_api
    for _ in range(LIMIT + 2):  # plaintext spoken to a TLS port, more times than the most
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await _closed_within(reader, 3)
        writer.close()
    await asyncio.sleep(0.1)
    assert (await _get_over_tls(port, tls))[0] == 200


async def test_a_request_the_http_server_cannot_parse_never_logs_its_text(
    api: int, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp answers 400 itself and logged the error with the raw header line: a token
    file with a Windows line ending put the token in the log. One structlog line names the
    error's type and the client instead; a flood of them is one line a minute."""
    token = "admin-token-that-must-not-be-logged"
    server_log = logging.getLogger("aiohttp.server")
    errors = HttpServerErrors()
    server_log.addFilter(errors)
    try:
        with caplog.at_level(logging.DEBUG), capture_logs() as logs:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", api)
                writer.write(
                    b"GET /meshes HTTP/1.1\r\nHost: x\r\n"
                    + f"Authorization: Bearer {token}\r\r\n\r\n".encode()
                )
                await writer.drain()
                status, _ = await _answer(reader)
                assert status == 400
                writer.close()
    finally:
        server_log.removeFilter(errors)
    assert token not in caplog.text and token not in repr(logs)
    refused = [e for e in logs if e["event"].startswith("API request refused by the HTTP")]
    assert len(refused) == 1 and refused[0]["error"] == "BadHttpMessage"
    assert refused[0]["client"] == "127.0.0.1" and refused[0]["status"] == 400
    assert errors.held_back == 2


async def test_a_token_that_is_not_utf8_is_refused_not_a_server_error(tmp_path: Path) -> None:
    """aiohttp gives a header's non-UTF-8 bytes as surrogates; comparing them answered 500."""
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "global.db"))
    tokens = ApiTokens("a" * 32, "r" * 32, tmp_path / "admin-token")
    runner = await serve_api(
        ApiContext(store=store, role="global", tokens=tokens), ("127.0.0.1", 0)
    )
    try:
        port = int(runner.addresses[0][1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /meshes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
        await writer.drain()
        status, _ = await _answer(reader)
        writer.close()
    finally:
        await runner.cleanup()
        store.close()
    assert status == 401
