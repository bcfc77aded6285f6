"""The HTTP JSON API both control planes serve (Kuma's paths and shapes), on aiohttp.

The modules, by job:

    _context    ApiContext (store, role, limits) and the size rules a resource must meet
    _errors     the error type, and the middlewares for errors and bearer tokens
    _resources  list, get, put and delete of each kind, and how a resource is rendered
    _labels     the labels Kuma computes: shown in answers, checked and dropped on writes
    _apply      POST /_apply: many resources in one transaction
    _app        build_app and serve_api: the routes, the OpenAPI document, TLS
    _connections  how many connections a client can make the API hold, and for how long
    auth        the API's bearer tokens (admin, read-only)
    observe     health and Prometheus metrics routes a daemon adds

A resource body is the Universal form (kds.model.to_json); answers add the labels Kuma
computes (``kuma.io/display-name``, ``kuma.io/mesh``, ``kuma.io/origin``, and on a zone's own
rows ``kuma.io/zone`` and ``kuma.io/env``; _labels), which are never stored; a write may carry
them only with those values. A write answers ``{}`` or ``{"warnings": [...]}``. Errors are
Kuma's body: ``{"type", "status", "title", "detail", "instance", "invalid_parameters":
[{field, reason}], "details", "causes": [{field, message}]}``.

Secret data never reaches a log line or an error message: errors name types, meshes, names
and fields only, and unexpected exceptions are logged by type and stack, without their
message or local variables (which could hold a request body).
"""

from __future__ import annotations

from kds.api._app import api_ssl_context, build_app, serve_api
from kds.api._body import int_param, read_json
from kds.api._context import (
    API_CONTEXT,
    OPEN_PATHS,
    RESULT_HEADER,
    ApiContext,
    _size_bound,
    client_max_size,
    encoded_message_size,
)

__all__ = [
    "API_CONTEXT",
    "OPEN_PATHS",
    "RESULT_HEADER",
    "ApiContext",
    "_size_bound",
    "api_ssl_context",
    "build_app",
    "client_max_size",
    "encoded_message_size",
    "int_param",
    "read_json",
    "serve_api",
]
