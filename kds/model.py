"""Resources (Mesh, Secret, GlobalSecret), their validation and their text forms.

Everything here is pure: no I/O, no clock. Validation collects every problem with the field it
concerns, so an API answer or a CLI message can name each bad field and the rule it broke.

Text forms:
- Universal YAML / JSON: ``{type, name, mesh (Secret only), data (base64), labels}``.
- Kubernetes: ``apiVersion: v1, kind: Secret``, ``type: system.kuma.io/secret`` with label
  ``kuma.io/mesh`` (a Secret) or ``type: system.kuma.io/global-secret`` (a GlobalSecret), the
  bytes base64 in ``data.value``; a Mesh is ``apiVersion: kuma.io/v1alpha1, kind: Mesh``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from kds.errors import FieldViolation, InvalidResource
from kds.mtls import validate_mtls

__all__ = [
    "DEFAULT_MAX_DATA_BYTES",
    "K8S_GLOBAL_SECRET_TYPE",
    "K8S_SECRET_TYPE",
    "LABEL_MESH",
    "LABEL_ORIGIN",
    "LABEL_ZONE",
    "SYSTEM_LABELS",
    "Key",
    "Kind",
    "Limits",
    "Resource",
    "from_document",
    "from_json_body",
    "kubernetes_field",
    "to_json",
    "validate",
    "validate_name",
]

DEFAULT_MAX_DATA_BYTES = 1024 * 1024
LABEL_ORIGIN = "kuma.io/origin"
LABEL_ZONE = "kuma.io/zone"
LABEL_MESH = "kuma.io/mesh"
SYSTEM_LABELS = frozenset({LABEL_ORIGIN, LABEL_ZONE})
K8S_SECRET_TYPE = "system.kuma.io/secret"
K8S_GLOBAL_SECRET_TYPE = "system.kuma.io/global-secret"
K8S_MESH_API_VERSION = "kuma.io/v1alpha1"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")


class Kind(StrEnum):
    MESH = "Mesh"
    SECRET = "Secret"
    GLOBAL_SECRET = "GlobalSecret"


@dataclass(
    frozen=True, order=True, slots=True
)  # slots: global holds one per resource in a snapshot
class Key:
    """Identity of a resource: (kind, mesh, name); mesh is empty except for a Secret."""

    kind: Kind
    mesh: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.mesh}/{self.name}" if self.mesh else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Resource:
    kind: Kind
    name: str
    mesh: str = ""
    data: bytes = b""
    labels: Mapping[str, str] = field(default_factory=dict)
    spec: Mapping[str, Any] = field(default_factory=dict)
    creation_time: str = ""
    modification_time: str = ""
    version: int = 0

    @property
    def key(self) -> Key:
        return Key(self.kind, self.mesh, self.name)

    @classmethod
    def of(
        cls,
        kind: Kind,
        name: str,
        mesh: str,
        data: bytes,
        labels: Mapping[str, str],
        spec: Mapping[str, Any],
        creation_time: str,
        modification_time: str,
        version: int,
    ) -> Resource:
        """Every field given, no defaults: what decoders that build many resources at once use
        (a zone decoding 10,000 changes, the store reading rows). About 3x cheaper than the
        frozen dataclass __init__, which sets each field through object.__setattr__."""
        r = object.__new__(cls)
        r.__dict__.update(
            kind=kind,
            name=name,
            mesh=mesh,
            data=data,
            labels=labels,
            spec=spec,
            creation_time=creation_time,
            modification_time=modification_time,
            version=version,
        )
        return r

    def with_meta(self, **changes: Any) -> Resource:
        # Not dataclasses.replace, which is ~10x slower: global calls this for every resource
        # it writes, 10,000 times for a 10,000-secret apply (issue 7).
        unknown = changes.keys() - _RESOURCE_FIELDS
        if unknown:
            raise TypeError(f"Resource has no field(s) {sorted(unknown)}")
        new = object.__new__(Resource)
        new.__dict__.update(self.__dict__, **changes)  # frozen: fill the instance dict as is
        return new

    def same_content(self, other: Resource) -> bool:
        """True when a write of ``other`` over ``self`` would change nothing a user can see."""
        return (
            self.key == other.key
            and self.data == other.data
            and dict(self.labels) == dict(other.labels)
            and dict(self.spec) == dict(other.spec)
        )

    def __repr__(self) -> str:  # never show data, even in a traceback
        return (
            f"Resource(kind={self.kind!s}, mesh={self.mesh!r}, name={self.name!r}, "
            f"data=<{len(self.data)} bytes>, version={self.version})"
        )

    __str__ = __repr__


_RESOURCE_FIELDS = frozenset(f.name for f in fields(Resource))


@dataclass(frozen=True)
class Limits:
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES


# --------------------------------------------------------------------------- validation


def validate_name(value: object, field_name: str = "name") -> list[FieldViolation]:
    if not isinstance(value, str) or value == "":
        return [FieldViolation(field_name, "must be a non-empty string")]
    if len(value) > 253:
        return [FieldViolation(field_name, f"must be at most 253 characters (got {len(value)})")]
    if not _SUBDOMAIN_RE.match(value):
        return [
            FieldViolation(
                field_name,
                "must be an RFC 1123 subdomain: lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit",
            )
        ]
    return []


def _validate_label_key(key: str, field_name: str) -> list[FieldViolation]:
    prefix, _, name = key.rpartition("/")
    errs: list[FieldViolation] = []
    if "/" in key and not prefix:
        errs.append(FieldViolation(field_name, f"label key {key!r}: prefix must not be empty"))
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN_RE.match(prefix)):
        errs.append(
            FieldViolation(
                field_name,
                f"label key {key!r}: prefix must be a DNS subdomain of at most 253 characters",
            )
        )
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        errs.append(
            FieldViolation(
                field_name,
                f"label key {key!r}: name must be 1-63 characters of letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit",
            )
        )
    return errs


def validate_labels(labels: object, field_name: str = "labels") -> list[FieldViolation]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [FieldViolation(field_name, "must be a map of string keys to string values")]
    errs: list[FieldViolation] = []
    for k, v in labels.items():
        f = f"{field_name}[{k}]"
        if not isinstance(k, str):
            errs.append(FieldViolation(field_name, f"label key {k!r} must be a string"))
            continue
        if k in SYSTEM_LABELS:
            errs.append(FieldViolation(f, f"label {k!r} is set by the system and cannot be given"))
            continue
        errs.extend(_validate_label_key(k, f))
        if not isinstance(v, str):
            errs.append(FieldViolation(f, "label value must be a string"))
        elif len(v) > 63 or (v and not _LABEL_NAME_RE.match(v)):
            errs.append(
                FieldViolation(
                    f,
                    "label value must be empty or 1-63 characters of letters, digits, '-', '_' "
                    "or '.', starting and ending with a letter or digit",
                )
            )
    return errs


def decode_data(value: object, limits: Limits, field_name: str = "data") -> bytes:
    """Decode base64 ``data``; raise InvalidResource naming the field on any problem."""
    if not isinstance(value, str) or value.strip() == "":
        raise InvalidResource([FieldViolation(field_name, "must be a non-empty base64 string")])
    compact = "".join(value.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidResource([FieldViolation(field_name, "must be valid base64")]) from None
    if not raw:
        raise InvalidResource([FieldViolation(field_name, "must not decode to empty bytes")])
    if len(raw) > limits.max_data_bytes:
        raise InvalidResource(
            [
                FieldViolation(
                    field_name,
                    f"decoded size {len(raw)} bytes exceeds the limit of "
                    f"{limits.max_data_bytes} bytes",
                )
            ]
        )
    return raw


def validate(resource: Resource, limits: Limits) -> None:
    """Check a resource built from user input; raise InvalidResource listing every problem."""
    errs = validate_name(resource.name)
    if resource.kind is Kind.SECRET:
        errs += validate_name(resource.mesh, "mesh")
    errs += validate_labels(resource.labels)
    if resource.kind is not Kind.MESH:
        if not resource.data:
            errs.append(FieldViolation("data", "must not be empty"))
        elif len(resource.data) > limits.max_data_bytes:
            errs.append(
                FieldViolation(
                    "data",
                    f"decoded size {len(resource.data)} bytes exceeds the limit of "
                    f"{limits.max_data_bytes} bytes",
                )
            )
    if errs:
        raise InvalidResource(errs)


# --------------------------------------------------------------------------- text forms

# Kind-specific Mesh fields, kept in Resource.spec (see kds.mtls for mtls).
_MESH_SPEC_FIELDS = frozenset({"mtls"})

_UNIVERSAL_FIELDS = {
    Kind.SECRET: {"type", "name", "mesh", "data", "labels", "creationTime", "modificationTime"},
    Kind.GLOBAL_SECRET: {"type", "name", "data", "labels", "creationTime", "modificationTime"},
    Kind.MESH: {"type", "name", "labels", "creationTime", "modificationTime", *_MESH_SPEC_FIELDS},
}
_K8S_FIELDS = {
    "Secret": {"apiVersion", "kind", "metadata", "data", "type"},
    "Mesh": {"apiVersion", "kind", "metadata", "spec"},
}


def _mesh_spec(
    fields: Mapping[str, Any], mesh_name: object, prefix: str = ""
) -> tuple[dict[str, Any], list[FieldViolation]]:
    spec = {k: fields[k] for k in sorted(_MESH_SPEC_FIELDS) if k in fields}
    errs = []
    for k, v in spec.items():
        try:
            ok = isinstance(v, Mapping) and json.loads(json.dumps(v)) == v
        except (TypeError, ValueError):
            ok = False
        if not ok:
            errs.append(FieldViolation(f"{prefix}{k}", "must be a map of JSON values"))
    if "mtls" in spec and not errs:
        errs += validate_mtls(spec["mtls"], mesh_name, prefix)
    return spec, errs


def _kind_of(value: object, field_name: str = "type") -> Kind:
    try:
        return Kind(str(value))
    except ValueError:
        raise InvalidResource(
            [
                FieldViolation(
                    field_name,
                    f"unknown type {value!r}: expected one of Mesh, Secret, GlobalSecret",
                )
            ]
        ) from None


def _universal(doc: Mapping[str, Any], limits: Limits) -> Resource:
    kind = _kind_of(doc.get("type"))
    unknown = sorted(set(doc) - _UNIVERSAL_FIELDS[kind])
    errs = [FieldViolation(f, f"unknown field for a {kind}") for f in unknown]
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
        spec, spec_errs = _mesh_spec(doc, doc.get("name"))
        errs += spec_errs
    labels = doc.get("labels") or {}
    label_errs = validate_labels(labels)
    if isinstance(labels, Mapping) and LABEL_MESH in labels:
        # The Kubernetes form's way of naming the mesh: in this form it must agree with
        # ``mesh``, and it is implied by it, so it is not stored twice.
        if kind is not Kind.SECRET:
            label_errs.append(
                FieldViolation(f"labels[{LABEL_MESH}]", f"only a Secret has a mesh, not a {kind}")
            )
        elif labels[LABEL_MESH] != doc.get("mesh"):
            label_errs.append(
                FieldViolation(f"labels[{LABEL_MESH}]", f"must equal mesh ({doc.get('mesh')!r})")
            )
        labels = {k: v for k, v in labels.items() if k != LABEL_MESH}
    if errs or label_errs:
        raise InvalidResource(errs + label_errs + validate_name(doc.get("name")))
    res = Resource(
        kind=kind,
        name=doc.get("name"),  # type: ignore[arg-type]  # validated below
        mesh=doc.get("mesh", "") if kind is Kind.SECRET else "",
        data=data,
        labels=dict(labels),
        spec=spec,
    )
    validate(res, limits)
    return res


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


def _kubernetes(doc: Mapping[str, Any], limits: Limits) -> Resource:
    api_version, kind_name = doc.get("apiVersion"), doc.get("kind")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise InvalidResource([FieldViolation("metadata", "is required and must be a map")])
    if not isinstance(meta.get("labels") or {}, Mapping):
        raise InvalidResource([FieldViolation("metadata.labels", "must be a map")])
    labels = dict(meta.get("labels") or {})
    unknown = sorted(set(doc) - _K8S_FIELDS.get(str(kind_name), set(doc)))
    if unknown:
        raise InvalidResource(
            [FieldViolation(f, f"unknown field for a {kind_name}") for f in unknown]
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
        spec = doc.get("spec") or {}
        if not isinstance(spec, Mapping):
            raise InvalidResource([FieldViolation("spec", "must be a map")])
        mesh_spec, errs = _mesh_spec(spec, meta.get("name"), "spec.")
        errs += [
            FieldViolation(f"spec.{k}", "unknown field for a Mesh")
            for k in sorted(set(spec) - _MESH_SPEC_FIELDS)
        ]
        if errs:
            raise InvalidResource(errs)
        res = Resource(kind=Kind.MESH, name=meta.get("name"), labels=labels, spec=mesh_spec)  # type: ignore[arg-type]
        _validate_k8s(res, limits)
        return res
    if kind_name != "Secret":
        raise InvalidResource(
            [FieldViolation("kind", f"unsupported kind {kind_name!r}: expected Secret or Mesh")]
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
        mesh = labels.pop(LABEL_MESH, None)
        if mesh is None:
            raise InvalidResource(
                [FieldViolation(f"metadata.labels[{LABEL_MESH}]", "is required for a mesh Secret")]
            )
        res = Resource(Kind.SECRET, name=meta.get("name"), mesh=mesh, data=data, labels=labels)  # type: ignore[arg-type]
    elif k8s_type == K8S_GLOBAL_SECRET_TYPE:
        res = Resource(Kind.GLOBAL_SECRET, name=meta.get("name"), data=data, labels=labels)  # type: ignore[arg-type]
    else:
        raise InvalidResource(
            [
                FieldViolation(
                    "type",
                    f"unsupported Secret type {k8s_type!r}: expected {K8S_SECRET_TYPE} or "
                    f"{K8S_GLOBAL_SECRET_TYPE}",
                )
            ]
        )
    _validate_k8s(res, limits)
    return res


def from_document(doc: object, limits: Limits | None = None) -> Resource:
    """Build a resource from one parsed YAML/JSON document in either text form."""
    limits = limits or Limits()
    if not isinstance(doc, Mapping):
        raise InvalidResource([FieldViolation("", "a resource must be a YAML/JSON map")])
    if "apiVersion" in doc or "kind" in doc:
        return _kubernetes(doc, limits)
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
        errs.append(FieldViolation("type", f"must be {kind} on this path (got {doc['type']!r})"))
    doc.setdefault("name", name)
    if doc["name"] != name:
        errs.append(FieldViolation("name", f"must match the name in the path ({name!r})"))
    if kind is Kind.SECRET:
        doc.setdefault("mesh", mesh)
        if doc["mesh"] != mesh:
            errs.append(FieldViolation("mesh", f"must match the mesh in the path ({mesh!r})"))
    if errs:
        raise InvalidResource(errs + validate_name(name))
    return _universal(doc, limits or Limits())


def to_json(resource: Resource, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The API / Universal form. Data is base64; pass the result only where data may show."""
    out: dict[str, Any] = dict(resource.spec)  # kind-specific fields never shadow the common ones
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


def to_kubernetes(resource: Resource) -> dict[str, Any]:
    if resource.kind is Kind.MESH:
        return {
            "apiVersion": K8S_MESH_API_VERSION,
            "kind": "Mesh",
            "metadata": {"name": resource.name, "labels": dict(resource.labels)},
            "spec": dict(resource.spec),
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
