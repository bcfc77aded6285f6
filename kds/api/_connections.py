"""How many connections the API holds, and for how long: what any client, authenticated or
not, can make a daemon keep open.

Without bounds a client that opens connections and sends a request's head a byte at a time
(or nothing at all) holds each one, and a file descriptor, for as long as it likes: enough
of them and the daemon can open neither its store's files nor its zones' streams. So:

- at most MAX_CONNECTIONS connections at once, and at most PEER_CONNECTIONS of them from one
  address (so one client cannot take every place; an IPv6 address counts as its /64, which
  one host is commonly given whole, so walking its addresses does not escape it); one more
  is answered ``503`` with ``Connection: close`` and closed as soon as its request has come
  in (so the client reads the answer rather than a reset), or after LINGER_S, or at once
  when MAX_LINGERING refused connections wait already; the first refusal in a minute is
  logged;
- a connection must send a request's whole head within IDLE_S of opening or of its last
  answer (aiohttp's keep-alive timer, which closes a connection waiting for a head), and a
  kept-alive connection idle that long is closed;
- a request's body may pause at most BODY_IDLE_S between reads (kds.api._body: 408);
- a TLS handshake must end within HANDSHAKE_S, and counts as an open connection while it
  lasts; one address may have at most PEER_HANDSHAKES under way (closed at once beyond).

A connection that is refused never reaches aiohttp: ``GuardedSite`` wraps the protocol aiohttp
makes for each accepted connection and counts those open, from the accept on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

__all__ = [
    "HANDSHAKE_S",
    "IDLE_S",
    "MAX_CONNECTIONS",
    "PEER_CONNECTIONS",
    "PEER_HANDSHAKES",
    "ConnectionGate",
    "GuardedSite",
    "peer_of",
]

log = structlog.get_logger("kds.api")

# Far above what operators, kdsctl, a status page and a metrics scraper use at once, far
# below the daemons' file descriptor limit (65,536 in the systemd units).
MAX_CONNECTIONS = 1024
# Connections one address may hold at once: a quarter of the most, so a client that opens
# connections and holds them leaves room for the others (an operator, kdsctl, a status page
# and a metrics scraper use a few each); a reverse proxy in front of the API, all of whose
# clients come from its one address, still gets far more than it keeps open.
PEER_CONNECTIONS = 256
IDLE_S = 30.0
HANDSHAKE_S = 10.0
# TLS handshakes one address may have under way at once. A client's handshake takes a few
# milliseconds; an address holding this many is opening connections it does not finish.
PEER_HANDSHAKES = 32
LINGER_S = 1.0
MAX_LINGERING = 64
REFUSAL_LOG_EVERY_S = 60.0
# An IPv6 client is counted by the network of this many leading bits: a host or a customer
# is given at least a /64, and picks any address in it at will.
IPV6_PEER_BITS = 64


def peer_of(address: str) -> str:
    """What one client is counted as: its IPv4 address (also when it comes as an IPv4-mapped
    IPv6 address), or the /IPV6_PEER_BITS network of its IPv6 address; any other text as
    it is."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_loopback:
            return str(ip)
        return str(ipaddress.IPv6Network((ip, IPV6_PEER_BITS), strict=False))
    return str(ip)


def _refusal(detail: str) -> bytes:
    """The whole 503 answer, in the API's error body (kds.api._errors)."""
    body = json.dumps(
        {
            "type": "/std-errors",
            "status": 503,
            "title": "Service unavailable",
            "detail": detail,
            "instance": "",
            "invalid_parameters": [],
            "details": detail,
            "causes": [],
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGate:
    """The count of open connections against ``limit`` (and of each address's against
    ``connections_per_peer``), and when a refusal was last logged. Pure: the caller passes
    the time. A connection whose address is unknown (None) counts against the limit only."""

    def __init__(
        self,
        limit: int = MAX_CONNECTIONS,
        handshakes_per_peer: int | None = None,
        connections_per_peer: int | None = None,
    ):
        self.limit = limit
        self.handshakes_per_peer = handshakes_per_peer or PEER_HANDSHAKES
        self.connections_per_peer = connections_per_peer or PEER_CONNECTIONS
        self.handshaking: dict[str | None, int] = {}  # TLS handshakes under way, by address
        self.by_peer: dict[str, int] = {}  # open connections, by address
        self.open = 0
        self.refused = 0  # since the daemon started
        self.lingering = 0  # refused connections waiting for their request before closing
        self.refusal = _refusal(
            f"this API has {limit} connections open, the most it holds: retry later"
        )
        self.peer_refusal = _refusal(
            f"this address has {self.connections_per_peer} connections open to this API, "
            "the most one address may hold: close some, or retry later"
        )
        self._logged_at: float | None = None

    def admit(self, peer: str | None = None) -> bool:
        """Whether one more connection, from ``peer``, may open (then counted until
        ``release``); ``full`` then says whether the limit or the address's share refused it."""
        if self.full or (
            peer is not None and not _count_in(self.by_peer, peer, self.connections_per_peer)
        ):
            self.refused += 1
            return False
        self.open += 1
        return True

    @property
    def full(self) -> bool:
        return self.open >= self.limit

    def release(self, peer: str | None = None) -> None:
        self.open -= 1
        if peer is not None:
            _count_out(self.by_peer, peer)

    def begin_handshake(self, peer: str | None) -> bool:
        """Whether ``peer`` may start one more TLS handshake (then counted until
        ``end_handshake``): one address cannot fill the gate with handshakes it never ends."""
        if not _count_in(self.handshaking, peer, self.handshakes_per_peer):
            self.refused += 1
            return False
        return True

    def end_handshake(self, peer: str | None) -> None:
        _count_out(self.handshaking, peer)

    def log_due(self, now: float) -> bool:
        """Whether this refusal should be logged: the first, then one per
        REFUSAL_LOG_EVERY_S."""
        if self._logged_at is not None and now - self._logged_at < REFUSAL_LOG_EVERY_S:
            return False
        self._logged_at = now
        return True


def _count_in(counts: dict[Any, int], peer: str | None, most: int) -> bool:
    """Count one more for ``peer`` unless it has ``most`` already; whether it was counted."""
    n = counts.get(peer, 0)
    if n >= most:
        return False
    counts[peer] = n + 1
    return True


def _count_out(counts: dict[Any, int], peer: str | None) -> None:
    """Count one less for ``peer``; an address at none is forgotten."""
    n = counts.get(peer, 0) - 1
    if n > 0:
        counts[peer] = n
    else:
        counts.pop(peer, None)


class _Refused(asyncio.Protocol):
    """A connection beyond the most: answered 503, closed once its request has come in."""

    def __init__(self, answer: bytes):
        self._answer = answer
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        transport.write(self._answer)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.close()  # its request read: closing now sends no reset


class _Guarded(asyncio.Protocol):
    """One accepted connection, counted by the gate from the moment it is accepted until it
    closes, its TLS handshake included (a handshake that never ends holds a file descriptor
    just as a request that never ends does). What it reads goes to its app once there is
    one: aiohttp's protocol, or _Refused when the gate is full.

    With TLS, the handshake is made here (``loop.start_tls``), not by the server: a server's
    own TLS layer tells the protocol nothing until the handshake has ended, so a handshake
    that never ends could not be counted."""

    def __init__(
        self, make_app: Callable[[], asyncio.Protocol], gate: ConnectionGate, tls: Any
    ) -> None:
        self._make_app = make_app
        self._gate = gate
        self._tls = tls
        self._app: asyncio.Protocol | None = None
        self._held: list[bytes] = []  # read after the handshake, before the app was made
        self._held_eof = False
        self._state = "new"  # "admitted", "lingering", then "gone" once counted out
        self._peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        peer = transport.get_extra_info("peername")
        self._peer = peer_of(str(peer[0])) if isinstance(peer, tuple) and peer else None
        if gate.admit(self._peer):
            self._state = "admitted"
            app = self._make_app()
        else:
            full = gate.full
            if gate.log_due(time.monotonic()):
                if full:
                    log.warning(
                        "API connection refused: too many open",
                        open=gate.open,
                        limit=gate.limit,
                        refused_so_far=gate.refused,
                    )
                else:
                    log.warning(
                        "API connection refused: too many open from one address",
                        peer=self._peer,
                        limit=gate.connections_per_peer,
                        refused_so_far=gate.refused,
                    )
            if gate.lingering >= MAX_LINGERING:
                self._state = "gone"
                transport.close()
                return
            gate.lingering += 1
            self._state = "lingering"
            app = _Refused(gate.refusal if full else gate.peer_refusal)
            asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        if self._tls is None:
            self._start(app, transport)
            return
        if not gate.begin_handshake(self._peer):
            if gate.log_due(time.monotonic()):
                log.warning(
                    "API connection refused: too many TLS handshakes from one address",
                    peer=self._peer,
                    limit=gate.handshakes_per_peer,
                )
            self._count_out()
            transport.close()
            return
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing is read until the TLS layer is in place
        task = asyncio.ensure_future(self._handshake(transport, app))
        _HANDSHAKES.add(task)
        task.add_done_callback(_HANDSHAKES.discard)

    async def _handshake(self, raw: asyncio.Transport, app: asyncio.Protocol) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw, self, self._tls, server_side=True, ssl_handshake_timeout=HANDSHAKE_S
            )
        except (Exception, asyncio.CancelledError):
            # Failed, timed out, the peer left, or the daemon stops: start_tls closed it. Any
            # error at all counts the connection out, or its place would be lost for good.
            self._count_out()
            return
        finally:
            self._gate.end_handshake(self._peer)
        if tls is None or tls.is_closing() or self._state == "gone":
            self._count_out()  # lost right after its handshake
            return
        self._start(app, tls)

    def _start(self, app: asyncio.Protocol, transport: asyncio.BaseTransport) -> None:
        self._app = app
        app.connection_made(transport)
        held, self._held = self._held, []
        if held:
            app.data_received(b"".join(held))
        if self._held_eof and not app.eof_received():
            transport.close()

    def _count_out(self) -> None:
        if self._state == "admitted":
            self._gate.release(self._peer)
        elif self._state == "lingering":
            self._gate.lingering -= 1
        self._state = "gone"

    def connection_lost(self, exc: Exception | None) -> None:
        self._count_out()
        app, self._app = self._app, None
        if app is not None:
            app.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._app is not None:
            self._app.data_received(data)
        else:
            self._held.append(data)

    def eof_received(self) -> bool | None:
        if self._app is not None:
            return self._app.eof_received()
        self._held_eof = True
        return True  # kept open until the app, made next, says

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()


# The handshakes under way (a task each), kept so that none is collected before it ends.
_HANDSHAKES: set[asyncio.Future[None]] = set()


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, each connection admitted by ``gate`` from its accept on, and each
    TLS handshake bounded by HANDSHAKE_S (made by _Guarded, not by the server)."""

    def __init__(self, runner: web.BaseRunner, *args: Any, gate: ConnectionGate, **kw: Any):
        super().__init__(runner, *args, **kw)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        gate = self.gate
        tls = self._ssl_context
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(server, gate, tls),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
