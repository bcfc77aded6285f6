"""The resource routes: list, get, put and delete of Meshes, Secrets and GlobalSecrets.

Kuma's conventions: a resource body is the Universal form (kds.model.to_json), and answers
add the labels the control plane computes (kds.api._labels), which are never stored. A
write answers ``{}`` (201 created, 200 updated), or ``{"warnings": [...]}``: never the
resource, so a write does not echo secret data back. ``GET ...?format=k8s`` answers the
Kubernetes form (of each item, on a list). Lists page by ``offset`` and ``size`` (100 by
default, at most 1000) and select with ``name`` (a part of the name) and
``filter[labels.KEY]=VALUE``. A Secret path in a mesh that does not exist is 404. A read with the read-only token gets resources
without their data. Each write logs one line naming the resource, never its data (an apply, one line per
``APPLIED_PER_LINE`` resources).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog
from aiohttp import hdrs, web

from kds import failpoints
from kds.api._body import int_param, read_json
from kds.api._context import API_CONTEXT, READ_ONLY_KEY, RESULT_HEADER, ApiContext, size_violation
from kds.api._errors import HttpError
from kds.api._labels import computed_labels, synced_claim_problems, take_computed_labels
from kds.errors import FieldViolation, InvalidResource, NotFound, shown
from kds.model import (
    Key,
    Kind,
    Resource,
    from_json_body,
    stays_on_global,
    to_json,
    to_kubernetes,
    validate_mesh_name,
)
from kds.mtls import conf_alias_warnings, is_builtin_secret_name
from kds.resource import LABEL_ZONE
from kds.store import ORIGIN_GLOBAL, ORIGIN_ZONE, Clause, Row, Selection, WriteResult
from kds.store.results import Origin

__all__ = [
    "APPLIED_LINE_CHARS",
    "APPLIED_PER_LINE",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_PROBLEMS",
    "Handler",
    "delete_handler",
    "get_handler",
    "invalid_resource",
    "kri_handler",
    "list_handler",
    "log_applied",
    "log_written",
    "mesh_kri",
    "new_mesh_name_problems",
    "own_origin",
    "put_handler",
    "write_warnings",
]

log = structlog.get_logger("kds.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Kuma's list paging: 100 items when ``size`` is not given, at most 1000.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_FILTER_PREFIX = "filter["
_LABEL_FILTER_PREFIX = "filter[labels."
_MAX_FILTER_ERRORS = 10  # refused filter parameters named in one answer
# Stand-ins for a row's name and mesh when finding which computed labels show them: neither
# is a valid name, so no fixed computed value equals one.
_NAME, _MESH = "\0name", "\0mesh"


def _render(ctx: ApiContext, row: Row, request: web.Request, k8s: bool = False) -> dict[str, Any]:
    labels = computed_labels(ctx, row.resource, row.origin)
    if k8s:
        body = to_kubernetes(row.resource)
        body["metadata"]["labels"].update(labels)
        if request.get(READ_ONLY_KEY):
            body.pop("data", None)
        return body
    body = to_json(row.resource, labels)
    if row.resource.kind is Kind.MESH:
        body["kri"] = mesh_kri(row.resource.name, body["labels"])
    if request.get(READ_ONLY_KEY):
        body.pop("data", None)  # the read-only token never sees secret data
    return body


def mesh_kri(name: str, labels: Mapping[str, str]) -> str:
    """Kuma's resource identifier of a Mesh, output-only; Kuma gives one to the kinds that
    have a short name (a Mesh's is "m"; Secrets have none):
    kri_{short}_{mesh}_{zone}_{namespace}_{name}_{section}."""
    return f"kri_m__{labels.get(LABEL_ZONE, '')}__{name}_"


async def kri_handler(request: web.Request) -> web.Response:
    """Kuma's ``GET /_kri/{kri}``: the resource a KRI names, in either form (``format``).
    Here a Mesh is the only kind with one; an identifier of another kind is a 400, as Kuma
    answers one of a kind it does not know."""
    ctx = request.app[API_CONTEXT]
    text = request.match_info["kri"]
    parts = text.split("_")
    if len(parts) < 7 or parts[0] != "kri":
        reason = "must be kri_{short name}_{mesh}_{zone}_{namespace}_{name}_{section}"
        raise HttpError(400, "Bad Request", "invalid KRI", [FieldViolation("kri", reason)])
    if parts[1] != "m":
        reason = f"unknown short name of resource type: {shown(parts[1])} (only m, a Mesh)"
        raise HttpError(400, "Bad Request", "invalid KRI", [FieldViolation("kri", reason)])
    k8s = _k8s_format(request)
    row = await ctx.store.get(Key(Kind.MESH, "", parts[5]))
    # As Kuma's Universal reads one: by name and zone (a resource synced from another zone
    # has another name); its namespace and section are not looked at.
    labels = {} if row is None else computed_labels(ctx, row.resource, row.origin)
    if row is None or labels.get(LABEL_ZONE, "") != parts[3]:
        raise NotFound(f"no resource has KRI {shown(text)}")
    return web.json_response(_render(ctx, row, request, k8s))


def _key(kind: Kind, request: web.Request) -> Key:
    mi = request.match_info
    return Key(kind, mi["mesh"] if kind is Kind.SECRET else "", mi["name"])


async def _require_mesh(ctx: ApiContext, mesh: str) -> None:
    if await ctx.store.get(Key(Kind.MESH, "", mesh)) is None:
        raise _mesh_not_found(mesh)


def _mesh_not_found(mesh: str) -> HttpError:
    message = f"mesh {shown(mesh, 253)} does not exist"  # 253: the longest valid name
    return HttpError(404, "Not found", message, [FieldViolation("mesh", message)])


def own_origin(ctx: ApiContext) -> Origin:
    """The origin of the rows this API writes: a zone's own, or global's."""
    return ORIGIN_ZONE if ctx.role == "zone" else ORIGIN_GLOBAL


def _k8s_format(request: web.Request) -> bool:
    fmt = request.query.get("format", "")
    if fmt in ("", "universal"):
        return False
    if fmt in ("k8s", "kubernetes"):
        return True
    raise HttpError(
        400,
        "Bad request",
        "invalid query parameter 'format'",
        [FieldViolation("format", "must be one of: k8s, kubernetes, universal")],
    )


def _label_filters(request: web.Request) -> dict[str, str]:
    """``filter[labels.KEY]=VALUE`` parameters (Kuma's: exact match, the last value given;
    the key ends at the first ``]``, so ``filter[labels.KEY][eq]``, an operator Kuma does
    not support either, is refused rather than matching nothing). A refused parameter is
    named as an error may show user input: escaped and cut."""
    filters: dict[str, str] = {}
    errs = []
    for name in dict.fromkeys(request.query):  # a repeated parameter is one
        if not name.startswith(_FILTER_PREFIX):
            continue
        if not name.startswith(_LABEL_FILTER_PREFIX):
            reason = "only filter[labels.KEY]=VALUE is supported (exact match)"
        elif name.find("]") != len(name) - 1:
            reason = "advanced filters are not supported: only filter[labels.KEY]=VALUE"
        else:
            filters[name[len(_LABEL_FILTER_PREFIX) : -1]] = request.query.getall(name)[-1]
            continue
        errs.append(FieldViolation(name, reason))
        if len(errs) == _MAX_FILTER_ERRORS:
            break
    if errs:
        raise HttpError(400, "Bad request", "invalid filter", errs)
    return filters


def _selection(
    ctx: ApiContext, kind: Kind, name_part: str, filters: Mapping[str, str]
) -> Selection:
    """The list's ``name`` and label filters as a store selection, on the labels its answer
    shows: a label the control plane computes for a row (kds.api._labels) is matched on
    what it computes (the row's name, its mesh, or a value fixed by its origin), any other
    on the row's stored labels."""
    origins: dict[Origin, Clause] = {}
    for origin in (ORIGIN_GLOBAL, ORIGIN_ZONE):
        computed = computed_labels(ctx, Resource(kind, _NAME, mesh=_MESH), origin)
        clause = Clause(labels={k: v for k, v in filters.items() if k not in computed})
        for key, value in filters.items():
            shown_as = computed.get(key)
            if shown_as is None:
                continue
            field = "name" if shown_as == _NAME else "mesh" if shown_as == _MESH else None
            if field is None:
                if value != shown_as:
                    break  # a fixed label this origin's rows never show with this value
            elif getattr(clause, field) in (None, value):
                clause = (
                    replace(clause, name=value) if field == "name" else replace(clause, mesh=value)
                )
            else:
                break  # two filters on one computed label disagree
        else:
            origins[origin] = clause
    return Selection(name_part, origins)


def list_handler(kind: Kind, all_meshes: bool = False) -> Handler:
    """A list; for Secrets, of one mesh, or of every mesh with ``all_meshes`` (``/secrets``)."""

    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        offset = int_param(request, "offset", 0, minimum=0) or 0
        size = int_param(request, "size", DEFAULT_PAGE_SIZE, minimum=1) or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise HttpError(
                400,
                "Bad request",
                "invalid page size",
                [FieldViolation("size", f"must be at most {MAX_PAGE_SIZE} (got {size})")],
            )
        name_part = request.query.get("name", "")
        filters = _label_filters(request)
        k8s = _k8s_format(request)
        mesh: str | None = None
        if kind is Kind.SECRET and not all_meshes:
            mesh = request.match_info["mesh"]
            await _require_mesh(ctx, mesh)
        select = _selection(ctx, kind, name_part, filters) if name_part or filters else None
        total, page = await ctx.store.page(kind, mesh, offset, size, select)
        items = [_render(ctx, r, request, k8s) for r in page]
        next_url = None
        if offset + size < total:
            next_url = _next_url(request, offset + size, size)
        return web.json_response({"total": total, "items": items, "next": next_url})

    return handler


# A Host header the next page's URL may name: a name or address, or a bracketed IPv6
# address, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?", re.ASCII)


def _next_url(request: web.Request, offset: int, size: int) -> str:
    """The next page's URL, on the host the request named (as Kuma's is); a path alone when
    its Host header is no host and port. The URL was built from any Host header: one holding
    two colons failed the list with a 500, and one holding '/' or '?' made the link another
    host's."""
    page = str(request.rel_url.update_query({"offset": str(offset), "size": str(size)}))
    host = request.headers.get(hdrs.HOST, "")
    return f"{request.scheme}://{host}{page}" if _HOST.fullmatch(host) else page


def get_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        k8s = _k8s_format(request)
        row = await ctx.store.get(key)
        if row is None:
            # A Secret exists only in a mesh that does: its mesh is looked up (for the answer
            # that names the missing mesh) only when the Secret is not found.
            if kind is Kind.SECRET:
                await _require_mesh(ctx, key.mesh)
            raise NotFound(f"{key} not found")
        return web.json_response(_render(ctx, row, request, k8s))

    return handler


async def new_mesh_name_problems(ctx: ApiContext, res: Resource) -> list[FieldViolation]:
    """Kuma's RFC 1035 rule for the name of a Mesh this write would create; a Mesh created
    under the older rule can still be changed."""
    if res.kind is not Kind.MESH or await ctx.store.get(res.key) is not None:
        return []
    return validate_mesh_name(res.name)


def write_warnings(
    ctx: ApiContext, body: object, resource: Resource, prefix: str = ""
) -> list[str]:
    """What a write did that its author may not expect, said in its answer (Kuma's
    ``warnings``)."""
    warnings = []
    if (
        ctx.role == "zone"
        and resource.kind is Kind.SECRET
        and is_builtin_secret_name(resource.mesh, resource.name)
    ):
        # The conflict rule keeps the zone's own secret in place of global's copy: global's
        # builtin CA of that name would never reach this zone's copy of the Mesh.
        warnings.append(
            f"{prefix}{resource.key} has the name global gives a builtin mTLS CA's secret in "
            f"mesh {resource.mesh!r}: if global's Mesh has or gets that backend, this zone keeps "
            "this secret in place of global's and its copy of the Mesh uses it as its CA"
        )
    if resource.kind is Kind.MESH and isinstance(body, Mapping):
        spec = body.get("spec") if "apiVersion" in body else body
        warnings += conf_alias_warnings(spec, prefix)
    if stays_on_global(resource.key):
        warnings.append(
            f"{prefix}{resource.key} stays on global and is not synced to zones: Kuma keeps its "
            "system global secrets (admin token, internal CAs, token signing keys) on global"
        )
    return warnings


# The most problems one write answers with (a PUT's, and an apply's in kds.api._apply):
# nothing is written either way, and the answer must not grow with the body.
MAX_PROBLEMS = 100


def invalid_resource(key: Key, causes: Sequence[FieldViolation]) -> HttpError:
    """400 for ``key``, listing at most MAX_PROBLEMS of ``causes``."""
    if len(causes) <= MAX_PROBLEMS:
        return HttpError(400, "Invalid resource", f"{key} is invalid", causes)
    return HttpError(
        400,
        "Invalid resource",
        f"{key} is invalid: {len(causes)} problems; the first {MAX_PROBLEMS} are listed",
        causes[:MAX_PROBLEMS],
    )


def put_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        try:
            body = await read_json(request)
            doc, label_errs, claim = take_computed_labels(ctx, body, kind, key.name)
            try:
                res = from_json_body(doc, kind, key.name, key.mesh, ctx.limits)
            except InvalidResource as e:
                raise invalid_resource(key, label_errs + e.errors) from None
            label_errs += await new_mesh_name_problems(ctx, res)
            label_errs += await synced_claim_problems(ctx, key, claim)
            if label_errs:
                raise invalid_resource(key, label_errs)
            now = ctx.now()
            too_big = size_violation(ctx, res, now)
            if too_big:
                raise invalid_resource(key, [too_big])
        except HttpError:
            # A Secret's missing mesh is the answer before any problem with its body (404,
            # not 400). Looked up only here: a write that gets to the store is refused there,
            # in its own transaction, if the mesh is missing (NotFound below), which spares
            # every Secret write a read of the mesh and its hop to the store's reader thread.
            if kind is Kind.SECRET:
                await _require_mesh(ctx, key.mesh)
            raise
        try:
            result = await ctx.store.put(res, now)
            created = result.created
        except InvalidResource as e:  # a rule across resources (kds.integrity)
            raise invalid_resource(key, e.errors) from None
        except NotFound as e:
            if kind is not Kind.SECRET:
                raise
            raise _mesh_not_found(key.mesh) from e
        failpoints.reach("api-after-commit")
        origin = own_origin(ctx)
        if result.changed:
            log_written(result, origin)
            for extra in result.also:
                log_written(extra, origin, reason="builtin CA generated")
        else:
            log.debug("resource unchanged", type=str(kind), mesh=key.mesh, name=key.name)
        outcome = "created" if created else "updated" if result.changed else "unchanged"
        warnings = write_warnings(ctx, body, res)
        return web.json_response(
            {"warnings": warnings} if warnings else {},
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


# Resources an apply names per "resources written" line: a 10,000-resource apply logs 100
# lines instead of 10,000 (rendering and writing a line costs ~10 us of the event loop). A
# line also ends before its names pass APPLIED_LINE_CHARS, so it stays under what log
# shippers split (Docker's 16 KiB) even with names of the longest length allowed.
APPLIED_PER_LINE = 100
APPLIED_LINE_CHARS = 8000


def log_applied(results: Sequence[WriteResult], origin: str) -> None:
    """The audit trail of an apply: every written resource named, with its new version and
    whether it was created, up to ``APPLIED_PER_LINE`` (and ``APPLIED_LINE_CHARS``) to a
    line; never data. Each resource reads ``Type mesh/name vN created|updated`` (``Type name
    ...`` for a kind without a mesh)."""
    line: list[str] = []
    chars = 0
    for result in results:
        stored = result.resource
        assert stored is not None
        where = f"{stored.mesh}/{stored.name}" if stored.mesh else stored.name
        outcome = "created" if result.created else "updated"
        entry = f"{stored.kind} {where} v{stored.version} {outcome}"
        if line and (len(line) >= APPLIED_PER_LINE or chars + len(entry) > APPLIED_LINE_CHARS):
            log.info("resources written", origin=origin, resources=line)
            line, chars = [], 0
        line.append(entry)
        chars += len(entry) + 4  # the quotes, comma and space around it in a JSON line
    if line:
        log.info("resources written", origin=origin, resources=line)


def delete_handler(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[API_CONTEXT]
        key = _key(kind, request)
        try:
            result = await ctx.store.delete(key)
        except NotFound:
            if kind is Kind.SECRET:  # as for a GET: the missing mesh is the answer, if it is
                await _require_mesh(ctx, key.mesh)
            raise
        failpoints.reach("api-after-commit")
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
