"""kdsctl's client for a control plane's HTTP API, and the errors its requests raise.

``ApiClient`` sends the requests; ``ApiError`` and ``ApiUnreachable`` say why one failed;
``read_token`` and ``tls_verify`` turn the --token-file and --ca-file options into what the
client needs; ``pass_client`` hands the client to a command.

The client is the standard library's ``http.client``: kdsctl sends a few JSON requests per
run, and importing a full HTTP library cost more than the rest of a ``kdsctl get`` together
(about 70 ms of a 150 ms call). It verifies the server's certificate and host name (the
system's CAs, or --ca-file's), keeps one connection open for a command's requests, applies
--timeout to connecting and to every answer as a whole (kdsctl.answers, which also bounds
its size), and honours ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY`` as other HTTP
clients do (a CONNECT tunnel for https:// APIs).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import click

from kds.errors import KdsError
from kds.resource import Kind
from kds.text import safe_text
from kdsctl.answers import MAX_ANSWER_BYTES, SlowAnswer, paced, redirected, too_large

__all__ = [
    "MAX_ANSWER_BYTES",
    "ApiClient",
    "ApiError",
    "ApiUnreachable",
    "Response",
    "duration_param",
    "pass_client",
    "redacted",
    "resource_path",
]

_SYNC_PORT_HINT = (
    " This looks like global's sync port (--kds-address, default 5685), not an API: the API is"
    " on --api-address (default port 5681 on global, 5682 on a zone); an API served over HTTPS"
    " needs an https:// URL"
)


def _closed_hint(reused: bool, method: str) -> str:
    """The API answered on this connection before: not the sync port, but a stop or restart."""
    if not reused:
        return "." + _SYNC_PORT_HINT
    write = "; the write may have been made: read it back before sending it again"
    tail = write if method != "GET" else ""
    return f". The API answered on this connection before: it may be stopping or restarting{tail}"


_RUNNING_HINT = ". Is the control plane running? Set --api-url or KDSCTL_API_URL."


@dataclass(eq=False)
class ApiError(KdsError):
    """The API answered with an error: the request's fault (4xx) or the control plane's (5xx)."""

    status: int
    title: str
    detail: str = ""
    causes: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title


class ApiUnreachable(KdsError):
    """No HTTP answer (refused, timeout, bad URL, untrusted TLS): the setup's or network's fault."""


@dataclass(frozen=True)
class Response:
    """One complete answer: status, headers (case-insensitive ``get``) and body."""

    method: str
    url: str
    status_code: int
    reason_phrase: str
    headers: http.client.HTTPMessage
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (NaN and infinities are not JSON;
        nesting past Python's recursion limit is refused as not JSON either)."""
        try:
            return json.loads(self.content, parse_constant=_not_json)
        except RecursionError:
            raise ValueError("nested too deeply") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    prefix: str  # the base URL's path, without its trailing slash


def _target(base_url: str) -> _Target:
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as e:
        raise ApiUnreachable(
            f"--api-url {redacted(base_url)!r} is not a valid URL: {redacted(str(e))}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiUnreachable(
            f"--api-url {redacted(base_url)!r} is not a valid URL: it must look like "
            "http://HOST:PORT or https://HOST:PORT"
        )
    default = 443 if parts.scheme == "https" else 80
    return _Target(parts.scheme, parts.hostname, port or default, parts.path.rstrip("/"))


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine: localhost or a loopback address."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_proxy_range(host: str) -> bool:
    """Whether NO_PROXY holds an address range (``10.0.0.0/8``) that ``host`` is in: Go's
    net/http (kumactl's) honours them; urllib's proxy_bypass, which does the rest, does not."""
    value = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in value.split(","):
        if "/" not in entry:
            continue
        try:
            if address in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def redacted(url: str) -> str:
    """``url`` with any user and password in it replaced by ``***``: what errors show of
    --api-url (kdsctl never sends them; the API takes a bearer token)."""
    return _USERINFO.sub(r"\1***@", url)


def _without_credentials(url: str) -> str:
    """``url`` as an error message may show it: a proxy's user and password left out."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}" if parts.scheme else host + port


def _proxy(target: _Target) -> tuple[_Target, dict[str, str]] | None:
    """The proxy the environment names for ``target`` (HTTP_PROXY / HTTPS_PROXY / ALL_PROXY,
    minus NO_PROXY) and the headers that authenticate to it, or None. As in Go's net/http
    (kumactl's), an API on this machine (localhost, a loopback address) is never reached
    through a proxy, which would otherwise see its bearer token. urllib.request is imported
    only when a proxy variable is set."""
    if not any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in os.environ):
        return None
    import urllib.request

    if (
        _loopback(target.host)
        or _no_proxy_range(target.host)
        or urllib.request.proxy_bypass(target.host)
    ):
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(target.scheme) or proxies.get("all")
    if not url:
        return None
    url = url if "://" in url else f"http://{url}"
    shown = _without_credentials(url)  # never print the proxy's password
    try:
        proxy = _target(url)
    except ApiUnreachable:
        raise ApiUnreachable(
            f"the proxy {shown} ({target.scheme}_proxy in the environment) is not a valid URL"
        ) from None
    if proxy.scheme != "http":
        raise ApiUnreachable(f"proxy {shown}: only http:// proxies are supported")
    parts = urlsplit(url)
    if parts.username is None:
        return proxy, {}
    import base64

    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return proxy, {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode()}


class ApiClient:
    """One control plane's API: JSON in and out, errors raised as ApiError / ApiUnreachable."""

    def __init__(
        self, base_url: str, timeout: float, token: str = "", verify: ssl.SSLContext | bool = True
    ):
        self.base_url = base_url.rstrip("/")
        self.shown_url = redacted(self.base_url)  # for messages: no user or password
        self.timeout = timeout
        self.max_answer_bytes = MAX_ANSWER_BYTES
        self.last_request = ""  # "METHOD URL" of the last answer, for errors about its shape
        self.token = token
        self.verify = verify  # True: the system's CAs; a context made from --ca-file
        self._conn: http.client.HTTPConnection | None = None
        self._answered = 0  # requests answered on the open connection
        self._last_answer = 0.0  # time.monotonic() of the last answer on it
        self._via_proxy = False  # plain HTTP through a proxy: absolute URLs, its headers
        self._proxy_headers: dict[str, str] = {}

    def _connection(self, target: _Target, timeout: float) -> http.client.HTTPConnection:
        if self._conn is not None:
            if time.monotonic() - self._last_answer < REUSE_IDLE_S:
                return self._conn
            self.close()  # the server may be closing it as idle: a write would be lost on it
        proxy, auth = _proxy(target) or (None, {})
        host, port = (proxy.host, proxy.port) if proxy else (target.host, target.port)
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=_tls_context(self.verify)
            )
            if proxy:
                conn.set_tunnel(target.host, target.port, headers=auth)
            self._proxy_headers = {}
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            self._proxy_headers = auth
        self._conn, self._answered = conn, 0
        self._via_proxy = bool(proxy) and target.scheme == "http"
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | bytes | Iterable[bytes] | None = None,
        timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Response:
        """Send one request; raise ApiUnreachable or ApiError, else return the response.
        ``body`` is sent as JSON; bytes are taken as encoded already, and an iterable of
        bytes is sent chunked as it yields (an exception it raises ends the request
        unfinished, the connection closed, and goes on to the caller)."""
        url = f"{self.shown_url}{path}"
        timeout = timeout or self.timeout
        target = _target(self.base_url)
        headers = {"Accept": "application/json", "User-Agent": "kdsctl"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode() if isinstance(body, Mapping) else body
            headers["Content-Type"] = content_type
        while True:
            conn = self._connection(target, timeout)
            reused = self._answered > 0
            try:
                resp = self._exchange(conn, target, method, path, payload, headers, timeout)
                break
            except ApiUnreachable:
                self.close()
                raise
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                # A kept-alive connection the server has since closed: a GET goes again once
                # on a new one; a write does not, as the server may have applied it.
                if reused and method == "GET":
                    continue
                raise ApiUnreachable(
                    f"request to {url} failed: the server closed the connection without an "
                    f"answer{_closed_hint(reused, method)}"
                ) from None
            except TimeoutError as e:
                self.close()
                what, came = ("no whole", f"; {e}") if isinstance(e, SlowAnswer) else ("no", "")
                raise ApiUnreachable(
                    f"{what} answer from {url} within {timeout:g}s (see --timeout){came}"
                ) from None
            except (http.client.HTTPException, OSError) as e:
                self.close()
                raise ApiUnreachable(f"request to {url} failed: {_reason(e)}") from None
            except BaseException:  # from a body being streamed: the request is left unfinished
                self.close()
                raise
        self.last_request = f"{method} {url}"
        if resp.status_code >= 400:
            raise _api_error(resp)
        if resp.status_code >= 300:  # not followed, nor taken as the answer (kdsctl.answers)
            title = f"HTTP {resp.status_code} {safe_text(resp.reason_phrase)}"
            raise ApiError(resp.status_code, title, redirected(resp.headers.get("Location")))
        return resp

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        target: _Target,
        method: str,
        path: str,
        payload: bytes | Iterable[bytes] | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> Response:
        if conn.sock is None:
            conn.timeout = timeout
            try:
                conn.connect()
            except TimeoutError:
                raise  # reported as no answer within --timeout
            except (OSError, http.client.HTTPException) as e:
                reason = _reason(e)
                hint = "" if isinstance(e, ssl.SSLError) else _RUNNING_HINT
                raise ApiUnreachable(
                    f"cannot connect to the control plane API at {self.shown_url}: {reason}{hint}"
                ) from None
        else:
            conn.sock.settimeout(timeout)
        request_target = target.prefix + path
        if self._via_proxy:
            request_target = f"http://{_netloc(target)}{request_target}"
        conn.request(
            method, request_target, body=payload, headers={**headers, **self._proxy_headers}
        )
        conn.response_class = paced(timeout)  # the whole answer within it, not each read
        raw = conn.getresponse()
        url = f"{self.shown_url}{path}"
        limit = self.max_answer_bytes
        length = raw.getheader("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            self.close()
            raise ApiUnreachable(too_large(method, url, limit, f"{int(length)} bytes"))
        content = raw.read(limit + 1)
        if len(content) > limit:
            self.close()
            raise ApiUnreachable(too_large(method, url, limit, "more"))
        self._answered += 1
        self._last_answer = time.monotonic()
        if raw.will_close or not raw.isclosed():
            self.close()  # not read to its end (a body longer than its Content-Length)
        return Response(method, url, raw.status, raw.reason, raw.headers, content)

    def get(self, path: str) -> Any:
        return _json(self.request("GET", path))

    def put(self, path: str, body: Mapping[str, Any]) -> Response:
        return self.request("PUT", path, body)

    def post(
        self,
        path: str,
        body: Mapping[str, Any] | bytes | Iterable[bytes],
        timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Any:
        return _json(self.request("POST", path, body, timeout, content_type))

    def delete(self, path: str) -> Any:
        return _json(self.request("DELETE", path))


pass_client = click.make_pass_decorator(ApiClient)


def duration_param(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """A click callback: a duration as every option takes one (10s, 500ms, 2m, bare seconds)."""
    from kds.config_values import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


# A kept-alive connection idle this long is not used again: the API closes one idle for 30 s
# (kds.api._connections), and a write sent as it does so would end without an answer.
REUSE_IDLE_S = 15.0


def _tls_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if not verify:  # no verification at all: only what a caller asks for explicitly
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _netloc(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def _reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f"its TLS certificate is not trusted ({e.verify_message}); "
            "give the CA that signed it with --ca-file or KDSCTL_CA_FILE"
        )
    text = str(e) or type(e).__name__
    if isinstance(e, ssl.SSLError) and (
        "WRONG_VERSION_NUMBER" in text or "record layer failure" in text
    ):
        return f"TLS handshake failed ({text}): is the API plain HTTP? Then use an http:// URL"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve its host name ({e.strerror})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, OSError) and "Tunnel connection failed" in text:
        return f"the proxy refused the tunnel ({text})"
    return text


def _json(resp: Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise ApiUnreachable(
            f"{resp.method} {resp.url}: the answer is not JSON "
            f"(HTTP {resp.status_code}); is --api-url a kds control plane?"
        ) from None


def _api_error(resp: Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "title" not in body:
        return ApiError(
            resp.status_code, f"HTTP {resp.status_code} {safe_text(resp.reason_phrase)}"
        )
    # Kuma's invalid_parameters [{field, reason}], else its older causes [{field, message}].
    params = body.get("invalid_parameters")
    entries, text = (
        (params, "reason") if isinstance(params, list) else (body.get("causes"), "message")
    )
    # What the server sends is printed on a terminal: escaped and bounded first.
    causes = [
        (safe_text(c.get("field", "")), safe_text(c.get(text, "")))
        for c in entries or []
        if isinstance(c, dict)
    ]
    return ApiError(
        resp.status_code, safe_text(body["title"]), safe_text(body.get("detail", "")), causes
    )


def resource_path(kind: Kind, name: str = "", mesh: str = "") -> str:
    """The API path of a resource (or of its collection when ``name`` is empty)."""
    if kind is Kind.MESH:
        base = "/meshes"
    elif kind is Kind.SECRET:
        base = f"/meshes/{quote(mesh, safe='')}/secrets"
    else:
        base = "/global-secrets"
    return f"{base}/{quote(name, safe='')}" if name else base
