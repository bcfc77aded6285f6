"""The Kubernetes text form of a resource, both ways. Pure.

A Secret is ``apiVersion: v1, kind: Secret``, ``type: system.kuma.io/secret`` with label
``kuma.io/mesh`` (without it, mesh ``default``, as in Kuma); a GlobalSecret is ``type: system.kuma.io/global-secret``; the bytes are
base64 in ``data.value``. A Mesh is ``apiVersion: kuma.io/v1alpha1, kind: Mesh`` with its
fields under ``spec``. Problems name fields as this form writes them (``metadata.name``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from kds.errors import FieldViolation, InvalidResource, shown
from kds.fields import unknown_fields
from kds.mtls import canonical_mtls
from kds.resource import DEFAULT_MESH, LABEL_MESH, Kind, Limits, Resource
from kds.validation import MESH_SPEC_FIELDS, decode_data, read_mesh_spec, validate

__all__ = [
    "K8S_GLOBAL_SECRET_TYPE",
    "K8S_MESH_API_VERSION",
    "K8S_SECRET_TYPE",
    "from_kubernetes",
    "kubernetes_field",
    "to_kubernetes",
]

K8S_SECRET_TYPE = "system.kuma.io/secret"
K8S_GLOBAL_SECRET_TYPE = "system.kuma.io/global-secret"
K8S_MESH_API_VERSION = "kuma.io/v1alpha1"

_K8S_FIELDS = {
    "Secret": {"apiVersion", "kind", "metadata", "data", "type"},
    "Mesh": {"apiVersion", "kind", "metadata", "spec"},
}


def _validate_k8s(res: Resource, limits: Limits) -> None:
    """validate(), naming fields as the Kubernetes form writes them (metadata.name)."""
    try:
        validate(res, limits)
    except InvalidResource as e:
        raise InvalidResource([_k8s_field(err) for err in e.errors]) from None


def _k8s_field(err: FieldViolation) -> FieldViolation:
    return FieldViolation(kubernetes_field(err.field), err.message)


def kubernetes_field(f: str) -> str:
    """A field as the Universal form names it, renamed as the Kubernetes form writes it."""
    if f == "name":
        return "metadata.name"
    if f == "mesh":
        return f"metadata.labels[{LABEL_MESH}]"
    if f.startswith("labels"):
        return "metadata." + f
    if f == "data":
        return "data.value"
    if f.startswith("mtls"):
        return "spec." + f
    return f


def from_kubernetes(doc: Mapping[str, Any], limits: Limits) -> Resource:
    api_version, kind_name = doc.get("apiVersion"), doc.get("kind")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise InvalidResource([FieldViolation("metadata", "is required and must be a map")])
    given = meta.get("labels")
    labels_in = {} if given is None else given  # [] or "" is not a missing map: refused
    if not isinstance(labels_in, Mapping):
        raise InvalidResource([FieldViolation("metadata.labels", "must be a map")])
    labels = dict(labels_in)
    kind_key = kind_name if isinstance(kind_name, str) else ""
    unknown = unknown_fields("", doc, _K8S_FIELDS.get(kind_key, set(doc)))
    if unknown:
        raise InvalidResource(unknown)
    if LABEL_MESH in labels and (kind_name == "Mesh" or doc.get("type") == K8S_GLOBAL_SECRET_TYPE):
        # As in the Universal form: only a Secret has a mesh (a GlobalSecret or a Mesh
        # holding the label could not be read and written back in the Universal form).
        other = "Mesh" if kind_name == "Mesh" else Kind.GLOBAL_SECRET
        raise InvalidResource(
            [
                FieldViolation(
                    f"metadata.labels[{LABEL_MESH}]", f"only a Secret has a mesh, not a {other}"
                )
            ]
        )
    if kind_name == "Mesh":
        if api_version != K8S_MESH_API_VERSION:
            raise InvalidResource(
                [
                    FieldViolation(
                        "apiVersion", f"a Mesh must have apiVersion {K8S_MESH_API_VERSION}"
                    )
                ]
            )
        spec = doc.get("spec")
        spec = {} if spec is None else spec  # an empty list or string is not a missing spec
        if not isinstance(spec, Mapping):
            raise InvalidResource([FieldViolation("spec", "must be a map")])
        mesh_spec, errs = read_mesh_spec(spec, meta.get("name"), "spec.")
        errs += unknown_fields("spec.", spec, MESH_SPEC_FIELDS)
        if errs:
            raise InvalidResource(errs)
        res = Resource(kind=Kind.MESH, name=meta.get("name"), labels=labels, spec=mesh_spec)  # type: ignore[arg-type]
        _validate_k8s(res, limits)
        return res
    if kind_name != "Secret":
        raise InvalidResource(
            [
                FieldViolation(
                    "kind", f"unsupported kind {shown(kind_name)}: expected Secret or Mesh"
                )
            ]
        )
    if api_version != "v1":
        raise InvalidResource([FieldViolation("apiVersion", "a Secret must have apiVersion v1")])
    k8s_type = doc.get("type")
    data_map = doc.get("data")
    if not isinstance(data_map, Mapping) or "value" not in data_map:
        raise InvalidResource([FieldViolation("data.value", "is required (base64 bytes)")])
    extra = sorted(set(data_map) - {"value"})
    if extra:
        raise InvalidResource(
            [FieldViolation(f"data.{k}", "unknown key; only 'value'") for k in extra]
        )
    data = decode_data(data_map["value"], limits, "data.value")
    if k8s_type == K8S_SECRET_TYPE:
        mesh = labels.pop(LABEL_MESH, DEFAULT_MESH)
        res = Resource(Kind.SECRET, name=meta.get("name"), mesh=mesh, data=data, labels=labels)  # type: ignore[arg-type]
    elif k8s_type == K8S_GLOBAL_SECRET_TYPE:
        res = Resource(Kind.GLOBAL_SECRET, name=meta.get("name"), data=data, labels=labels)  # type: ignore[arg-type]
    else:
        raise InvalidResource(
            [
                FieldViolation(
                    "type",
                    f"unsupported Secret type {shown(k8s_type)}: expected {K8S_SECRET_TYPE} or "
                    f"{K8S_GLOBAL_SECRET_TYPE}",
                )
            ]
        )
    _validate_k8s(res, limits)
    return res


def to_kubernetes(resource: Resource) -> dict[str, Any]:
    if resource.kind is Kind.MESH:
        return {
            "apiVersion": K8S_MESH_API_VERSION,
            "kind": "Mesh",
            "metadata": {"name": resource.name, "labels": dict(resource.labels)},
            "spec": _k8s_spec(resource),
        }
    labels = dict(resource.labels)
    if resource.kind is Kind.SECRET:
        labels[LABEL_MESH] = resource.mesh
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": resource.name, "labels": labels},
        "data": {"value": base64.b64encode(resource.data).decode("ascii")},
        "type": K8S_SECRET_TYPE if resource.kind is Kind.SECRET else K8S_GLOBAL_SECRET_TYPE,
    }


def _k8s_spec(resource: Resource) -> dict[str, Any]:
    spec = dict(resource.spec)
    if isinstance(spec.get("mtls"), Mapping):  # a row written when ``config`` was kept as given
        spec["mtls"] = canonical_mtls(spec["mtls"])
    return spec
