"""POST /_apply: many resources, in either text form, written in one transaction.

Either every item is written or none; a problem is reported against ``items[i]`` and the
field, named as the item's own form names it (``metadata.name`` for a Kubernetes item).
The items come as ``{"items": [...]}``, or as JSON Lines (``Content-Type:
application/x-ndjson``, one item per line, ``items[i]`` the i-th non-blank line), which are
checked one by one as they arrive: a client that sends while it still reads its input
(``kdsctl apply``) has most of them checked by the time it is done. Either way nothing is
written before the whole body is in and every item has passed.
Items may carry the labels the control plane computes, as a PUT may (kds.api._labels); the
answer's ``warnings`` says what a write did that its author may not expect, as a PUT's does.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiohttp import web

from kds import failpoints
from kds.api._body import json_lines, read_json
from kds.api._context import API_CONTEXT, ApiContext, size_violation
from kds.api._errors import HttpError
from kds.api._labels import synced_claim_problems, take_computed_labels
from kds.api._resources import (
    MAX_PROBLEMS,
    log_applied,
    new_mesh_name_problems,
    own_origin,
    write_warnings,
)
from kds.errors import (
    Conflict,
    FieldViolation,
    InvalidReferences,
    InvalidResource,
    KdsError,
    NameTaken,
    NotFound,
    StoreError,
)
from kds.kubernetes import kubernetes_field
from kds.kubernetes_names import SECRET_KINDS, name_problems
from kds.model import Key, Kind, Resource, from_document
from kds.store import WriteResult

__all__ = ["NDJSON", "apply_handler"]

# The Content-Type of a body of JSON Lines: one item per line.
NDJSON = "application/x-ndjson"

log = structlog.get_logger("kds.api")


async def apply_handler(request: web.Request) -> web.Response:
    """POST /_apply {"items": [...]} (or JSON Lines, one item a line): create or update
    many resources in one transaction.

    Items take either text form (as from a YAML file). Meshes are written first, then the
    rest in the order given. Either every item is written or none: a problem answers 400
    (or 409) naming ``items[i]`` and the field.
    """
    ctx = request.app[API_CONTEXT]
    items = _Items(ctx, ctx.now())
    if request.content_type == NDJSON:
        async for item in json_lines(request, ctx.max_apply_bytes):
            await items.add(item)
    else:
        body = await read_json(request, ctx.max_apply_bytes)
        listed = body.get("items") if isinstance(body, Mapping) else None
        if not isinstance(listed, list):
            raise HttpError(
                400,
                "Bad request",
                'expected {"items": [resource, ...]}',
                [FieldViolation("items", "must be a list of resources")],
            )
        for item in listed:
            await items.add(item)
        # Parsed: the request's own objects go before the write, which makes as many again.
        del body, listed
    now, errs, parsed, k8s, warnings = (
        items.now,
        items.errs,
        items.parsed,
        items.k8s,
        items.warnings,
    )
    if errs:
        raise HttpError(400, "Invalid resources", "nothing was applied", errs)
    if k8s:
        errs = await _kubernetes_names(ctx, parsed, k8s)
        if errs:
            raise HttpError(400, "Invalid resources", "nothing was applied", errs)
    parsed.sort(key=lambda p: p[1].kind is not Kind.MESH)  # stable: meshes first
    try:
        results = await ctx.store.put_many([r for _, r in parsed], now, _positions(parsed, k8s))
    except NameTaken as e:
        # Another write took the name since the check above: answered as that check does.
        problems = [(j, f) for j, fields in e.by_index.items() for f in fields]
        causes = _name_causes(parsed, problems[:MAX_PROBLEMS])
        raise HttpError(400, "Invalid resources", "nothing was applied", causes) from None
    except InvalidReferences as e:
        causes = [
            FieldViolation(
                f"items[{parsed[j][0]}].{_item_field(f.field, parsed[j][0] in k8s)}", f.message
            )
            for j, fields in e.by_index.items()
            for f in fields
        ]
        index, res = parsed[next(iter(e.by_index))]
        raise HttpError(
            400,
            "Invalid resources",
            f"nothing was applied: items[{index}] ({res.key}) is invalid",
            causes,
        ) from None
    except StoreError:
        # The store's own failure (a full disk, a database away, a damaged row), not the
        # items': answered as a PUT's is (507, 503, 500), and a full disk reported.
        raise
    except KdsError as e:
        index, res = parsed[e.item_index or 0]
        if isinstance(e, NotFound) and res.kind is Kind.SECRET:
            raise HttpError(
                400,
                "Invalid resources",
                f"nothing was applied: items[{index}] ({res.key}) is invalid",
                [FieldViolation(f"items[{index}].mesh", f"mesh {res.mesh!r} does not exist")],
            ) from None
        status = 409 if isinstance(e, Conflict) else 404 if isinstance(e, NotFound) else 400
        raise HttpError(
            status,
            "Conflict" if status == 409 else "Invalid resources",
            f"nothing was applied: items[{index}]: {e}",
        ) from None
    failpoints.reach("api-after-commit")
    origin = own_origin(ctx)
    out = []
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    written = [res for _, res in parsed]
    # Builtin CA secrets generated in the same transaction follow the items given.
    written += [r.resource for r in results[len(parsed) :] if r.resource is not None]
    changed: list[WriteResult] = []
    for res, result in zip(written, results, strict=True):
        outcome = "created" if result.created else "updated" if result.changed else "unchanged"
        counts[outcome] += 1
        if result.changed:
            changed.append(result)
        out.append({"type": str(res.kind), "mesh": res.mesh, "name": res.name, "result": outcome})
    log_applied(changed, origin)
    log.info("resources applied", total=len(out), origin=origin, **counts)
    return web.json_response({"items": out, "warnings": warnings} if warnings else {"items": out})


async def _kubernetes_names(
    ctx: ApiContext, parsed: list[tuple[int, Resource]], k8s: set[int]
) -> list[FieldViolation]:
    """Problems of the Kubernetes-form Secrets and GlobalSecrets of an apply whose name is
    another Secret's or GlobalSecret's, here or among the items (kds.kubernetes_names): read
    before the write, so they are answered before anything the store finds. The store checks
    again inside the write's transaction (``NameTaken``), against writes made meanwhile."""
    named = {r.name for i, r in parsed if i in k8s and r.kind in SECRET_KINDS}
    if not named:
        return []
    stored = await ctx.store.secrets_named(named)
    problems = name_problems([r for _, r in parsed], _positions(parsed, k8s), stored, MAX_PROBLEMS)
    return _name_causes(parsed, problems)


def _positions(parsed: list[tuple[int, Resource]], k8s: set[int]) -> set[int]:
    """The positions in ``parsed`` of the items in the Kubernetes form."""
    return {j for j, (i, _) in enumerate(parsed) if i in k8s}


def _name_causes(
    parsed: list[tuple[int, Resource]], problems: list[tuple[int, FieldViolation]]
) -> list[FieldViolation]:
    """Name problems (by position in ``parsed``) as causes naming ``items[i]`` and the field
    as the Kubernetes form writes it."""
    return [
        FieldViolation(f"items[{parsed[j][0]}].{kubernetes_field(f.field)}", f.message)
        for j, f in problems
    ]


class _Items:
    """The items of one apply, each checked as it comes: every problem found (naming
    ``items[i]`` and the field), the resources parsed, which items took the Kubernetes form,
    and the warnings to answer with."""

    def __init__(self, ctx: ApiContext, now: str):
        self.ctx = ctx
        self.now = now
        self.errs: list[FieldViolation] = []
        self.parsed: list[tuple[int, Resource]] = []
        self.k8s: set[int] = set()
        self.warnings: list[str] = []
        self._seen: dict[Key, int] = {}
        self._count = 0

    async def add(self, item: object) -> None:
        i, ctx = self._count, self.ctx
        self._count += 1
        if isinstance(item, Mapping) and "apiVersion" in item:
            self.k8s.add(i)
        doc, label_errs, claim = take_computed_labels(ctx, item)
        try:
            res = from_document(doc, ctx.limits)
        except InvalidResource as e:
            label_errs += e.errors
        else:
            label_errs += [
                FieldViolation(_item_field(v.field, i in self.k8s), v.message)
                for v in await new_mesh_name_problems(ctx, res)
            ]
            label_errs += await synced_claim_problems(ctx, res.key, claim)
        if label_errs:
            self._problems(
                i,
                [
                    FieldViolation(f"items[{i}].{c.field}" if c.field else f"items[{i}]", c.message)
                    for c in label_errs
                ],
            )
            return
        if len(self.warnings) < MAX_PROBLEMS:
            self.warnings += write_warnings(ctx, item, res, f"items[{i}]: ")
        too_big = size_violation(ctx, res, self.now, f"items[{i}].")
        if too_big:
            self._problems(i, [too_big])
        if res.key in self._seen:
            self._problems(
                i,
                [FieldViolation(f"items[{i}]", f"{res.key} is also items[{self._seen[res.key]}]")],
            )
        self._seen[res.key] = i
        self.parsed.append((i, res))

    def _problems(self, i: int, found: list[FieldViolation]) -> None:
        """Add ``found``; past MAX_PROBLEMS, answer at once with the first of them: nothing
        will be applied, and a body of 3 MiB of empty items made a 238 MB answer before."""
        self.errs += found
        if len(self.errs) >= MAX_PROBLEMS:
            raise HttpError(
                400,
                "Invalid resources",
                f"nothing was applied: {MAX_PROBLEMS} problems or more; the first "
                f"{MAX_PROBLEMS} are listed, and items after items[{i}] were not read",
                self.errs[:MAX_PROBLEMS],
            )


def _item_field(f: str, kubernetes: bool) -> str:
    return kubernetes_field(f) if kubernetes else f
