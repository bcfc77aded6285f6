"""The resource routes: list, get, put and delete of Meshes, Secrets and GlobalSecrets.

A resource body is the Universal form (kds.model.to_json); responses add the system labels
``kuma.io/origin`` (and ``kuma.io/zone`` for zone-local rows), which are never stored and
never accepted in a PUT. A read with the read-only token gets resources without their data.
Each write logs one line naming the resource, never its data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from kds.api._body import int_param, read_json
from kds.api._context import API_CONTEXT, READ_ONLY_KEY, RESULT_HEADER, ApiContext, size_violation
from kds.api._errors import HttpError
from kds.errors import FieldViolation, InvalidResource, NotFound
from kds.model import LABEL_ORIGIN, LABEL_ZONE, Key, Kind, from_json_body, to_json
from kds.store import ORIGIN_GLOBAL, ORIGIN_ZONE, Row, WriteResult
from kds.store.results import Origin

__all__ = [
    "Handler",
    "delete_handler",
    "get_handler",
    "list_handler",
    "log_written",
    "own_origin",
    "put_handler",
]

log = structlog.get_logger("kds.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _system_labels(ctx: ApiContext, row: Row) -> dict[str, str]:
    if row.origin == ORIGIN_ZONE:
        labels = {LABEL_ORIGIN: "zone"}
        if ctx.zone:
            labels[LABEL_ZONE] = ctx.zone
        return labels
    return {LABEL_ORIGIN: "global"}


def _render(ctx: ApiContext, row: Row, request: web.Request) -> dict[str, Any]:
    body = to_json(row.resource, _system_labels(ctx, row))
    if request.get(READ_ONLY_KEY):
        body.pop("data", None)  # the read-only token never sees secret data
    return body


def _key(kind: Kind, request: web.Request) -> Key:
    mi = request.match_info
    return Key(kind, mi["mesh"] if kind is Kind.SECRET else "", mi["name"])


async def _require_mesh(ctx: ApiContext, mesh: str) -> None:
    if await ctx.store.get(Key(Kind.MESH, "", mesh)) is None:
        raise NotFound(f"mesh {mesh!r} does not exist")


def own_origin(ctx: ApiContext) -> Origin:
    """The origin of the rows this API writes: a zone's own, or global's."""
    return ORIGIN_ZONE if ctx.role == "zone" else ORIGIN_GLOBAL


def list_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        offset = int_param(request, "offset", 0, minimum=0) or 0
        size = int_param(request, "size", None, minimum=1)
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


def get_handler(kind: Kind) -> Handler:
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


def put_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        body = await read_json(request)
        try:
            res = from_json_body(body, kind, key.name, key.mesh, ctx.limits)
        except InvalidResource as e:
            raise HttpError(400, "Invalid resource", f"{key} is invalid", e.errors) from None
        now = ctx.now()
        too_big = size_violation(ctx, res, now)
        if too_big:
            raise HttpError(400, "Invalid resource", f"{key} is invalid", [too_big])
        try:
            result = await ctx.store.put(res, now)
            created = result.created
        except InvalidResource as e:  # a rule across resources (kds.integrity)
            raise HttpError(400, "Invalid resource", f"{key} is invalid", e.errors) from None
        except NotFound as e:
            if kind is not Kind.SECRET:
                raise
            raise HttpError(
                400,
                "Invalid resource",
                f"{key} is invalid",
                [FieldViolation("mesh", f"mesh {key.mesh!r} does not exist")],
            ) from e
        stored = result.resource
        assert stored is not None
        origin = own_origin(ctx)
        if result.changed:
            log_written(result, origin)
            for extra in result.also:
                log_written(extra, origin, reason="builtin CA generated")
        else:
            log.debug("resource unchanged", type=str(kind), mesh=key.mesh, name=key.name)
        outcome = "created" if created else "updated" if result.changed else "unchanged"
        return web.json_response(
            _render(ctx, Row(stored, origin), request),
            status=201 if created else 200,
            headers={RESULT_HEADER: outcome},
        )

    return handler


def log_written(result: WriteResult, origin: str, **extra: str) -> None:
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


def delete_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        if kind is Kind.SECRET:
            await _require_mesh(ctx, key.mesh)
        result = await ctx.store.delete(key)
        prev = result.previous
        version = result.record.revision if result.record else (prev.version if prev else 0)
        origin = own_origin(ctx)
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
