"""The HTTP JSON API both control planes serve (Kuma's paths and shapes), on aiohttp.

Routes::

    GET                /                                 {"role", "zone", "version"}
    GET                /meshes                           list
    GET|PUT|DELETE     /meshes/{name}
    GET                /meshes/{mesh}/secrets            list (404 when the mesh does not exist)
    GET|PUT|DELETE     /meshes/{mesh}/secrets/{name}
    GET                /global-secrets                   list
    GET|PUT|DELETE     /global-secrets/{name}
    GET                /openapi.yaml, /openapi.json      the API description (kds/openapi.yaml)

A resource body is the Universal form (kds.model.to_json); responses add the system labels
``kuma.io/origin`` (and ``kuma.io/zone`` for zone-local rows), which are never stored and
never accepted in a PUT. Errors are ``{"title", "status", "detail", "causes": [{field,
message}]}``.

Secret data never reaches a log line or an error message: errors name types, meshes, names
and fields only, and unexpected exceptions are logged by type and stack, without their
message or local variables (which could hold a request body).
"""

from __future__ import annotations

import json
import sqlite3
import ssl
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import structlog
import yaml
from aiohttp import web

from kds import wire
from kds.auth import ApiTokens, Role
from kds.clock import rfc3339
from kds.errors import (
    ConfigError,
    Conflict,
    FieldError,
    InvalidReferences,
    InvalidResource,
    KdsError,
    NotFound,
)
from kds.model import (
    LABEL_ORIGIN,
    LABEL_ZONE,
    Key,
    Kind,
    Limits,
    Resource,
    from_document,
    from_json_body,
    kubernetes_field,
    to_json,
)
from kds.store import ORIGIN_GLOBAL, ORIGIN_ZONE, ResourceStore, Row, WriteResult
from kds.store.base import Origin
from kds.tls import ReloadingServerSSLContext
from kds.version import __version__

__all__ = [
    "API_CONTEXT",
    "RESULT_HEADER",
    "ApiContext",
    "build_app",
    "client_max_size",
    "encoded_message_size",
    "serve_api",
]

log = structlog.get_logger("kds.api")

# Header on a PUT answer telling what the write did: created, updated or unchanged.
RESULT_HEADER = "X-Kds-Result"

# Largest revision/version a Change can carry (uint64 on the wire; 2**63-1 in SQLite).
_MAX_REVISION = 2**63 - 1
_BODY_SLACK = 64 * 1024


@dataclass
class ApiContext:
    store: ResourceStore  # GlobalStore on global, ZoneStore on a zone
    role: Literal["global", "zone"]
    zone: str = ""  # the zone's name when role == "zone"
    limits: Limits = Limits()
    # A resource whose largest encoded Change plus kds.wire.BATCH_OVERHEAD exceeds this is
    # refused with 400 naming "data": it could never be sent to a zone in one message.
    max_message_bytes: int = 4 * 1024 * 1024
    now: Callable[[], str] = field(default=rfc3339)
    # Largest body POST /_apply accepts (many resources, applied in one transaction).
    max_apply_bytes: int = 64 * 1024 * 1024
    # Bearer tokens the API requires (None: no authentication, for in-process tests only).
    tokens: ApiTokens | None = None


API_CONTEXT: web.AppKey[ApiContext] = web.AppKey("kds_api_ctx", ApiContext)
# Paths anyone may read: they carry no resource data and no status beyond up or down.
OPEN_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/openapi.yaml", "/openapi.json", "/gui", "/favicon.ico"}
)
_READ_ONLY_KEY = "kds_read_only"
_OPENAPI: web.AppKey[str] = web.AppKey("kds_openapi_yaml", str)


def client_max_size(limits: Limits) -> int:
    """The largest request body accepted: base64 of the largest data plus room for the rest."""
    return 4 * ((limits.max_data_bytes + 2) // 3) + _BODY_SLACK


def encoded_message_size(resource: Resource, now: str) -> int:
    """An upper bound of the message that carries ``resource`` alone to a zone.

    Counts the Change as global will encode it (timestamps set, the largest possible
    revision and version), plus kds.wire.BATCH_OVERHEAD for the batch header and framing.
    """
    probe = resource.with_meta(creation_time=now, modification_time=now, version=_MAX_REVISION)
    return len(wire.change_put(_MAX_REVISION, probe)) + wire.BATCH_OVERHEAD


# --------------------------------------------------------------------------- errors


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        causes: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.causes = list(causes)
        self.headers = dict(headers or {})


def _error_response(e: _HttpError) -> web.Response:
    body = {
        "title": e.title,
        "status": e.status,
        "detail": e.detail,
        "causes": [{"field": c.field, "message": c.message} for c in e.causes],
    }
    return web.json_response(body, status=e.status, headers=e.headers)


def _log_unexpected(request: web.Request, exc: BaseException) -> None:
    # No exc_info: a renderer that shows locals could print a request body. The message is
    # kept only for exception types whose messages are ours or the system's, never data.
    safe_message = isinstance(exc, (KdsError, OSError, sqlite3.Error))
    log.error(
        "unhandled error in API handler",
        method=request.method,
        path=request.path,
        error_type=type(exc).__name__,
        error=str(exc) if safe_message else None,
        stack="".join(traceback.format_tb(exc.__traceback__)),
    )


@web.middleware
async def _error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _HttpError as e:
        return _error_response(e)
    except InvalidResource as e:
        return _error_response(_HttpError(400, "Invalid resource", "invalid resource", e.errors))
    except Conflict as e:  # and ReadOnlySynced: a synced copy is read-only on a zone
        return _error_response(_HttpError(409, "Conflict", str(e)))
    except NotFound as e:
        return _error_response(_HttpError(404, "Not found", str(e)))
    except web.HTTPRequestEntityTooLarge:
        return _error_response(_too_large(request.app[API_CONTEXT]))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else {}
        detail = {
            404: f"no such path: {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
        }.get(e.status, e.reason)
        return _error_response(_HttpError(e.status, e.reason, detail, headers=headers))
    except Exception as e:
        _log_unexpected(request, e)
        return _error_response(
            _HttpError(
                500,
                "Internal server error",
                "the control plane failed to handle the request; see its log",
            )
        )


@web.middleware
async def _auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bearer tokens: the admin token may do anything; the read-only one may use GET on
    metadata and status, and gets resources without their data."""
    tokens = request.app[API_CONTEXT].tokens
    if tokens is None or request.path in OPEN_PATHS:
        return await handler(request)
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    role = tokens.role_of(token) if token else None
    if role is None:
        raise _HttpError(
            401,
            "Unauthorized",
            ("the bearer token is not valid" if token else "this API needs a bearer token")
            + ": pass kdsctl --token-file or --token (KDSCTL_TOKEN_FILE, KDSCTL_TOKEN) or an "
            "'Authorization: Bearer' header; "
            "the daemon's admin token is in its data dir (admin-token)",
            headers={"WWW-Authenticate": 'Bearer realm="kds-sync"'},
        )
    if role is Role.READ_ONLY:
        if request.method not in ("GET", "HEAD"):
            raise _HttpError(
                403, "Forbidden", f"the read-only token may not {request.method} {request.path}"
            )
        request[_READ_ONLY_KEY] = True
    return await handler(request)


def _too_large(ctx: ApiContext, limit: int | None = None) -> _HttpError:
    return _HttpError(
        413,
        "Request body too large",
        f"the request body exceeds {limit or client_max_size(ctx.limits)} bytes; secret data "
        f"may be at most {ctx.limits.max_data_bytes} bytes once decoded",
        [FieldError("data", f"must decode to at most {ctx.limits.max_data_bytes} bytes")],
    )


# --------------------------------------------------------------------------- rendering


def _system_labels(ctx: ApiContext, row: Row) -> dict[str, str]:
    if row.origin == ORIGIN_ZONE:
        labels = {LABEL_ORIGIN: "zone"}
        if ctx.zone:
            labels[LABEL_ZONE] = ctx.zone
        return labels
    return {LABEL_ORIGIN: "global"}


def _render(ctx: ApiContext, row: Row, request: web.Request) -> dict[str, Any]:
    body = to_json(row.resource, _system_labels(ctx, row))
    if request.get(_READ_ONLY_KEY):
        body.pop("data", None)  # the read-only token never sees secret data
    return body


def _key(kind: Kind, request: web.Request) -> Key:
    mi = request.match_info
    return Key(kind, mi["mesh"] if kind is Kind.SECRET else "", mi["name"])


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (name == "size" and value == 0):
        raise _HttpError(
            400,
            "Bad request",
            f"invalid query parameter {name!r}",
            [
                FieldError(
                    name, "must be an integer >= 1" if name == "size" else "must be an integer >= 0"
                )
            ],
        )
    return value


async def _require_mesh(ctx: ApiContext, mesh: str) -> None:
    if await ctx.store.get(Key(Kind.MESH, "", mesh)) is None:
        raise NotFound(f"mesh {mesh!r} does not exist")


def _own_origin(ctx: ApiContext) -> Origin:
    """The origin of the rows this API writes: a zone's own, or global's."""
    return ORIGIN_ZONE if ctx.role == "zone" else ORIGIN_GLOBAL


# --------------------------------------------------------------------------- handlers


async def _index(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    return web.json_response({"role": ctx.role, "zone": ctx.zone, "version": __version__})


async def _openapi_yaml(request: web.Request) -> web.Response:
    return web.Response(text=request.app[_OPENAPI], content_type="application/yaml")


async def _openapi_json(request: web.Request) -> web.Response:
    return web.json_response(yaml.safe_load(request.app[_OPENAPI]))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _list_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        offset = _int_param(request, "offset", 0) or 0
        size = _int_param(request, "size", None)
        mesh: str | None = None
        if kind is Kind.SECRET:
            mesh = request.match_info["mesh"]
            await _require_mesh(ctx, mesh)
        total, page = await ctx.store.page(kind, mesh, offset, size)
        next_url = None
        if size is not None and offset + size < total:
            next_url = str(
                request.url.update_query({"offset": str(offset + size), "size": str(size)})
            )
        return web.json_response(
            {"total": total, "items": [_render(ctx, r, request) for r in page], "next": next_url}
        )

    return handler


def _get_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        if kind is Kind.SECRET:
            await _require_mesh(ctx, key.mesh)
        row = await ctx.store.get(key)
        if row is None:
            raise NotFound(f"{key} not found")
        return web.json_response(_render(ctx, row, request))

    return handler


async def _read_json(request: web.Request, limit: int | None = None) -> object:
    ctx = request.app[API_CONTEXT]
    limit = limit or client_max_size(ctx.limits)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(ctx, limit)
    raw = await request.read()
    if not raw.strip():
        raise _HttpError(400, "Bad request", "the request body is empty: expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _HttpError(400, "Bad request", "the request body must be UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # e.msg and the position only: e.doc is the body.
        raise _HttpError(
            400,
            "Bad request",
            f"the request body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
        ) from None


def _put_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        body = await _read_json(request)
        try:
            res = from_json_body(body, kind, key.name, key.mesh, ctx.limits)
        except InvalidResource as e:
            raise _HttpError(400, "Invalid resource", f"{key} is invalid", e.errors) from None
        now = ctx.now()
        too_big = _size_error(ctx, res, now)
        if too_big:
            raise _HttpError(400, "Invalid resource", f"{key} is invalid", [too_big])
        try:
            result = await ctx.store.put(res, now)
            created = result.created
        except InvalidResource as e:  # a rule across resources (kds.integrity)
            raise _HttpError(400, "Invalid resource", f"{key} is invalid", e.errors) from None
        except NotFound as e:
            if kind is not Kind.SECRET:
                raise
            raise _HttpError(
                400,
                "Invalid resource",
                f"{key} is invalid",
                [FieldError("mesh", f"mesh {key.mesh!r} does not exist")],
            ) from e
        stored = result.resource
        assert stored is not None
        origin = _own_origin(ctx)
        if result.changed:
            _log_written(result, origin)
            for extra in result.also:
                _log_written(extra, origin, reason="builtin CA generated")
        else:
            log.debug("resource unchanged", type=str(kind), mesh=key.mesh, name=key.name)
        outcome = "created" if created else "updated" if result.changed else "unchanged"
        return web.json_response(
            _render(ctx, Row(stored, origin), request),
            status=201 if created else 200,
            headers={RESULT_HEADER: outcome},
        )

    return handler


def _size_bound(r: Resource, now: str) -> int:
    """An upper bound of encoded_message_size without encoding: every field's bytes plus at
    most 11 bytes of tag and length each, and room for the Change and batch framing. Checking
    it first spares encoding each resource twice (issue 7: 10,000-secret applies)."""
    if r.spec:
        return encoded_message_size(r, now)
    n = len(r.data) + len(r.name.encode()) + len(r.mesh.encode()) + 2 * len(now.encode())
    n += sum(len(k.encode()) + len(v.encode()) + 24 for k, v in r.labels.items())
    return n + 9 * 11 + 32 + wire.BATCH_OVERHEAD


def _log_written(result: WriteResult, origin: str, **extra: str) -> None:
    """One info line per written resource (the audit trail); never its data."""
    stored = result.resource
    assert stored is not None
    log.info(
        "resource written",
        type=str(stored.kind),
        mesh=stored.mesh,
        name=stored.name,
        origin=origin,
        version=stored.version,
        created=result.created,
        **extra,
    )


def _size_error(ctx: ApiContext, res: Resource, now: str, prefix: str = "") -> FieldError | None:
    if _size_bound(res, now) <= ctx.max_message_bytes:
        return None
    size = encoded_message_size(res, now)
    if size <= ctx.max_message_bytes:
        return None
    return FieldError(
        f"{prefix}data",
        f"the resource would encode to about {size} bytes, over the sync message limit of "
        f"{ctx.max_message_bytes} bytes",
    )


async def _apply_handler(request: web.Request) -> web.Response:
    """POST /_apply {"items": [...]}: create or update many resources in one transaction.

    Items take either text form (as from a YAML file). Meshes are written first, then the
    rest in the order given. Either every item is written or none: a problem answers 400
    (or 409) naming ``items[i]`` and the field.
    """
    ctx = request.app[API_CONTEXT]
    body = await _read_json(request, ctx.max_apply_bytes)
    items = body.get("items") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise _HttpError(
            400,
            "Bad request",
            'expected {"items": [resource, ...]}',
            [FieldError("items", "must be a list of resources")],
        )
    now = ctx.now()
    errs: list[FieldError] = []
    parsed: list[tuple[int, Resource]] = []
    seen: dict[Key, int] = {}
    k8s = {i for i, it in enumerate(items) if isinstance(it, Mapping) and "apiVersion" in it}
    for i, item in enumerate(items):
        try:
            res = from_document(item, ctx.limits)
        except InvalidResource as e:
            errs += [
                FieldError(f"items[{i}].{c.field}" if c.field else f"items[{i}]", c.message)
                for c in e.errors
            ]
            continue
        too_big = _size_error(ctx, res, now, f"items[{i}].")
        if too_big:
            errs.append(too_big)
        if res.key in seen:
            errs.append(FieldError(f"items[{i}]", f"{res.key} is also items[{seen[res.key]}]"))
        seen[res.key] = i
        parsed.append((i, res))
    if errs:
        raise _HttpError(400, "Invalid resources", "nothing was applied", errs)
    parsed.sort(key=lambda p: p[1].kind is not Kind.MESH)  # stable: meshes first
    try:
        results = await ctx.store.put_many([r for _, r in parsed], now)
    except InvalidReferences as e:
        causes = [
            FieldError(
                f"items[{parsed[j][0]}].{_item_field(f.field, parsed[j][0] in k8s)}", f.message
            )
            for j, fields in e.by_index.items()
            for f in fields
        ]
        index, res = parsed[next(iter(e.by_index))]
        raise _HttpError(
            400,
            "Invalid resources",
            f"nothing was applied: items[{index}] ({res.key}) is invalid",
            causes,
        ) from None
    except KdsError as e:
        index, res = parsed[e.item_index or 0]
        if isinstance(e, NotFound) and res.kind is Kind.SECRET:
            raise _HttpError(
                400,
                "Invalid resources",
                f"nothing was applied: items[{index}] ({res.key}) is invalid",
                [FieldError(f"items[{index}].mesh", f"mesh {res.mesh!r} does not exist")],
            ) from None
        status = 409 if isinstance(e, Conflict) else 404 if isinstance(e, NotFound) else 400
        raise _HttpError(
            status,
            "Conflict" if status == 409 else "Invalid resources",
            f"nothing was applied: items[{index}]: {e}",
        ) from None
    origin = _own_origin(ctx)
    out = []
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    written = [res for _, res in parsed]
    # Builtin CA secrets generated in the same transaction follow the items given.
    written += [r.resource for r in results[len(parsed) :] if r.resource is not None]
    for res, result in zip(written, results, strict=True):
        outcome = "created" if result.created else "updated" if result.changed else "unchanged"
        counts[outcome] += 1
        if result.changed:
            _log_written(result, origin)
        out.append({"type": str(res.kind), "mesh": res.mesh, "name": res.name, "result": outcome})
    log.info("resources applied", total=len(out), origin=origin, **counts)
    return web.json_response({"items": out})


def _item_field(f: str, kubernetes: bool) -> str:
    return kubernetes_field(f) if kubernetes else f


def _delete_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        if kind is Kind.SECRET:
            await _require_mesh(ctx, key.mesh)
        result = await ctx.store.delete(key)
        prev = result.previous
        version = result.record.revision if result.record else (prev.version if prev else 0)
        origin = _own_origin(ctx)
        for extra in result.also:  # a Mesh's builtin CA secrets go with it
            assert extra.deleted is not None
            log.info(
                "resource deleted",
                type=str(extra.deleted.kind),
                mesh=extra.deleted.mesh,
                name=extra.deleted.name,
                origin=origin,
                version=extra.record.revision if extra.record else 0,
                reason="builtin CA of a deleted mesh",
            )
        log.info(
            "resource deleted",
            type=str(kind),
            mesh=key.mesh,
            name=key.name,
            origin=origin,
            version=version,
        )
        return web.json_response({})

    return handler


def _load_openapi() -> str:
    return resources.files("kds").joinpath("openapi.yaml").read_text(encoding="utf-8")


def build_app(ctx: ApiContext, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    """The API application; ``extra_routes`` lets a daemon add its own (e.g. /status)."""
    app = web.Application(
        middlewares=[_error_middleware, _auth_middleware],
        client_max_size=max(client_max_size(ctx.limits), ctx.max_apply_bytes),
    )
    app[API_CONTEXT] = ctx
    app[_OPENAPI] = _load_openapi()
    routes: list[web.RouteDef] = [
        web.get("/", _index),
        web.get("/openapi.yaml", _openapi_yaml),
        web.get("/openapi.json", _openapi_json),
        web.post("/_apply", _apply_handler),
    ]
    paths = {
        Kind.MESH: ("/meshes", "/meshes/{name}"),
        Kind.SECRET: ("/meshes/{mesh}/secrets", "/meshes/{mesh}/secrets/{name}"),
        Kind.GLOBAL_SECRET: ("/global-secrets", "/global-secrets/{name}"),
    }
    for kind, (collection, item) in paths.items():
        routes += [
            web.get(collection, _list_handler(kind)),
            web.get(item, _get_handler(kind)),
            web.put(item, _put_handler(kind)),
            web.delete(item, _delete_handler(kind)),
        ]
    app.add_routes(routes)
    if extra_routes:
        app.add_routes(extra_routes)
    return app


def api_ssl_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """The API's TLS context from --api-tls-cert-file/--api-tls-key-file, or None for HTTP."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ConfigError("--api-tls-cert-file and --api-tls-key-file go together: give both")
    return ReloadingServerSSLContext(cert_file, key_file).context


async def serve_api(
    ctx: ApiContext,
    address: tuple[str, int],
    extra_routes: list[web.RouteDef] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Start the API on ``address`` (HTTPS with ``ssl_context``); a port that cannot be bound
    is a ConfigError naming it."""
    runner = web.AppRunner(build_app(ctx, extra_routes), access_log=None)
    await runner.setup()
    host, port = address
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"--api-address {host}:{port}: cannot listen: {e.strerror}") from None
    return runner
