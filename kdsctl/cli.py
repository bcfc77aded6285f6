"""kdsctl: manage Meshes, Secrets and GlobalSecrets through a control plane's HTTP API.

    kdsctl apply -f secrets.yaml
    kdsctl get secrets --mesh default
    kdsctl get secret sample-secret -o yaml
    kdsctl delete secret sample-secret --mesh default

The command group ``cli`` is meant to be extended: a new command takes the API client with
``@pass_client`` and raises ``ApiError`` / ``ApiUnreachable`` (or calls ``fail``); the group
prints those as ``Error: ...`` on stderr and exits 1.

Tables never show secret data; ``-o json`` and ``-o yaml`` print the API's answer as is.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import quote

import click
import httpx
import yaml

from kds.errors import InvalidResource
from kds.model import (
    LABEL_ORIGIN,
    LABEL_ZONE,
    SYSTEM_LABELS,
    Kind,
    Limits,
    Resource,
    from_document,
    to_json,
)
from kds.version import __version__

__all__ = [
    "DEFAULT_API_URL",
    "ApiClient",
    "ApiError",
    "ApiUnreachable",
    "cli",
    "fail",
    "format_age",
    "main",
    "pass_client",
    "resource_path",
    "table",
]

DEFAULT_API_URL = "http://127.0.0.1:5681"

# Local checks leave the size limit to the server, whose limit is configurable.
_LOCAL_LIMITS = Limits(max_data_bytes=1 << 62)


# libyaml's loader when PyYAML was built with it (the wheels are): ~12x faster on big files.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# --------------------------------------------------------------------------- client


@dataclass(eq=False)
class ApiError(Exception):
    """The API answered with an error."""

    status: int
    title: str
    detail: str = ""
    causes: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title


class ApiUnreachable(Exception):
    """No HTTP answer: connection refused, timeout, bad URL."""


class ApiClient:
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
    causes = [
        (str(c.get("field", "")), str(c.get("message", "")))
        for c in body.get("causes") or []
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


# --------------------------------------------------------------------------- output helpers


def _print_error(message: str, causes: Iterable[tuple[str, str]] = ()) -> None:
    click.echo(f"Error: {message}", err=True)
    for f, m in causes:
        click.echo(f"  {f}: {m}" if f else f"  {m}", err=True)


def fail(message: str, causes: Iterable[tuple[str, str]] = ()) -> NoReturn:
    """Print ``Error: message`` (and one line per cause) on stderr and exit 1."""
    _print_error(message, causes)
    raise click.exceptions.Exit(1)


def format_age(timestamp: str, now: datetime) -> str:
    """How long before ``now`` an RFC 3339 ``timestamp`` was: 45s, 3m, 5h, 2d."""
    try:
        t = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _origin(item: Mapping[str, Any]) -> str:
    labels = item.get("labels") or {}
    origin = str(labels.get(LABEL_ORIGIN, ""))
    zone = labels.get(LABEL_ZONE)
    return f"{origin} ({zone})" if origin == "zone" and zone else origin or "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in [list(headers), *rows]
    ]
    return "\n".join(lines)


def _mtls(item: Mapping[str, Any]) -> str:
    """A Mesh's mTLS column: the enabled backend and its type, or off."""
    mtls = item.get("mtls") or {}
    backends = {b.get("name"): b.get("type") for b in mtls.get("backends") or []}
    enabled = mtls.get("enabledBackend")
    if enabled in backends:
        return f"{enabled} ({backends[enabled]})"
    return f"off ({len(backends)} backends)" if backends else "off"


def _render_table(kind: Kind, items: Sequence[Mapping[str, Any]]) -> str:
    now = datetime.now(UTC)
    headers = (["MESH"] if kind is Kind.SECRET else []) + ["NAME"]
    headers += (["MTLS"] if kind is Kind.MESH else []) + ["ORIGIN", "AGE"]
    rows = []
    for it in items:
        row = [str(it.get("mesh", ""))] if kind is Kind.SECRET else []
        row += [str(it.get("name", ""))] + ([_mtls(it)] if kind is Kind.MESH else [])
        row += [_origin(it), format_age(str(it.get("creationTime", "")), now)]
        rows.append(row)
    return table(headers, rows)


def _print(kind: Kind, answer: Any, output: str, single: bool) -> None:
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(answer, sort_keys=False, default_flow_style=False), nl=False)
    else:
        items = [answer] if single else list(answer.get("items") or [])
        if not items:
            click.echo(f"No {kind} resources found.", err=True)
            return
        click.echo(_render_table(kind, items))


# --------------------------------------------------------------------------- the group


class _RootGroup(click.Group):
    """Prints API and connection errors of any subcommand as ``Error: ...``, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as e:
            fail(str(e), e.causes)
        except ApiUnreachable as e:
            fail(str(e))


class _AliasGroup(click.Group):
    """A group whose commands also answer to a singular/plural alias."""

    def __init__(self, *args: Any, aliases: Mapping[str, str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.aliases = dict(aliases or {})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else None), cmd, rest


pass_client = click.make_pass_decorator(ApiClient)


@click.group("kdsctl", cls=_RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api-url",
    envvar="KDSCTL_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    metavar="URL",
    help="Base URL of the control plane's HTTP API (global or zone). Environment: KDSCTL_API_URL.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for each API answer.",
)
@click.option(
    "--token",
    envvar="KDSCTL_TOKEN",
    default="",
    metavar="TOKEN",
    help="Bearer token for the API: the daemon's admin token (DATA_DIR/admin-token) or its "
    "read-only token, which sees no secret data. Environment: KDSCTL_TOKEN.",
)
@click.option(
    "--token-file",
    envvar="KDSCTL_TOKEN_FILE",
    default=None,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the bearer token from FILE (e.g. the daemon's DATA_DIR/admin-token), which keeps "
    "it out of the process list; --token wins when both are given. "
    "Environment: KDSCTL_TOKEN_FILE.",
)
@click.option(
    "--ca-file",
    envvar="KDSCTL_CA_FILE",
    default=None,
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificate (PEM) to verify an https:// API with (one started with "
    "--api-tls-cert-file); default: the system's trusted CAs. Environment: KDSCTL_CA_FILE.",
)
@click.version_option(__version__, prog_name="kdsctl")
@click.pass_context
def cli(
    ctx: click.Context,
    api_url: str,
    timeout: float,
    token: str,
    token_file: Path | None,
    ca_file: Path | None,
) -> None:
    """Manage Meshes, Secrets and GlobalSecrets of a kds-sync control plane.

    Write on the global control plane: resources created there are synced to every zone.
    On a zone, synced resources are read-only; zone-local ones can be managed there.
    """
    if not token and token_file is not None:
        try:
            token = token_file.read_text()
        except OSError as e:
            raise click.BadParameter(
                f"cannot read {token_file}: {e.strerror}", param_hint="'--token-file'"
            ) from None
        if not token.strip():
            raise click.BadParameter(f"{token_file} is empty", param_hint="'--token-file'")
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (ssl.SSLError, ValueError):
            raise click.BadParameter(
                f"{ca_file} holds no PEM certificate", param_hint="'--ca-file'"
            ) from None
    client = ApiClient(api_url, timeout, token.strip(), verify)
    ctx.obj = client
    ctx.call_on_close(client.close)


def main() -> None:
    cli(prog_name="kdsctl")


# --------------------------------------------------------------------------- apply


@dataclass
class _Doc:
    where: str  # "FILE document N"
    resource: Resource


def _load_documents(stream: IO[str]) -> list[_Doc]:
    name = "stdin" if stream.name in ("<stdin>", "-") else stream.name
    try:
        docs = list(yaml.load_all(stream, Loader=_YAML_LOADER))
    except yaml.MarkedYAMLError as e:
        # Problem and position only: a snippet of the line could show secret data.
        mark = e.problem_mark
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        fail(f"{name}: invalid YAML{pos}: {e.problem or e.context or 'cannot parse'}")
    except yaml.YAMLError:
        fail(f"{name}: invalid YAML")
    out: list[_Doc] = []
    problems = 0
    stripped = 0
    for where, doc in _documents(name, docs):
        stripped += _strip_system_labels(doc)
        try:
            out.append(_Doc(where, from_document(doc, _LOCAL_LIMITS)))
        except InvalidResource as e:
            problems += 1
            _print_error(f"{where}: invalid resource", [(c.field, c.message) for c in e.errors])
    if problems:
        fail(f"{problems} invalid document(s); nothing was applied")
    if stripped:
        click.echo(
            f"note: {name}: left out the labels {LABEL_ORIGIN} and {LABEL_ZONE} of {stripped} "
            "resource(s): the control plane sets them",
            err=True,
        )
    return out


def _documents(name: str, docs: list[Any]) -> Iterator[tuple[str, Any]]:
    """Each resource with where it came from. A list, as `kdsctl get ... -o yaml|json` prints
    it ({"items": [...]}, or Kubernetes' kind: List), stands for its items."""
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{name} document {index}"
        items = doc.get("items") if isinstance(doc, Mapping) else None
        if isinstance(items, list) and "type" not in doc and doc.get("kind") in (None, "List"):
            for i, item in enumerate(items):
                yield f"{where} items[{i}]", item
        else:
            yield where, doc


def _strip_system_labels(doc: Any) -> int:
    """Drop kuma.io/origin and kuma.io/zone (which `get` shows and the API refuses) so that
    `get -o yaml` output applies as it is; 1 if the document had any, else 0."""
    if not isinstance(doc, dict):
        return 0
    holder = doc.get("metadata") if ("apiVersion" in doc or "kind" in doc) else doc
    labels = holder.get("labels") if isinstance(holder, dict) else None
    if not isinstance(labels, dict) or not (SYSTEM_LABELS & labels.keys()):
        return 0
    for k in SYSTEM_LABELS:
        labels.pop(k, None)
    return 1


def _body(res: Resource) -> dict[str, Any]:
    body = to_json(res)
    body.pop("creationTime", None)
    body.pop("modificationTime", None)
    return body


@cli.command()
@click.option(
    "-f",
    "--file",
    "files",
    type=click.File("r", encoding="utf-8"),
    multiple=True,
    required=True,
    metavar="FILE",
    help="YAML file with one or more documents ('---' separated), or '-' for stdin. "
    "Universal (type: Secret|GlobalSecret|Mesh) and Kubernetes (apiVersion/kind) forms "
    "are accepted. Repeatable.",
)
@pass_client
def apply(client: ApiClient, files: tuple[IO[str], ...]) -> None:
    """Create or update the resources described in FILE.

    Every document is checked before anything is sent; an invalid one is reported with its
    document number and field, and nothing is applied. The resources then go to the API's
    POST /_apply in requests of up to 8 MiB, each written in one transaction (all or
    nothing), Meshes first. An input under 8 MiB is therefore applied atomically; a larger one
    stops at the first request the API refuses, and says which resources were applied. Each
    request may take up to 5 minutes (or --timeout, if longer).
    """
    docs: list[_Doc] = []
    for f in files:
        docs += _load_documents(f)
    if not docs:
        fail("no resources found in the input")
    docs.sort(key=lambda d: d.resource.kind is not Kind.MESH)  # stable: meshes first
    applied = 0
    for chunk in _chunks(docs, APPLY_CHUNK_BYTES):
        try:
            answer = client.post(
                "/_apply",
                {"items": [_body(d.resource) for d in chunk]},
                timeout=max(client.timeout, APPLY_TIMEOUT),
            )
        except ApiError as e:
            causes = [(_where(chunk, f.replace("].", "]: ", 1)), m) for f, m in e.causes]
            detail = _where(chunk, e.detail)
            note = f" ({applied} resources applied before this request)" if applied else ""
            fail(f"{e.title}: {detail}{note}", causes)
        for item in answer.get("items", []):
            key = f"{item['mesh']}/{item['name']}" if item.get("mesh") else item["name"]
            click.echo(f"{item['type']} {key} {item['result']}")
        applied += len(chunk)


APPLY_CHUNK_BYTES = 8 * 1024 * 1024
# A large apply is one transaction on the server: wait for it longer than for a read.
APPLY_TIMEOUT = 300.0


def _chunks(docs: list[_Doc], limit: int) -> Iterator[list[_Doc]]:
    chunk: list[_Doc] = []
    size = 0
    for d in docs:
        n = len(json.dumps(_body(d.resource))) + 2
        if chunk and size + n > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(d)
        size += n
    if chunk:
        yield chunk


_ITEM_RE = re.compile(r"items\[(\d+)\]")


def _where(chunk: list[_Doc], text: str) -> str:
    """Replace the API's items[i] by the document it came from."""

    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return chunk[i].where if i < len(chunk) else m.group(0)

    return _ITEM_RE.sub(sub, text)


# --------------------------------------------------------------------------- get

_OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format. Tables never show secret data; json and yaml print the API "
    "answer, data included.",
)
_MESH = click.option(
    "-m",
    "--mesh",
    default="default",
    show_default=True,
    help="The mesh the secret belongs to.",
)
_NAME = click.argument("name", required=False)


def _get(client: ApiClient, kind: Kind, name: str | None, output: str, mesh: str = "") -> None:
    answer = client.get(resource_path(kind, name or "", mesh))
    _print(kind, answer, output, single=bool(name))


@cli.group(
    cls=_AliasGroup,
    aliases={"mesh": "meshes", "secret": "secrets", "global-secret": "global-secrets"},
)
def get() -> None:
    """Show resources: meshes, secrets or global-secrets (singular forms work too)."""


@get.command("meshes")
@_NAME
@_OUTPUT
@pass_client
def get_meshes(client: ApiClient, name: str | None, output: str) -> None:
    """List meshes, or show the mesh NAME. Alias: mesh."""
    _get(client, Kind.MESH, name, output)


@get.command("secrets")
@_NAME
@_MESH
@_OUTPUT
@pass_client
def get_secrets(client: ApiClient, name: str | None, mesh: str, output: str) -> None:
    """List the secrets of a mesh, or show the secret NAME. Alias: secret."""
    _get(client, Kind.SECRET, name, output, mesh)


@get.command("global-secrets")
@_NAME
@_OUTPUT
@pass_client
def get_global_secrets(client: ApiClient, name: str | None, output: str) -> None:
    """List global secrets, or show the global secret NAME. Alias: global-secret."""
    _get(client, Kind.GLOBAL_SECRET, name, output)


# --------------------------------------------------------------------------- delete


def _delete(client: ApiClient, kind: Kind, name: str, mesh: str = "") -> None:
    client.delete(resource_path(kind, name, mesh))
    label = f"{kind} {mesh}/{name}" if kind is Kind.SECRET else f"{kind} {name}"
    click.echo(f"{label} deleted")


@cli.group(
    cls=_AliasGroup,
    aliases={"meshes": "mesh", "secrets": "secret", "global-secrets": "global-secret"},
)
def delete() -> None:
    """Delete a mesh, secret or global-secret."""


@delete.command("mesh")
@click.argument("name")
@pass_client
def delete_mesh(client: ApiClient, name: str) -> None:
    """Delete the mesh NAME. Refused while it still holds secrets, except its builtin CA
    secrets, which are deleted with it (a secret an mTLS backend uses can be deleted once the
    backend is removed)."""
    _delete(client, Kind.MESH, name)


@delete.command("secret")
@click.argument("name")
@_MESH
@pass_client
def delete_secret(client: ApiClient, name: str, mesh: str) -> None:
    """Delete the secret NAME of a mesh."""
    _delete(client, Kind.SECRET, name, mesh)


@delete.command("global-secret")
@click.argument("name")
@pass_client
def delete_global_secret(client: ApiClient, name: str) -> None:
    """Delete the global secret NAME."""
    _delete(client, Kind.GLOBAL_SECRET, name)


# The status commands (inspect, wait) live in their own module and register themselves here.
from kdsctl import status as _status  # noqa: E402, F401
from kdsctl import tokens as _tokens  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
