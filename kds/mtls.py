"""A Mesh's ``mtls`` section: its shape, and the Secrets its certificate authorities use. Pure.

Shape (Kuma's, in the Universal form; under ``spec`` in the Kubernetes form)::

    mtls:
      enabledBackend: ca-1          # optional; names one of the backends
      skipValidation: false         # optional; skips the certificate checks (not the
                                    #   existence of the secrets: zones need those)
      backends:
        - name: ca-1
          type: provided            # CA certificate and key taken from mesh Secrets
          conf:                     # Kuma's key; ``config`` is accepted too and stored
            cert: {secret: my-cert} #   as ``conf``
            key: {secret: my-key}
        - name: ca-2
          type: builtin             # global generates the CA and stores it as Secrets
          conf:                     #   {mesh}.ca-builtin-cert-ca-2 / -key-ca-2
            caCert: {keyType: RSA, RSAbits: 2048, expiration: 10y}   # all optional

Checks that need other resources (the secrets exist, the certificate is a CA, ...) live in
kds.integrity; this module only checks the shape and says which secrets a backend uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kds.errors import FieldViolation, shown
from kds.fields import MAX_LISTED, UNKNOWN_FIELD, member_problems, unknown_fields

__all__ = [
    "BUILTIN",
    "PROVIDED",
    "Backend",
    "CaOptions",
    "SecretRef",
    "backend_conf",
    "backends",
    "builtin_secret_names",
    "canonical_mtls",
    "conf_alias_warnings",
    "is_builtin_secret_name",
    "parse_ca_expiration",
    "secret_refs",
    "skip_validation",
    "validate_mtls",
]

PROVIDED = "provided"
BUILTIN = "builtin"

_MTLS_FIELDS = frozenset({"enabledBackend", "backends", "skipValidation"})
# Kuma's backend fields (CertificateAuthorityBackend). dpCert, mode and rootChain are carried
# to zones as given; kds-sync does not act on them.
_BACKEND_FIELDS = frozenset({"name", "type", "conf", "dpCert", "mode", "rootChain"})
# ``config``, a spelling of ``conf`` some Secrets documentation uses: accepted on input, stored
# and returned as ``conf``.
CONF_ALIAS = "config"
_MODES = ("STRICT", "PERMISSIVE")
# Used with fullmatch only: "$" would also match before a final newline.
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# At most 12 digits: any longer number is far past the 100-year bound, and int() refuses a
# string of over 4300 digits with a ValueError that would fail the whole request.
# Kuma's units (ParseDuration: y, w, d, h, m, s, ms); leading zeros are read as Kuma reads
# them ("010h" is 10h).
_DURATION_RE = re.compile(r"0*([1-9][0-9]{0,11})(y|w|d|h|ms|m|s)", re.ASCII)
_UNIT_MS = {
    "y": 365 * 86400_000,
    "w": 7 * 86400_000,
    "d": 86400_000,
    "h": 3600_000,
    "m": 60_000,
    "s": 1000,
    "ms": 1,
}
_MAX_VALIDITY = 100 * 365 * 86400


@dataclass(frozen=True)
class CaOptions:
    """How a builtin backend's CA is generated."""

    key_type: str = "RSA"  # or "ECDSA" (P-256)
    rsa_bits: int = 2048
    validity_seconds: int = 10 * 365 * 86400


@dataclass(frozen=True)
class SecretRef:
    """One Secret a backend uses: ``role`` is "cert" or "key"; ``field`` names where it is set."""

    backend: str
    role: str
    secret: str
    field: str


@dataclass(frozen=True)
class Backend:
    index: int
    name: str
    type: str
    refs: tuple[SecretRef, SecretRef]
    ca: CaOptions


def builtin_secret_names(mesh: str, backend: str) -> tuple[str, str]:
    """(cert, key) Secret names of a builtin backend, as Kuma names them."""
    return f"{mesh}.ca-builtin-cert-{backend}", f"{mesh}.ca-builtin-key-{backend}"


def is_builtin_secret_name(mesh: str, name: str) -> bool:
    prefix = f"{mesh}.ca-builtin-"
    return name.startswith(prefix + "cert-") or name.startswith(prefix + "key-")


def parse_ca_expiration(value: object) -> int | None:
    """A builtin CA's ``caCert.expiration`` in Kuma's form ('10y', '52w', '365d', '24h',
    '30m', '90s', '500ms') -> whole seconds; None if malformed or under a second. Options'
    durations are kds.config.parse_duration (float seconds), a different grammar."""
    m = _DURATION_RE.fullmatch(value) if isinstance(value, str) else None
    seconds = int(m.group(1)) * _UNIT_MS[m.group(2)] // 1000 if m else 0
    return seconds or None


# --------------------------------------------------------------------------- reading


def backends(mesh_name: str, spec: Mapping[str, Any]) -> list[Backend]:
    """The backends of a validated spec (empty when there is no mtls)."""
    mtls = spec.get("mtls") or {}
    out = []
    for i, b in enumerate(mtls.get("backends") or []):
        name, kind = b["name"], b["type"]
        base = f"mtls.backends[{i}]"
        conf = backend_conf(b)
        if kind == PROVIDED:
            refs = (
                SecretRef(name, "cert", conf["cert"]["secret"], f"{base}.conf.cert.secret"),
                SecretRef(name, "key", conf["key"]["secret"], f"{base}.conf.key.secret"),
            )
        else:
            cert, key = builtin_secret_names(mesh_name, name)
            refs = (SecretRef(name, "cert", cert, base), SecretRef(name, "key", key, base))
        out.append(Backend(i, name, kind, refs, _ca_options(conf)))
    return out


def backend_conf(backend: Mapping[str, Any]) -> Mapping[str, Any]:
    """A backend's ``conf`` (or ``config``, as rows written before ``conf`` was canonical
    hold it); empty when it has neither."""
    conf = backend.get("conf", backend.get(CONF_ALIAS))
    return conf if isinstance(conf, Mapping) else {}


def conf_alias_warnings(fields: object, prefix: str = "") -> list[str]:
    """What to tell the author of a Mesh whose mTLS backends say ``config`` (``fields``: the
    Mesh's fields as given, either text form): it is stored and returned as ``conf``."""
    mtls = fields.get("mtls") if isinstance(fields, Mapping) else None
    raw = mtls.get("backends") if isinstance(mtls, Mapping) else None
    return [
        f"{prefix}mtls.backends[{i}].{CONF_ALIAS} is stored and returned as conf, Kuma's name "
        "for it"
        for i, b in enumerate(raw if isinstance(raw, list) else [])
        if isinstance(b, Mapping) and CONF_ALIAS in b
    ]


def canonical_mtls(mtls: Mapping[str, Any]) -> dict[str, Any]:
    """``mtls`` with each backend's ``config`` renamed ``conf``, Kuma's key (a validated
    mtls has at most one of the two)."""
    out = dict(mtls)
    raw = mtls.get("backends")
    if isinstance(raw, list):
        out["backends"] = [
            {("conf" if k == CONF_ALIAS else k): v for k, v in b.items()}
            if isinstance(b, Mapping)
            else b
            for b in raw
        ]
    return out


def secret_refs(mesh_name: str, spec: Mapping[str, Any]) -> list[SecretRef]:
    return [ref for b in backends(mesh_name, spec) for ref in b.refs]


def skip_validation(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("mtls") or {}).get("skipValidation", False))


def _ca_options(config: Mapping[str, Any]) -> CaOptions:
    ca = config.get("caCert") or {}
    validity = parse_ca_expiration(ca.get("expiration", "10y"))
    return CaOptions(
        key_type=str(ca.get("keyType", "RSA")).upper(),
        rsa_bits=int(ca.get("RSAbits", 2048)),
        validity_seconds=validity or CaOptions.validity_seconds,
    )


# --------------------------------------------------------------------------- validation


def synced_mtls_problems(mesh_name: str, spec: Mapping[str, Any]) -> list[FieldViolation]:
    """On a zone, what in a synced Mesh's ``mtls`` this version cannot read: the checks of
    validate_mtls but unknown fields, which a newer global may send and which nothing here
    reads. A zone stores a synced Mesh only when this is empty, so its code reading backends
    (which Secrets they use, a zone-local Secret's checks) reads a spec of the shape it
    expects."""
    if "mtls" not in spec:
        return []
    return [
        e
        for e in validate_mtls(spec["mtls"], mesh_name, listed=None)
        if not e.message.startswith(UNKNOWN_FIELD)
    ]


def validate_mtls(
    mtls: object, mesh_name: object, prefix: str = "", *, listed: int | None = MAX_LISTED
) -> list[FieldViolation]:
    """Check the shape of ``mtls``; fields are named ``{prefix}mtls...``. Backends past the
    first ``listed`` with problems are not checked (None: all are: a zone reading what
    global accepted checks every backend, so that backends whose only problems are fields
    a newer global added never stop it)."""
    f = f"{prefix}mtls"
    if not isinstance(mtls, Mapping):
        return [FieldViolation(f, "must be a map with backends (and optionally enabledBackend)")]
    errs = unknown_fields(f"{f}.", mtls, _MTLS_FIELDS)
    if "skipValidation" in mtls and not isinstance(mtls["skipValidation"], bool):
        errs.append(FieldViolation(f"{f}.skipValidation", "must be true or false"))
    raw = mtls.get("backends", [])
    if not isinstance(raw, list):
        return [*errs, FieldViolation(f"{f}.backends", "must be a list of backends")]
    names: dict[str, int] = {}

    def check(i: int, b: object) -> list[FieldViolation]:
        found = _validate_backend(b, f"{f}.backends[{i}]", mesh_name)
        name = b.get("name") if isinstance(b, Mapping) else None
        if isinstance(name, str):
            if name in names:
                found.append(
                    FieldViolation(f"{f}.backends[{i}].name", f"duplicates backends[{names[name]}]")
                )
            names.setdefault(name, i)
        return found

    found, cut = member_problems(raw, check, f"{f}.backends", "backends", listed)
    errs += found
    if cut:
        return errs  # enabledBackend is not checked either: it may name a backend not reached
    enabled = mtls.get("enabledBackend")
    if enabled is not None and enabled != "":
        if not isinstance(enabled, str):
            errs.append(FieldViolation(f"{f}.enabledBackend", "must be a string"))
        elif enabled not in names:
            errs.append(
                FieldViolation(
                    f"{f}.enabledBackend",
                    f"{shown(enabled)} is not one of the backends ({', '.join(names) or 'none'})",
                )
            )
    return errs


def _validate_backend(b: object, f: str, mesh_name: object) -> list[FieldViolation]:
    if not isinstance(b, Mapping):
        return [FieldViolation(f, "must be a map with name, type and conf")]
    errs = unknown_fields(f"{f}.", (k for k in b if k != CONF_ALIAS), _BACKEND_FIELDS)
    errs += _validate_backend_options(b, f)
    name = b.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > 63:
        errs.append(
            FieldViolation(
                f"{f}.name",
                "must be 1-63 lower-case letters, digits or '-', starting and ending with a "
                "letter or digit",
            )
        )
    elif isinstance(mesh_name, str) and len(builtin_secret_names(mesh_name, name)[0]) > 253:
        errs.append(FieldViolation(f"{f}.name", "too long: its CA secret names would exceed 253"))
    kind = b.get("type")
    key = CONF_ALIAS if CONF_ALIAS in b and "conf" not in b else "conf"
    if CONF_ALIAS in b and "conf" in b:
        errs.append(
            FieldViolation(f"{f}.{CONF_ALIAS}", "give conf (Kuma's key) or config, not both")
        )
    config = b.get(key, {})
    if not isinstance(config, Mapping):
        return [*errs, FieldViolation(f"{f}.{key}", "must be a map")]
    if kind == PROVIDED:
        errs += _validate_provided(config, f"{f}.{key}")
    elif kind == BUILTIN:
        errs += _validate_builtin(config, f"{f}.{key}")
    else:
        errs.append(
            FieldViolation(f"{f}.type", f"must be {PROVIDED} or {BUILTIN} (got {shown(kind)})")
        )
    return errs


def _validate_backend_options(b: Mapping[str, Any], f: str) -> list[FieldViolation]:
    """dpCert, rootChain and mode: carried as given, so only their JSON shape is checked."""
    errs = [
        FieldViolation(f"{f}.{k}", "must be a map")
        for k in ("dpCert", "rootChain")
        if k in b and not isinstance(b[k], Mapping)
    ]
    mode = b.get("mode", "STRICT")
    numeric = isinstance(mode, int) and not isinstance(mode, bool) and mode in (0, 1)
    if not numeric and mode not in _MODES:  # protobuf JSON takes the enum's name or number
        errs.append(FieldViolation(f"{f}.mode", "must be STRICT or PERMISSIVE"))
    return errs


def _validate_provided(config: Mapping[str, Any], f: str) -> list[FieldViolation]:
    errs = unknown_fields(f"{f}.", config, ("cert", "key"))
    for role in ("cert", "key"):
        source = config.get(role)
        extra = sorted(map(str, source)) if isinstance(source, Mapping) else []
        extra = [k for k in extra if k != "secret"]
        if extra:  # Kuma's inline, inlineString and file: named, with what to do instead
            errs.append(
                FieldViolation(
                    f"{f}.{role}.{extra[0]}",
                    "only secret is supported: files and inline values would not reach zones; "
                    f"store the value in a Secret of this mesh and name it in {role}.secret",
                )
            )
        if not isinstance(source, Mapping) or "secret" not in source:
            if not extra:
                errs.append(
                    FieldViolation(f"{f}.{role}.secret", "is required: the name of a mesh Secret")
                )
            continue
        secret = source["secret"]
        if not isinstance(secret, str) or not secret:
            errs.append(FieldViolation(f"{f}.{role}.secret", "must be the name of a mesh Secret"))
    return errs


def _validate_builtin(config: Mapping[str, Any], f: str) -> list[FieldViolation]:
    errs = unknown_fields(f"{f}.", config, ("caCert",))
    ca = config.get("caCert", {})
    if not isinstance(ca, Mapping):
        return [*errs, FieldViolation(f"{f}.caCert", "must be a map")]
    errs += unknown_fields(f"{f}.caCert.", ca, ("keyType", "RSAbits", "expiration"))
    key_type = ca.get("keyType", "RSA")
    if not isinstance(key_type, str) or key_type.upper() not in ("RSA", "ECDSA"):
        errs.append(FieldViolation(f"{f}.caCert.keyType", "must be RSA or ECDSA"))
    bits = ca.get("RSAbits", 2048)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in (2048, 3072, 4096):
        errs.append(FieldViolation(f"{f}.caCert.RSAbits", "must be 2048, 3072 or 4096"))
    elif "RSAbits" in ca and str(key_type).upper() == "ECDSA":
        errs.append(FieldViolation(f"{f}.caCert.RSAbits", "applies to keyType RSA only"))
    validity = parse_ca_expiration(ca.get("expiration", "10y"))
    if validity is None or not 3600 <= validity <= _MAX_VALIDITY:
        errs.append(
            FieldViolation(
                f"{f}.caCert.expiration",
                "must be a duration such as 10y, 52w, 365d or 24h, from 1h to 100y",
            )
        )
    return errs
