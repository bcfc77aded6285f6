"""The rules a resource from user input must follow; each problem names its field. Pure.

Validation collects every problem with the field it concerns (a FieldViolation), so an API
answer or a CLI message can name each bad field and the rule it broke. Rules across
resources (a Mesh's mTLS secrets exist and hold a CA) are kds.integrity's, checked inside
the write's transaction.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from kds.errors import FieldViolation, InvalidResource, shown
from kds.fields import member_problems, unknown_fields
from kds.mesh_rules import mesh_rule_problems
from kds.mtls import canonical_mtls, validate_mtls
from kds.resource import SYSTEM_LABELS, Kind, Limits, Resource

__all__ = [
    "MAX_DEPTH",
    "MESH_SPEC_FIELDS",
    "OUTPUT_ONLY_FIELDS",
    "decode_data",
    "depth_over",
    "read_mesh_spec",
    "validate",
    "validate_labels",
    "validate_mesh_name",
    "validate_name",
]

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# Used with fullmatch only: "$" would also match before a final newline.
_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

# A Mesh name is an RFC 1035 label (Kuma's rule since it enforced it: a mesh name ends up in
# DNS host names): a lower-case letter first, at most 63 characters.
_RFC1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

# Fields a resource's Universal form carries that the server sets: accepted on input (a
# resource read and written back as it is) and ignored. kumactl sends ``kri`` in every write.
OUTPUT_ONLY_FIELDS = frozenset({"creationTime", "modificationTime", "kri"})

# What each of Kuma's Mesh fields holds (api/mesh/v1alpha1/mesh.proto and metrics.proto,
# every field any Kuma version defines): a dict is an object with those fields, a one-item
# list an array of that, and a type (or tuple of types) a value; _ANY is free-form (a
# protobuf Struct such as a backend's ``conf``). The fields are kept as given and synced to
# zones; kds-sync acts on mtls only (kds.mtls checks it in full), and checks the others
# as Kuma's Mesh validator does (kds.mesh_rules).
_ANY = object
_STR, _BOOL, _NUM = (str,), (bool,), (int, float)
_ENUM = (str, int)
_MESH_SCHEMA: dict[str, Any] = {
    "tracing": {
        "defaultBackend": _STR,
        "backends": [{"name": _STR, "sampling": _NUM, "type": _STR, "conf": _ANY}],
    },
    "logging": {
        "defaultBackend": _STR,
        "backends": [{"name": _STR, "format": _STR, "type": _STR, "conf": _ANY}],
    },
    "metrics": {
        "enabledBackend": _STR,
        "backends": [{"name": _STR, "type": _STR, "conf": _ANY}],
    },
    "networking": {"outbound": {"passthrough": _BOOL}},
    "routing": {
        "localityAwareLoadBalancing": _BOOL,
        "zoneEgress": _BOOL,
        "defaultForbidMeshExternalServiceAccess": _BOOL,
    },
    "constraints": {
        "dataplaneProxy": {"requirements": [{"tags": _ANY}], "restrictions": [{"tags": _ANY}]}
    },
    "skipCreatingInitialPolicies": [_STR],
    "meshServices": {"mode": _ENUM},
}

# Kind-specific Mesh fields, kept in Resource.spec (see kds.mtls for mtls).
MESH_SPEC_FIELDS = frozenset({"mtls", *_MESH_SCHEMA})


def validate_name(value: object, field_name: str = "name") -> list[FieldViolation]:
    if not isinstance(value, str) or value == "":
        return [FieldViolation(field_name, "must be a non-empty string")]
    if len(value) > 253:
        return [FieldViolation(field_name, f"must be at most 253 characters (got {len(value)})")]
    if not _SUBDOMAIN_RE.fullmatch(value):
        return [
            FieldViolation(
                field_name,
                "must be an RFC 1123 subdomain: lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit",
            )
        ]
    return []


def validate_mesh_name(value: object, field_name: str = "name") -> list[FieldViolation]:
    """A new Mesh's name: an RFC 1035 label (Kuma's rule). The API checks it when a Mesh is
    created; a mesh created under the looser validate_name rule stays usable: it can be
    read, changed, deleted and hold secrets."""
    if not isinstance(value, str) or value == "":
        return [FieldViolation(field_name, "must be a non-empty string")]
    if len(value) > 63:
        return [
            FieldViolation(field_name, f"must be no more than 63 characters (got {len(value)})")
        ]
    if not _RFC1035_LABEL_RE.fullmatch(value):
        return [
            FieldViolation(
                field_name,
                "a mesh name must be an RFC 1035 label: lower-case letters, digits and '-', "
                "starting with a letter and ending with a letter or digit (e.g. 'my-mesh')",
            )
        ]
    return []


def _validate_label_key(key: str, field_name: str) -> list[FieldViolation]:
    prefix, _, name = key.rpartition("/")
    errs: list[FieldViolation] = []
    if "/" in key and not prefix:
        errs.append(FieldViolation(field_name, f"label key {shown(key)}: prefix must not be empty"))
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN_RE.fullmatch(prefix)):
        errs.append(
            FieldViolation(
                field_name,
                f"label key {shown(key)}: prefix must be a DNS subdomain of at most 253 characters",
            )
        )
    if not name or len(name) > 63 or not _LABEL_NAME_RE.fullmatch(name):
        errs.append(
            FieldViolation(
                field_name,
                f"label key {shown(key)}: name must be 1-63 characters of letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit",
            )
        )
    return errs


def validate_labels(labels: object, field_name: str = "labels") -> list[FieldViolation]:
    """The problems of the first MAX_LISTED labels that have any; the rest are not checked
    (a body of 50,000 bad labels made a 16.7 MB answer when each was named)."""
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [FieldViolation(field_name, "must be a map of string keys to string values")]
    return member_problems(
        list(labels.items()),
        lambda _, kv: _label_problems(kv[0], kv[1], field_name),
        field_name,
        "labels",
    )[0]


def _label_problems(k: object, v: object, field_name: str) -> list[FieldViolation]:
    """What is wrong with the label ``k``: ``v``, named ``{field_name}[{k}]``."""
    if not isinstance(k, str):
        return [FieldViolation(field_name, f"label key {shown(k)} must be a string")]
    f = f"{field_name}[{k}]"
    if k in SYSTEM_LABELS:
        return [FieldViolation(f, f"label {k!r} is set by the system and cannot be given")]
    errs = _validate_label_key(k, f)
    if not isinstance(v, str):
        errs.append(FieldViolation(f, "label value must be a string"))
    elif len(v) > 63 or (v and not _LABEL_NAME_RE.fullmatch(v)):
        errs.append(
            FieldViolation(
                f,
                "label value must be empty or 1-63 characters of letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit",
            )
        )
    return errs


# No resource nests deeper than a dozen levels (a Mesh's mTLS backends); Python's recursion
# limit, which the JSON parser and encoder hit, is about 1000.
MAX_DEPTH = 64


def depth_over(value: object, limit: int) -> bool:
    """Whether ``value`` nests lists and maps deeper than ``limit`` (without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


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
    errs = validate_name(resource.name)  # a new Mesh's name: validate_mesh_name too
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


def read_mesh_spec(
    fields: Mapping[str, Any], mesh_name: object, prefix: str = ""
) -> tuple[dict[str, Any], list[FieldViolation]]:
    """A Mesh's kind-specific fields (Kuma's: mtls, tracing, ...) taken from ``fields``, and
    their problems, named under ``prefix`` (``spec.`` in the Kubernetes form). An mtls
    backend's ``config`` comes back as ``conf``, Kuma's key."""
    spec = {k: fields[k] for k in sorted(MESH_SPEC_FIELDS) if k in fields}
    errs = []
    for k, v in spec.items():
        try:
            # No NaN or infinity and no lone surrogate: stored, every answer holding them
            # would not be JSON (NaN compares unequal to itself, so the round trip alone
            # lets the parser's shared NaN object through).
            text = json.dumps(v, allow_nan=False, ensure_ascii=False)
            text.encode("utf-8")  # a lone surrogate cannot be encoded
            ok = json.loads(text) == v
        except (TypeError, ValueError, RecursionError):
            ok = False
        if not ok:
            errs.append(
                FieldViolation(
                    f"{prefix}{k}",
                    "must hold JSON values only (no NaN or infinite numbers, no lone "
                    "surrogates in text)",
                )
            )
        elif k == "mtls":
            errs += validate_mtls(v, mesh_name, prefix)
        else:
            errs += _check_shape(v, _MESH_SCHEMA[k], f"{prefix}{k}")
    if not errs:
        errs = mesh_rule_problems(spec, prefix)
    if "mtls" in spec and not errs:
        spec["mtls"] = canonical_mtls(spec["mtls"])
    return spec, errs


def _check_shape(value: object, schema: Any, f: str) -> list[FieldViolation]:
    """``value`` against one _MESH_SCHEMA entry: unknown fields and JSON types, by path."""
    if schema is _ANY:
        return []
    if isinstance(schema, dict):
        if not isinstance(value, Mapping):
            return [FieldViolation(f, "must be a map")]
        errs = unknown_fields(f"{f}.", value, schema)
        for k, v in value.items():
            if k in schema:
                errs += _check_shape(v, schema[k], f"{f}.{k}")
        return errs
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [FieldViolation(f, "must be a list")]
        return member_problems(
            value, lambda i, item: _check_shape(item, schema[0], f"{f}[{i}]"), f, "items"
        )[0]
    if (
        value is None
        or isinstance(value, bool) is not (bool in schema)
        or not isinstance(value, schema)
    ):
        names = {str: "a string", bool: "true or false", int: "a number", float: "a number"}
        return [
            FieldViolation(f, f"must be {' or '.join(dict.fromkeys(names[t] for t in schema))}")
        ]
    return []
