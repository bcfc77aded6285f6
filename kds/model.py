"""Resources in their text forms: a parsed YAML/JSON document or API body in, JSON out. Pure.

- Universal YAML / JSON (here): ``{type, name, mesh (Secret only), data (base64), labels}``,
  plus a Mesh's kind-specific fields (``mtls``).
- Kubernetes (kds.kubernetes): ``from_document`` accepts it too.

This is also where the rest of the code finds the resource types and rules: the names of
kds.resource, kds.validation and kds.kubernetes that callers use are re-exported, so
``from kds.model import Key, Resource, validate`` keeps working. Everything here is pure:
no I/O, no clock.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from kds.errors import FieldViolation, InvalidResource, shown
from kds.fields import unknown_fields
from kds.kubernetes import (
    K8S_GLOBAL_SECRET_TYPE,
    K8S_SECRET_TYPE,
    from_kubernetes,
    kubernetes_field,
    to_kubernetes,
)
from kds.mtls import canonical_mtls
from kds.resource import (
    DEFAULT_MAX_DATA_BYTES,
    DEFAULT_MESH,
    LABEL_DISPLAY_NAME,
    LABEL_ENV,
    LABEL_MESH,
    LABEL_ORIGIN,
    LABEL_ZONE,
    SYSTEM_LABELS,
    Key,
    Kind,
    Limits,
    Resource,
    stays_on_global,
)
from kds.validation import (
    MESH_SPEC_FIELDS,
    OUTPUT_ONLY_FIELDS,
    decode_data,
    read_mesh_spec,
    validate,
    validate_labels,
    validate_mesh_name,
    validate_name,
)

__all__ = [
    "DEFAULT_MAX_DATA_BYTES",
    "DEFAULT_MESH",
    "K8S_GLOBAL_SECRET_TYPE",
    "K8S_SECRET_TYPE",
    "LABEL_DISPLAY_NAME",
    "LABEL_ENV",
    "LABEL_MESH",
    "LABEL_ORIGIN",
    "LABEL_ZONE",
    "SYSTEM_LABELS",
    "Key",
    "Kind",
    "Limits",
    "Resource",
    "decode_data",
    "from_document",
    "from_json_body",
    "kubernetes_field",
    "stays_on_global",
    "to_json",
    "to_kubernetes",
    "validate",
    "validate_labels",
    "validate_mesh_name",
    "validate_name",
]

_UNIVERSAL_FIELDS = {
    Kind.SECRET: {"type", "name", "mesh", "data", "labels", *OUTPUT_ONLY_FIELDS},
    Kind.GLOBAL_SECRET: {"type", "name", "data", "labels", *OUTPUT_ONLY_FIELDS},
    Kind.MESH: {"type", "name", "labels", *OUTPUT_ONLY_FIELDS, *MESH_SPEC_FIELDS},
}


def _kind_of(value: object, field_name: str = "type") -> Kind:
    try:
        # Only a string names a type: str() of a nested value could take gigabytes.
        return Kind(value if isinstance(value, str) else "")
    except ValueError:
        raise InvalidResource(
            [
                FieldViolation(
                    field_name,
                    f"unknown type {shown(value)}: expected one of Mesh, Secret, GlobalSecret",
                )
            ]
        ) from None


def _universal(doc: Mapping[str, Any], limits: Limits) -> Resource:
    kind = _kind_of(doc.get("type"))
    errs = unknown_fields("", doc, _UNIVERSAL_FIELDS[kind])
    if kind is Kind.SECRET and "mesh" not in doc:
        errs.append(FieldViolation("mesh", "is required for a Secret"))
    data = b""
    if kind is not Kind.MESH:
        try:
            data = decode_data(doc.get("data"), limits)
        except InvalidResource as e:
            errs += e.errors
    spec: dict[str, Any] = {}
    if kind is Kind.MESH:
        spec, spec_errs = read_mesh_spec(doc, doc.get("name"))
        errs += spec_errs
    labels = doc.get("labels")
    label_errs = validate_labels(labels)  # None is no labels; [] or "" is refused
    labels = {} if labels is None else labels
    if isinstance(labels, Mapping) and LABEL_MESH in labels:
        # The Kubernetes form's way of naming the mesh: in this form it must agree with
        # ``mesh``, and it is implied by it, so it is not stored twice.
        if kind is not Kind.SECRET:
            label_errs.append(
                FieldViolation(f"labels[{LABEL_MESH}]", f"only a Secret has a mesh, not a {kind}")
            )
        elif labels[LABEL_MESH] != doc.get("mesh"):
            label_errs.append(
                FieldViolation(
                    f"labels[{LABEL_MESH}]", f"must equal mesh ({shown(doc.get('mesh'))})"
                )
            )
        labels = {k: v for k, v in labels.items() if k != LABEL_MESH}
    if errs or label_errs:
        raise InvalidResource(errs + label_errs + validate_name(doc.get("name")))
    # Resource.of: every resource of an apply is built here (10,000 for a 10,000-secret
    # apply, in kdsctl and again on global), and the dataclass __init__ costs 4x as much.
    res = Resource.of(
        kind=kind,
        name=doc.get("name"),  # type: ignore[arg-type]  # validated below
        mesh=doc.get("mesh", "") if kind is Kind.SECRET else "",
        data=data,
        labels=dict(labels),
        spec=spec,
        creation_time="",
        modification_time="",
        version=0,
    )
    validate(res, limits)
    return res


def from_document(doc: object, limits: Limits | None = None) -> Resource:
    """Build a resource from one parsed YAML/JSON document in either text form."""
    limits = limits or Limits()
    if not isinstance(doc, Mapping):
        raise InvalidResource([FieldViolation("", "a resource must be a YAML/JSON map")])
    if "apiVersion" in doc or "kind" in doc:
        return from_kubernetes(doc, limits)
    if "type" not in doc:
        raise InvalidResource(
            [
                FieldViolation(
                    "type", "is required (Mesh, Secret or GlobalSecret), or use apiVersion/kind"
                )
            ]
        )
    return _universal(doc, limits)


def from_json_body(
    body: object, kind: Kind, name: str, mesh: str = "", limits: Limits | None = None
) -> Resource:
    """Build a resource from an API PUT body; the path decides kind, name and mesh."""
    if not isinstance(body, Mapping):
        raise InvalidResource([FieldViolation("", "request body must be a JSON object")])
    doc = dict(body)
    errs: list[FieldViolation] = []
    doc.setdefault("type", str(kind))
    if doc["type"] != kind:
        errs.append(
            FieldViolation("type", f"must be {kind} on this path (got {shown(doc['type'])})")
        )
    doc.setdefault("name", name)
    if doc["name"] != name:
        errs.append(FieldViolation("name", f"must match the name in the path ({shown(name)})"))
    if kind is Kind.SECRET:
        doc.setdefault("mesh", mesh)
        if doc["mesh"] != mesh:
            errs.append(FieldViolation("mesh", f"must match the mesh in the path ({shown(mesh)})"))
    if errs:
        raise InvalidResource(errs + validate_name(name))
    return _universal(doc, limits or Limits())


def to_json(resource: Resource, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The API / Universal form. Data is base64; pass the result only where data may show."""
    out: dict[str, Any] = dict(resource.spec)  # kind-specific fields never shadow the common ones
    if isinstance(out.get("mtls"), Mapping):  # a row written when ``config`` was kept as given
        out["mtls"] = canonical_mtls(out["mtls"])
    out.update({"type": str(resource.kind), "name": resource.name})
    if resource.kind is Kind.SECRET:
        out["mesh"] = resource.mesh
    out["creationTime"] = resource.creation_time
    out["modificationTime"] = resource.modification_time
    labels = dict(resource.labels)
    if extra_labels:
        labels.update(extra_labels)
    out["labels"] = labels
    if resource.kind is not Kind.MESH:
        out["data"] = base64.b64encode(resource.data).decode("ascii")
    return out
