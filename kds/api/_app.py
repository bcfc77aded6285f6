"""The API application: its routes and middlewares, served over HTTP or HTTPS.

Routes::

    GET                /                                 Kuma's index (product, version...), role, zone
    GET                /meshes                           list
    GET|PUT|DELETE     /meshes/{name}
    GET                /meshes/{mesh}/secrets            list (404 when the mesh does not exist)
    GET|PUT|DELETE     /meshes/{mesh}/secrets/{name}
    GET                /secrets                          list: every mesh's secrets
    GET                /globalsecrets                    list (Kuma's path; /global-secrets too)
    GET|PUT|DELETE     /globalsecrets/{name}
    POST               /_apply                           many resources in one transaction
    GET                /_kri/{kri}                       a Mesh by its KRI (Kuma's route)
    GET                /openapi.yaml, /openapi.json      the API description (kds/openapi.yaml)

A daemon adds its own routes (health, metrics, status) through ``extra_routes``.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from importlib import resources
from pathlib import Path

import yaml
from aiohttp import web

from kds.api._apply import apply_handler
from kds.api._connections import IDLE_S, MAX_CONNECTIONS, ConnectionGate, GuardedSite
from kds.api._context import API_CONTEXT, ApiContext, client_max_size
from kds.api._errors import auth_middleware, error_middleware
from kds.api._resources import (
    delete_handler,
    get_handler,
    kri_handler,
    list_handler,
    put_handler,
)
from kds.errors import ConfigError
from kds.model import Kind
from kds.tls import ReloadingServerSSLContext
from kds.version import PRODUCT, __version__

__all__ = ["api_ssl_context", "build_app", "serve_api"]


class _OpenApi:
    """The OpenAPI document: its YAML text, and its JSON text once first asked for. Parsing
    the YAML takes about 55 ms of the event loop: done for every GET /openapi.json, which
    needs no token, 4 clients asking without pause held the loop (18 answers a second) and
    made a GET /meshes take 300 ms instead of 0.5 ms."""

    def __init__(self, text: str):
        self.yaml = text
        self._json: str | None = None

    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(yaml.safe_load(self.yaml))
        return self._json


_OPENAPI: web.AppKey[_OpenApi] = web.AppKey("kds_openapi", _OpenApi)


async def _index(request: web.Request) -> web.Response:
    """Kuma's index fields (kumactl reads ``product`` and ``version`` before every command),
    with this daemon's own values, then its role and zone."""
    ctx = request.app[API_CONTEXT]
    host = socket.gethostname()
    return web.json_response(
        {
            "hostname": host,
            "product": PRODUCT,
            "version": __version__,
            "instanceId": f"{host}-{os.getpid()}",
            "clusterId": ctx.store.store_id,
            "gui": "/gui" if ctx.role == "global" else "",
            "role": ctx.role,
            "zone": ctx.zone,
        }
    )


async def _openapi_yaml(request: web.Request) -> web.Response:
    return web.Response(text=request.app[_OPENAPI].yaml, content_type="application/yaml")


async def _openapi_json(request: web.Request) -> web.Response:
    return web.Response(text=request.app[_OPENAPI].json(), content_type="application/json")


def _load_openapi() -> str:
    return resources.files("kds").joinpath("openapi.yaml").read_text(encoding="utf-8")


def build_app(ctx: ApiContext, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    """The API application; ``extra_routes`` lets a daemon add its own (e.g. /status)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=max(client_max_size(ctx.limits), ctx.max_apply_bytes),
    )
    app[API_CONTEXT] = ctx
    app[_OPENAPI] = _OpenApi(_load_openapi())
    routes: list[web.RouteDef] = [
        web.get("/", _index),
        web.get("/openapi.yaml", _openapi_yaml),
        web.get("/openapi.json", _openapi_json),
        web.post("/_apply", apply_handler),
        web.get("/_kri/{kri}", kri_handler),
    ]
    paths = [
        (Kind.MESH, "/meshes", "/meshes/{name}"),
        (Kind.SECRET, "/meshes/{mesh}/secrets", "/meshes/{mesh}/secrets/{name}"),
        # Kuma's path for global secrets is /globalsecrets (kumactl's); /global-secrets is
        # its alternative path, and was this API's first.
        (Kind.GLOBAL_SECRET, "/globalsecrets", "/globalsecrets/{name}"),
        (Kind.GLOBAL_SECRET, "/global-secrets", "/global-secrets/{name}"),
    ]
    routes.append(web.get("/secrets", list_handler(Kind.SECRET, all_meshes=True)))
    for kind, collection, item in paths:
        routes += [
            web.get(collection, list_handler(kind)),
            web.get(item, get_handler(kind)),
            web.put(item, put_handler(kind)),
            web.delete(item, delete_handler(kind)),
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


# On shutdown, how long requests in progress may still take before they are cancelled (one
# waiting on an unreachable store would otherwise hold the daemon up for its full timeout).
# aiohttp waits this long twice (for the handlers, then for the connections): 2 s in all.
SHUTDOWN_WAIT = 1.0


async def serve_api(
    ctx: ApiContext,
    address: tuple[str, int],
    extra_routes: list[web.RouteDef] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = MAX_CONNECTIONS,
    idle_s: float = IDLE_S,
) -> web.AppRunner:
    """Start the API on ``address`` (HTTPS with ``ssl_context``); a port that cannot be bound
    is a ConfigError naming it. Connections are bounded in number and time
    (kds.api._connections)."""
    runner = web.AppRunner(
        build_app(ctx, extra_routes),
        access_log=None,
        shutdown_timeout=SHUTDOWN_WAIT,
        keepalive_timeout=idle_s,  # also: a request's head must arrive within it
    )
    await runner.setup()
    host, port = address
    site = GuardedSite(
        runner, host, port, ssl_context=ssl_context, gate=ConnectionGate(max_connections)
    )
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"--api-address {host}:{port}: cannot listen: {e.strerror}") from None
    return runner
