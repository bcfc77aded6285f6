"""kdsctl's client for a control plane's HTTP API, and the errors its requests raise.

``ApiClient`` sends the requests; ``ApiError`` and ``ApiUnreachable`` say why one failed;
``read_token`` and ``tls_verify`` turn the --token-file and --ca-file options into what the
client needs; ``pass_client`` hands the client to a command. httpx is imported on the first
request, so commands that send none (``--version``, ``--help``) do not load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from kds.errors import KdsError
from kds.model import Kind

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiUnreachable",
    "pass_client",
    "read_token",
    "resource_path",
    "tls_verify",
]


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


class ApiClient:
    """One control plane's API: JSON in and out, errors raised as ApiError / ApiUnreachable."""

    def __init__(
        self, base_url: str, timeout: float, token: str = "", verify: ssl.SSLContext | bool = True
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.verify = verify  # True: the system's CAs; a context made from --ca-file
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._http = httpx.Client(
                base_url=self.base_url, timeout=self.timeout, headers=headers, verify=self.verify
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; raise ApiUnreachable or ApiError, else return the response."""
        import httpx

        url = f"{self.base_url}{path}"
        timeout = timeout or self.timeout
        try:
            resp = self.http.request(method, path, json=body, timeout=timeout)
        except httpx.ConnectError as e:
            reason = _reason(e)
            hint = (
                ""
                if "TLS" in reason
                else (". Is the control plane running? Set --api-url or KDSCTL_API_URL.")
            )
            raise ApiUnreachable(
                f"cannot connect to the control plane API at {self.base_url}: {reason}{hint}"
            ) from None
        except httpx.TimeoutException:
            raise ApiUnreachable(
                f"no answer from {url} within {timeout:g}s (see --timeout)"
            ) from None
        except httpx.RemoteProtocolError as e:
            # What global's sync port (gRPC over HTTP/2) does to an HTTP/1.1 request.
            raise ApiUnreachable(
                f"request to {url} failed: {_reason(e).rstrip('.')}."
                " This looks like global's sync port (--kds-address, default 5685), not an API: the API is on --api-address"
                " (default port 5681 on global, 5682 on a zone)"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise ApiUnreachable(f"request to {url} failed: {_reason(e)}") from None
        if resp.status_code >= 400:
            raise _api_error(resp)
        return resp

    def get(self, path: str) -> Any:
        return _json(self.request("GET", path))

    def put(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        return self.request("PUT", path, body)

    def post(self, path: str, body: Mapping[str, Any], timeout: float | None = None) -> Any:
        return _json(self.request("POST", path, body, timeout))

    def delete(self, path: str) -> Any:
        return _json(self.request("DELETE", path))


pass_client = click.make_pass_decorator(ApiClient)


def _reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"its TLS certificate is not trusted ({text.rpartition('certificate verify failed: ')[2].rstrip(')')}); "
            "give the CA that signed it with --ca-file or KDSCTL_CA_FILE"
        )
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return f"TLS handshake failed ({text}): is the API plain HTTP? Then use an http:// URL"
    return text


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise ApiUnreachable(
            f"{resp.request.method} {resp.request.url}: the answer is not JSON "
            f"(HTTP {resp.status_code}); is --api-url a kds control plane?"
        ) from None


def _api_error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "title" not in body:
        return ApiError(resp.status_code, f"HTTP {resp.status_code} {resp.reason_phrase}")
    # Kuma's invalid_parameters [{field, reason}], else its older causes [{field, message}].
    params = body.get("invalid_parameters")
    entries, text = (
        (params, "reason") if isinstance(params, list) else (body.get("causes"), "message")
    )
    causes = [
        (str(c.get("field", "")), str(c.get(text, "")))
        for c in entries or []
        if isinstance(c, dict)
    ]
    return ApiError(resp.status_code, str(body["title"]), str(body.get("detail", "")), causes)


def resource_path(kind: Kind, name: str = "", mesh: str = "") -> str:
    """The API path of a resource (or of its collection when ``name`` is empty)."""
    if kind is Kind.MESH:
        base = "/meshes"
    elif kind is Kind.SECRET:
        base = f"/meshes/{quote(mesh, safe='')}/secrets"
    else:
        base = "/global-secrets"
    return f"{base}/{quote(name, safe='')}" if name else base


def read_token(token: str, token_file: Path | None) -> str:
    """The bearer token: ``token`` if given, else the content of ``token_file``, stripped."""
    if not token and token_file is not None:
        try:
            token = token_file.read_text()
        except OSError as e:
            raise click.BadParameter(
                f"cannot read {token_file}: {e.strerror}", param_hint="'--token-file'"
            ) from None
        if not token.strip():
            raise click.BadParameter(f"{token_file} is empty", param_hint="'--token-file'")
    return token.strip()


def tls_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What to verify the API's certificate with: the system's CAs (True) or ``ca_file``'s."""
    if ca_file is None:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (ssl.SSLError, ValueError):
        raise click.BadParameter(
            f"{ca_file} holds no PEM certificate", param_hint="'--ca-file'"
        ) from None
