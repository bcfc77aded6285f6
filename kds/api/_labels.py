"""The labels the control plane computes, as Kuma computes them: shown, never stored.

An answer adds to a resource's own labels ``kuma.io/display-name`` (its name),
``kuma.io/mesh`` (a Secret's mesh) and ``kuma.io/origin``; a zone's own Secrets and
GlobalSecrets also get ``kuma.io/zone`` and ``kuma.io/env: universal`` (Kuma sets these only
on the kinds a zone provides, so never on a Mesh). A write may carry these labels when they
agree with what this control plane would show for it, so a resource read and written back
as it is (GET then PUT) is accepted, as Kuma accepts its own output; a value that disagrees
is refused naming the label. They are taken out before the resource is parsed, so nothing
stores them. On a zone, a copy synced from global shows ``kuma.io/origin: global``: a write
carrying that label (a zone's GET answer written back) is taken as global's copy written
back, and holds only where the zone has global's copy of that key (unchanged, or 409 for a
change, as any write of a synced copy); elsewhere it is refused naming the label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kds.api._context import ApiContext
from kds.errors import FieldViolation, shown
from kds.model import (
    LABEL_DISPLAY_NAME,
    LABEL_ENV,
    LABEL_MESH,
    LABEL_ORIGIN,
    LABEL_ZONE,
    SYSTEM_LABELS,
    Key,
    Kind,
    Resource,
)
from kds.store import ORIGIN_GLOBAL, ORIGIN_ZONE

__all__ = [
    "ENV_UNIVERSAL",
    "computed_labels",
    "synced_claim_problems",
    "take_computed_labels",
]

ENV_UNIVERSAL = "universal"


def computed_labels(ctx: ApiContext, resource: Resource, origin: str) -> dict[str, str]:
    """The labels an answer adds to ``resource`` (stored with ``origin``)."""
    labels = {LABEL_DISPLAY_NAME: resource.name}
    if resource.kind is Kind.SECRET:
        labels[LABEL_MESH] = resource.mesh
    if origin == ORIGIN_ZONE:
        labels[LABEL_ORIGIN] = "zone"
        if resource.kind is not Kind.MESH:
            if ctx.zone:
                labels[LABEL_ZONE] = ctx.zone
            labels[LABEL_ENV] = ENV_UNIVERSAL
    else:
        labels[LABEL_ORIGIN] = "global"
    return labels


def _expected(ctx: ApiContext, name: object, mesh_kind: bool, synced: bool) -> dict[str, str]:
    """The computed labels (kuma.io/mesh aside) a write on this control plane would get, or
    (``synced``) that a zone shows on global's copy."""
    labels = {LABEL_ORIGIN: "zone" if ctx.role == "zone" and not synced else "global"}
    if isinstance(name, str):
        labels[LABEL_DISPLAY_NAME] = name
    if ctx.role == "zone" and not mesh_kind and not synced:
        labels[LABEL_ENV] = ENV_UNIVERSAL
        if ctx.zone:
            labels[LABEL_ZONE] = ctx.zone
    return labels


def take_computed_labels(
    ctx: ApiContext, doc: object, kind: Kind | None = None, name: str | None = None
) -> tuple[object, list[FieldViolation], str | None]:
    """``doc`` (either text form) without the computed labels it carries, a violation for
    each that disagrees with what this control plane computes, and, when ``doc`` shows
    itself as a zone's copy of global's resource, the origin label's field (for
    synced_claim_problems to check once the key is known). kuma.io/mesh stays: the text
    forms check it against the resource's mesh. ``kind`` and ``name``: the path's, when it
    has them (else the document's type and name); a PUT's body may leave its name out, as
    the path gives it."""
    if not isinstance(doc, Mapping):
        return doc, [], None
    kubernetes = "apiVersion" in doc or "kind" in doc
    holder: Any = doc.get("metadata") if kubernetes else doc
    labels = holder.get("labels") if isinstance(holder, Mapping) else None
    if not isinstance(labels, Mapping) or not (SYSTEM_LABELS & labels.keys()):
        return doc, [], None
    mesh_kind = (kind or doc.get("kind" if kubernetes else "type")) in (Kind.MESH, "Mesh")
    synced = ctx.role == "zone" and labels.get(LABEL_ORIGIN) == "global"
    shown_on = (
        "a copy synced from global" if synced else f"a {ctx.role} control plane's own resources"
    )
    expected = _expected(ctx, holder.get("name", name), mesh_kind, synced)
    prefix = "metadata.labels" if kubernetes else "labels"
    errs = []
    for key in sorted(SYSTEM_LABELS & labels.keys()):
        want = expected.get(key)
        if want is None:
            errs.append(
                FieldViolation(
                    f"{prefix}[{key}]",
                    f"is set by the control plane and not shown on {shown_on}: leave it out",
                )
            )
        elif labels[key] != want:
            errs.append(
                FieldViolation(
                    f"{prefix}[{key}]",
                    f"is set by the control plane: must be {want!r} here or left out "
                    f"(got {shown(labels[key])})",
                )
            )
    kept = {k: v for k, v in labels.items() if k not in SYSTEM_LABELS}
    new_holder = {**holder, "labels": kept}
    claim = f"{prefix}[{LABEL_ORIGIN}]" if synced else None
    return ({**doc, "metadata": new_holder} if kubernetes else new_holder), errs, claim


async def synced_claim_problems(
    ctx: ApiContext, key: Key, claim: str | None
) -> list[FieldViolation]:
    """A write showing itself as global's copy (``claim``: its origin label's field, from
    take_computed_labels) holds only where this zone has global's copy of ``key``; the
    store then answers it unchanged, or refuses a change to it (409). Written anywhere else
    it would make a zone-local resource the label says it is not."""
    if claim is None:
        return []
    row = await ctx.store.get(key)
    if row is not None and row.origin == ORIGIN_GLOBAL:
        return []
    held = "holds no copy of" if row is None else "holds its own"
    return [
        FieldViolation(
            claim,
            f"is 'global' only on a copy synced from global, and this zone {held} {key}: "
            "leave it out to write the zone's own",
        )
    ]
