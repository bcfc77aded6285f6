"""How many connections the API holds, and for how long: what any client, authenticated or
not, can make a daemon keep open.

Without bounds a client that opens connections and sends a request's head a byte at a time
(or nothing at all) holds each one, and a file descriptor, for as long as it likes: enough
of them and the daemon can open neither its store's files nor its zones' streams. So:

- at most MAX_CONNECTIONS connections at once; one more is answered ``503`` with
  ``Connection: close`` and closed as soon as its request has come in (so the client reads
  the answer rather than a reset), or after LINGER_S, or at once when MAX_LINGERING refused
  connections wait already; the first refusal in a minute is logged;
- a connection must send a request's whole head within IDLE_S of opening or of its last
  answer (aiohttp's keep-alive timer, which closes a connection waiting for a head), and a
  kept-alive connection idle that long is closed;
- a request's body may pause at most BODY_IDLE_S between reads (kds.api._body: 408);
- a TLS handshake must end within HANDSHAKE_S.

A connection that is refused never reaches aiohttp: ``GuardedSite`` wraps the protocol aiohttp
makes for each accepted connection and counts those open.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog
from aiohttp import web

__all__ = ["HANDSHAKE_S", "IDLE_S", "MAX_CONNECTIONS", "ConnectionGate", "GuardedSite"]

log = structlog.get_logger("kds.api")

# Far above what operators, kdsctl, a status page and a metrics scraper use at once, far
# below the daemons' file descriptor limit (65,536 in the systemd units).
MAX_CONNECTIONS = 1024
IDLE_S = 30.0
HANDSHAKE_S = 10.0
LINGER_S = 1.0
MAX_LINGERING = 64
REFUSAL_LOG_EVERY_S = 60.0


def _refusal(limit: int) -> bytes:
    """The whole 503 answer, in the API's error body (kds.api._errors)."""
    detail = f"this API has {limit} connections open, the most it holds: retry later"
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
    """The count of open connections against ``limit``, and when a refusal was last logged.
    Pure: the caller passes the time."""

    def __init__(self, limit: int = MAX_CONNECTIONS):
        self.limit = limit
        self.open = 0
        self.refused = 0  # since the daemon started
        self.lingering = 0  # refused connections waiting for their request before closing
        self.refusal = _refusal(limit)
        self._logged_at: float | None = None

    def admit(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def log_due(self, now: float) -> bool:
        """Whether this refusal should be logged: the first, then one per
        REFUSAL_LOG_EVERY_S."""
        if self._logged_at is not None and now - self._logged_at < REFUSAL_LOG_EVERY_S:
            return False
        self._logged_at = now
        return True


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, reached only if the gate admits it."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate):
        self._inner: asyncio.Protocol | None = inner
        self._gate = gate
        self._refused: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if not gate.admit():
            self._inner = None
            if gate.log_due(time.monotonic()):
                log.warning(
                    "API connection refused: too many open",
                    open=gate.open,
                    limit=gate.limit,
                    refused_so_far=gate.refused,
                )
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(gate.refusal)
            if gate.lingering >= MAX_LINGERING:
                transport.close()
                return
            gate.lingering += 1
            self._refused = transport
            asyncio.get_running_loop().call_later(LINGER_S, transport.close)
            return
        assert self._inner is not None
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._gate.release()
            self._inner.connection_lost(exc)
            self._inner = None
        elif self._refused is not None:
            self._gate.lingering -= 1
            self._refused = None

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._refused is not None:
            self._refused.close()  # its request read: closing now sends no reset

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, each connection admitted by ``gate`` and each TLS handshake
    bounded by HANDSHAKE_S."""

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
            lambda: _Guarded(server(), gate),
            self._host,
            self._port,
            ssl=tls,
            ssl_handshake_timeout=HANDSHAKE_S if tls is not None else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
