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
from kds.mtls import validate_mtls
from kds.resource import SYSTEM_LABELS, Kind, Limits, Resource

__all__ = [
    "MESH_SPEC_FIELDS",
    "decode_data",
    "read_mesh_spec",
    "validate",
    "validate_labels",
    "validate_name",
]

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# Used with fullmatch only: "$" would also match before a final newline.
_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

# Kind-specific Mesh fields, kept in Resource.spec (see kds.mtls for mtls).
MESH_SPEC_FIELDS = frozenset({"mtls"})


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
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [FieldViolation(field_name, "must be a map of string keys to string values")]
    errs: list[FieldViolation] = []
    for k, v in labels.items():
        f = f"{field_name}[{k}]"
        if not isinstance(k, str):
            errs.append(FieldViolation(field_name, f"label key {shown(k)} must be a string"))
            continue
        if k in SYSTEM_LABELS:
            errs.append(FieldViolation(f, f"label {k!r} is set by the system and cannot be given"))
            continue
        errs.extend(_validate_label_key(k, f))
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


def read_mesh_spec(
    fields: Mapping[str, Any], mesh_name: object, prefix: str = ""
) -> tuple[dict[str, Any], list[FieldViolation]]:
    """A Mesh's kind-specific fields (``mtls``) taken from ``fields``, and their problems,
    named under ``prefix`` (``spec.`` in the Kubernetes form)."""
    spec = {k: fields[k] for k in sorted(MESH_SPEC_FIELDS) if k in fields}
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
