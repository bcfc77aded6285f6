"""Kuma's rules for what a Mesh's logging, tracing, metrics, constraints, routing and
meshServices say, and for its mTLS backends' dpCert. Pure.

These are the checks of Kuma's Mesh validator (pkg/core/resources/apis/mesh/
mesh_validator.go, in every release with ``Mesh.mtls``), with its messages. They run on a
Mesh from user input once its fields have the right shape (kds.validation checks the
shape: unknown fields, JSON types). A field is named as the input spells it: a backend's
settings are ``conf`` (Kuma's messages say ``config``), and a backend's ``dpCert`` is named
with the backend's index (Kuma's says ``mtls.dpcert.rotation.expiration``).

Not checked: a Prometheus backend's ``envoy.filterRegex``, which Kuma compiles as a Go
(RE2) regular expression; Python's regular expressions accept and refuse other patterns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kds.errors import FieldViolation, shown
from kds.fields import member_problems

__all__ = ["mesh_rule_problems", "parse_kuma_duration"]

_KUMA_DURATION_RE = re.compile(r"[0-9]+(y|w|d|h|m|s|ms)", re.ASCII)
_TAG_NAME_RE = re.compile(r"[a-zA-Z0-9.\-_:/]*", re.ASCII)
_SELECTOR_VALUE_RE = re.compile(r"[a-zA-Z0-9.\-_:/]*|\*", re.ASCII)
_ZIPKIN_API_VERSIONS = ("httpJsonV1", "httpJson", "httpProto")
# Prometheus TLS modes (PrometheusTlsConfig.Mode), by name and by number.
_TLS_ACTIVE, _TLS_DISABLED = ("activeMTLSBackend", 0), ("disabled", 2)
_USED = "name is already used for another backend"
# Mesh.MeshServices.Mode's names (mesh.proto).
_MESH_SERVICES_MODES = ("Disabled", "Everywhere", "ReachableBackends", "Exclusive")

Check = Callable[[Mapping[str, Any], str], list[FieldViolation]]


def parse_kuma_duration(value: object) -> bool:
    """Whether ``value`` is a duration as Kuma's Mesh reads one (ParseDuration): digits
    and one of y, w, d, h, m, s, ms; or ``0``."""
    return isinstance(value, str) and (
        value == "0" or _KUMA_DURATION_RE.fullmatch(value) is not None
    )


def mesh_rule_problems(spec: Mapping[str, Any], prefix: str = "") -> list[FieldViolation]:
    """What in ``spec`` (a Mesh's fields, of the right shape) Kuma's Mesh validator refuses;
    fields named ``{prefix}...``."""
    errs: list[FieldViolation] = []
    mtls = spec.get("mtls")
    if isinstance(mtls, Mapping):
        errs += _dp_cert_problems(mtls, f"{prefix}mtls")
    if isinstance(spec.get("logging"), Mapping):
        errs += _backends(
            spec["logging"], f"{prefix}logging", _logging_backend, "defaultBackend", "logging"
        )
    if isinstance(spec.get("tracing"), Mapping):
        errs += _backends(
            spec["tracing"], f"{prefix}tracing", _tracing_backend, "defaultBackend", "tracing"
        )
    if isinstance(spec.get("metrics"), Mapping):
        errs += _backends(spec["metrics"], f"{prefix}metrics", _metrics_backend, "enabledBackend")
    proxy = (spec.get("constraints") or {}).get("dataplaneProxy")
    if isinstance(proxy, Mapping):
        for part in ("requirements", "restrictions"):
            errs += _selectors(proxy.get(part) or [], f"{prefix}constraints.dataplaneProxy.{part}")
    services = spec.get("meshServices")
    mode = services.get("mode") if isinstance(services, Mapping) else None
    if isinstance(mode, str) and mode not in _MESH_SERVICES_MODES:
        # Kuma reads the enum by name (any number is taken, as protobuf's JSON takes one)
        errs.append(
            FieldViolation(
                f"{prefix}meshServices.mode",
                f"must be one of {', '.join(_MESH_SERVICES_MODES)} (got {shown(mode)})",
            )
        )
    routing = spec.get("routing")
    egress = isinstance(routing, Mapping) and routing.get("zoneEgress") is True
    if egress and not (isinstance(mtls, Mapping) and mtls.get("enabledBackend")):
        errs.append(FieldViolation(f"{prefix}mtls", "has to be set when zoneEgress enabled"))
    return errs


def _selectors(items: Sequence[Mapping[str, Any]], f: str) -> list[FieldViolation]:
    return member_problems(
        items, lambda i, item: _selector(item.get("tags"), f"{f}[{i}].tags"), f, "items"
    )[0]


def _dp_cert_problems(mtls: Mapping[str, Any], f: str) -> list[FieldViolation]:
    """A backend's dpCert, when given, holds a rotation expiration Kuma can read."""

    def check(i: int, b: object) -> list[FieldViolation]:
        dp_cert = b.get("dpCert") if isinstance(b, Mapping) else None
        if not isinstance(dp_cert, Mapping):
            return []  # absent, or a shape problem kds.mtls names
        rotation = dp_cert.get("rotation")
        expiration = rotation.get("expiration") if isinstance(rotation, Mapping) else None
        if parse_kuma_duration(expiration):
            return []
        return [
            FieldViolation(
                f"{f}.backends[{i}].dpCert.rotation.expiration",
                "has to be a valid format: a whole number and y, w, d, h, m, s or ms, such "
                f"as 24h (got {shown(expiration)})",
            )
        ]

    backends = mtls.get("backends")
    return member_problems(backends if isinstance(backends, list) else [], check, f, "backends")[0]


def _backends(
    section: Mapping[str, Any], f: str, check: Check, default_key: str, what: str = ""
) -> list[FieldViolation]:
    """A list of named backends: each one's own rules, names unique, and the default (or
    enabled) backend one of them."""
    backends: Sequence[Any] = section.get("backends") or []
    names: set[str] = set()

    def one(i: int, b: Mapping[str, Any]) -> list[FieldViolation]:
        at = f"{f}.backends[{i}]"
        found = check(b, at)
        name = b.get("name") or ""
        if name in names:
            found.append(FieldViolation(f"{at}.name", f"{json.dumps(_cut(name))} {_USED}"))
        names.add(name)
        return found

    errs, cut = member_problems(backends, one, f"{f}.backends", "backends")
    default = section.get(default_key)
    if not cut and default and default not in names:
        in_mesh = f"the {what} backend in mesh" if what else "the backends in the mesh"
        errs.append(FieldViolation(f"{f}.{default_key}", f"has to be set to one of {in_mesh}"))
    return errs


def _cut(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _named(b: Mapping[str, Any], at: str) -> list[FieldViolation]:
    return [] if b.get("name") else [FieldViolation(f"{at}.name", "cannot be empty")]


def _unknown_type(at: str, *types: str) -> FieldViolation:
    listed = ", ".join(json.dumps(t) for t in types)
    return FieldViolation(f"{at}.type", f"unknown backend type. Available backends: {listed}")


def _conf(b: Mapping[str, Any], at: str) -> tuple[Mapping[str, Any], list[FieldViolation]]:
    """A backend's ``conf`` (empty when not given), or why it cannot be read."""
    conf = b.get("conf")
    if conf is None:
        return {}, []
    if not isinstance(conf, Mapping):
        return {}, [FieldViolation(f"{at}.conf", "could not parse config: must be a map")]
    return conf, []


def _text(conf: Mapping[str, Any], key: str, at: str) -> tuple[str, list[FieldViolation]]:
    """A string setting of ``conf`` ("" when not given), or why it cannot be read."""
    value = conf.get(key)
    if value is None or isinstance(value, str):
        return value or "", []
    return "", [FieldViolation(f"{at}.conf.{key}", "could not parse config: must be a string")]


def _logging_backend(b: Mapping[str, Any], at: str) -> list[FieldViolation]:
    errs = _named(b, at)
    kind = b.get("type")
    if kind not in ("tcp", "file"):
        return [*errs, _unknown_type(at, "tcp", "file")]
    conf, bad = _conf(b, at)
    key = "address" if kind == "tcp" else "path"
    value, bad_value = _text(conf, key, at)
    errs += bad + bad_value
    if bad or bad_value:
        return errs
    if not value:
        errs.append(FieldViolation(f"{at}.conf.{key}", "cannot be empty"))
    elif kind == "tcp" and not _host_port(value):
        errs.append(FieldViolation(f"{at}.conf.address", "has to be in format of HOST:PORT"))
    return errs


def _host_port(address: str) -> bool:
    """Whether Go's net.SplitHostPort splits ``address`` into a host and a port, both
    non-empty (the port is not read as a number there)."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            return False
        host, port = address[1:end], address[end + 2 :]
        return bool(host) and bool(port) and "[" not in host and "]" not in port
    host, sep, port = address.rpartition(":")
    return bool(sep) and bool(host) and bool(port) and ":" not in host and "[" not in host + port


def _tracing_backend(b: Mapping[str, Any], at: str) -> list[FieldViolation]:
    errs = _named(b, at)
    sampling = b.get("sampling", 0)
    if not 0.0 <= sampling <= 100.0:
        errs.append(FieldViolation(f"{at}.sampling", "has to be in [0.0 - 100.0] range"))
    kind = b.get("type")
    if kind not in ("zipkin", "datadog"):
        return [*errs, _unknown_type(at, "zipkin", "datadog")]
    conf, bad = _conf(b, at)
    if bad:
        return errs + bad
    if kind == "datadog":
        address, bad = _text(conf, "address", at)
        if not bad and not address:
            bad = [FieldViolation(f"{at}.conf.address", "cannot be empty")]
        port = conf.get("port", 0)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            bad.append(FieldViolation(f"{at}.conf.port", "port must be in the range [1, 65535]"))
        return errs + bad
    version, bad = _text(conf, "apiVersion", at)
    if version and version not in _ZIPKIN_API_VERSIONS:
        allowed = ", ".join(_ZIPKIN_API_VERSIONS)
        bad.append(
            FieldViolation(f"{at}.conf.apiVersion", f"has invalid value. Allowed values: {allowed}")
        )
    url, bad_url = _text(conf, "url", at)
    if not bad_url:
        problem = _zipkin_url_problem(url)
        bad_url = [FieldViolation(f"{at}.conf.url", problem)] if problem else []
    return errs + bad + bad_url


def _zipkin_url_problem(url: str) -> str | None:
    """Kuma's check of a Zipkin URL: given, a URL (Go's url.ParseRequestURI: an absolute
    URL or an absolute path, no spaces or control characters), and with an explicit port."""
    from urllib.parse import urlsplit

    if not url:
        return "cannot be empty"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "invalid URL"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "invalid URL"
    if not (parts.scheme and (parts.netloc or parts.path.startswith("/"))) and not (
        url.startswith("/")
    ):
        return "invalid URL"
    return None if port is not None else "port has to be explicitly specified"


def _metrics_backend(b: Mapping[str, Any], at: str) -> list[FieldViolation]:
    if b.get("type") != "prometheus":
        return [_unknown_type(at, "prometheus")]
    conf, bad = _conf(b, at)
    if bad:
        return bad
    skip, tls = conf.get("skipMTLS"), conf.get("tls")
    if skip is not None and tls is not None:
        mode = tls.get("mode", 0) if isinstance(tls, Mapping) else None
        same = (skip is False and mode in _TLS_ACTIVE) or (skip is True and mode in _TLS_DISABLED)
        if not same:
            return [
                FieldViolation(
                    f"{at}.conf", "skipMTLS and tls configuration cannot be defined together"
                )
            ]
    aggregate = conf.get("aggregate")
    seen: set[object] = set()

    def check(i: int, item: object) -> list[FieldViolation]:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str | None):
            return []  # not Kuma's shape: nothing to compare
        name = name or ""
        if name in seen:
            return [
                FieldViolation(
                    f"{at}.conf.aggregate[{i}].name",
                    f"duplicate entry: {_cut(name)}, values have to be unique",
                )
            ]
        seen.add(name)
        return []

    items = aggregate if isinstance(aggregate, list) else []
    return member_problems(items, check, f"{at}.conf.aggregate", "aggregate")[0]


def _selector(tags: object, f: str) -> list[FieldViolation]:
    """Kuma's ValidateSelector, at least one tag required: names and values from a limited
    set of characters, a value may be ``*``."""
    if tags is None or tags == {}:
        return [FieldViolation(f, "must have at least one tag")]
    if not isinstance(tags, Mapping):
        return [FieldViolation(f, "must be a map of tag names to values")]

    def check(_: int, key: object) -> list[FieldViolation]:
        value = tags[key]
        at = f"{f}[{json.dumps(key)}]" if isinstance(key, str) else f
        if not isinstance(key, str) or not isinstance(value, str):
            return [FieldViolation(at, "tag names and values must be strings")]
        found = []
        if key == "":
            found.append(FieldViolation(f, "tag name must be non-empty"))
        if not _TAG_NAME_RE.fullmatch(key):
            found.append(
                FieldViolation(
                    at,
                    "tag name must consist of alphanumeric characters, dots, dashes, slashes "
                    "and underscores",
                )
            )
        if value == "":
            found.append(FieldViolation(at, "tag value must be non-empty"))
        elif not _SELECTOR_VALUE_RE.fullmatch(value):
            found.append(
                FieldViolation(
                    at,
                    "tag value must consist of alphanumeric characters, dots, dashes, slashes "
                    'and underscores or be "*"',
                )
            )
        return found

    return member_problems(sorted(tags, key=str), check, f, "tags")[0]
