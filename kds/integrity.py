"""Rules that tie a Mesh's mTLS backends to the Secrets they use. Pure: works on a TxView.

The store runs these inside the transaction of the write they guard (kds.store.sqlite), so
no other write can slip in between the check and the commit:

- after puts: a builtin backend without its CA secrets gets a new CA (kds.ca), stored as
  ``{mesh}.ca-builtin-cert-{backend}`` / ``-key-{backend}`` in the same transaction; then every
  Mesh written, and every Mesh whose backend secrets were written, is checked: each secret a
  backend names exists in that mesh (not a GlobalSecret, not another mesh's) and, unless
  ``skipValidation``, holds a CA certificate (basicConstraints CA, keyUsage keyCertSign) and
  its private key. The check sees the transaction's final state, so a Mesh and its secrets
  applied together work in any order.
- before a Secret delete: refused (Conflict) while a backend of its mesh uses it.
- before a Mesh delete: its builtin CA secrets go with it; other secrets still in it refuse
  the delete (the policy: never delete a user's secret as a side effect).

Messages name meshes, backends, secrets and fields; never a secret's content.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kds import wire
from kds.ca import check_ca, generate_ca
from kds.errors import Conflict, FieldViolation
from kds.model import Key, Kind, Resource
from kds.mtls import (
    BUILTIN,
    SecretRef,
    backends,
    is_builtin_secret_name,
    secret_refs,
    skip_validation,
)

__all__ = [
    "Problems",
    "TxView",
    "builtin_cas_to_generate",
    "check_delete",
    "check_unit_sizes",
    "check_written",
    "users_of",
]


class TxView(Protocol):
    """What the rules read, inside the writing transaction (zone: the effective view)."""

    def get(self, key: Key) -> Resource | None: ...
    def secret_meshes(self, name: str) -> list[str]: ...  # meshes holding a Secret so named
    def secret_names(self, mesh: str) -> list[str]: ...  # own-origin Secrets of a mesh


@dataclass
class Problems:
    """Field errors per written resource (its index in the write)."""

    by_index: dict[int, list[FieldViolation]] = field(default_factory=dict)

    def add(self, index: int, err: FieldViolation) -> None:
        self.by_index.setdefault(index, []).append(err)

    def __bool__(self) -> bool:
        return bool(self.by_index)


def users_of(view: TxView, secret: Key, every: bool = False) -> list[SecretRef]:
    """The backend references to a Secret (only its own mesh's backends can use it); with
    ``every``, all of that mesh's references."""
    mesh = view.get(Key(Kind.MESH, "", secret.mesh))
    if mesh is None:
        return []
    refs = secret_refs(mesh.name, mesh.spec)
    return refs if every else [r for r in refs if r.secret == secret.name]


def builtin_cas_to_generate(
    mesh: Resource, view: TxView, now: str
) -> list[tuple[Resource, Resource]]:
    """(cert, key) Secrets to create for builtin backends whose CA secrets do not exist."""
    out = []
    for b in backends(mesh.name, mesh.spec):
        cert_ref, key_ref = b.refs
        if b.type != BUILTIN:
            continue
        have_cert = view.get(Key(Kind.SECRET, mesh.name, cert_ref.secret)) is not None
        have_key = view.get(Key(Kind.SECRET, mesh.name, key_ref.secret)) is not None
        if have_cert or have_key:
            continue  # a half-present pair is reported by check_written, never overwritten
        ca = generate_ca(mesh.name, b.name, b.ca, _parse_time(now))
        out.append(
            (
                Resource(Kind.SECRET, cert_ref.secret, mesh.name, ca.cert_pem),
                Resource(Kind.SECRET, key_ref.secret, mesh.name, ca.key_pem),
            )
        )
    return out


def check_written(view: TxView, written: Sequence[Resource]) -> Problems:
    """Check every Mesh the write touched, attributing problems to the written resource."""
    problems = Problems()
    users = _Users(view)
    meshes_written = {r.name for r in written if r.kind is Kind.MESH}
    for i, res in enumerate(written):
        if res.kind is Kind.MESH:
            mesh = view.get(res.key)
            errors = _mesh_errors(mesh, view) if mesh is not None else []
        elif res.kind is Kind.SECRET and res.mesh not in meshes_written:
            errors = _secret_errors(res, users.of(res.key), view)
        else:
            continue
        for err in errors:
            problems.add(i, err)
    return problems


class _Users:
    """users_of for many secrets of a write, reading and parsing each mesh once."""

    def __init__(self, view: TxView):
        self._view = view
        self._refs: dict[str, list[SecretRef]] = {}

    def of(self, secret: Key) -> list[SecretRef]:
        if secret.mesh not in self._refs:
            self._refs[secret.mesh] = users_of(self._view, Key(Kind.SECRET, secret.mesh, ""), True)
        return [r for r in self._refs[secret.mesh] if r.secret == secret.name]


def _backend(field_name: str) -> str:
    """'mtls.backends[0].config.cert.secret' -> 'mtls.backends[0]'."""
    return field_name.split("]")[0] + "]"


def _secret_errors(secret: Resource, refs: list[SecretRef], view: TxView) -> list[FieldViolation]:
    """A written Secret that backends use: those backends' problems, named as its own."""
    mesh = view.get(Key(Kind.MESH, "", secret.mesh))
    if not refs or mesh is None or skip_validation(mesh.spec):
        return []
    # Each problem is named with the backend it is in (a secret two backends use may break
    # only the second).
    used_by = {_backend(r.field): r.backend for r in refs}
    return [
        FieldViolation(
            "data",
            f"mesh {mesh.name!r} mTLS backend {used_by[_backend(err.field)]!r} uses this "
            f"secret: {err.field}: {err.message}",
        )
        for err in _mesh_errors(mesh, view)
        if _backend(err.field) in used_by
    ]


def check_unit_sizes(view: TxView, written: Sequence[Resource], limit: int) -> Problems:
    """A Mesh and the Secrets its backends use reach a zone in one message (see
    kds.protocol.records), so together they must fit ``limit`` bytes."""
    problems = Problems()
    users = _Users(view)
    for i, res in enumerate(written):
        mesh_name = res.name if res.kind is Kind.MESH else res.mesh
        if res.kind is Kind.SECRET and not users.of(res.key):
            continue
        mesh = view.get(Key(Kind.MESH, "", mesh_name))
        if res.kind is Kind.GLOBAL_SECRET or mesh is None or "mtls" not in mesh.spec:
            continue
        size = _unit_bytes(mesh, view)
        if size > limit:
            problems.add(
                i,
                FieldViolation(
                    "mtls" if res.kind is Kind.MESH else "data",
                    f"mesh {mesh.name!r} and the secrets its mTLS backends use would encode to "
                    f"{size} bytes together, over the sync message limit of {limit} bytes: "
                    "they must reach zones in one message",
                ),
            )
    return problems


def _unit_bytes(mesh: Resource, view: TxView) -> int:
    names = {r.secret for r in secret_refs(mesh.name, mesh.spec)}
    found = [view.get(Key(Kind.SECRET, mesh.name, n)) for n in sorted(names)]
    unit = [mesh, *(r for r in found if r is not None)]
    return wire.BATCH_OVERHEAD + sum(
        wire.framed_size(len(wire.change_put(r.version, r))) for r in unit
    )


def _mesh_errors(mesh: Resource, view: TxView) -> list[FieldViolation]:
    errs: list[FieldViolation] = []
    skip = skip_validation(mesh.spec)
    for b in backends(mesh.name, mesh.spec):
        found: dict[str, Resource] = {}
        for ref in b.refs:
            secret = view.get(Key(Kind.SECRET, mesh.name, ref.secret))
            if secret is None:
                errs.append(FieldViolation(ref.field, _missing(view, mesh.name, ref)))
            else:
                found[ref.role] = secret
        if skip or len(found) < 2:
            continue
        problems = check_ca(found["cert"].data, found["key"].data)
        cert_ref, key_ref = b.refs
        if problems.cert:
            errs.append(
                FieldViolation(cert_ref.field, f"secret {cert_ref.secret!r} {problems.cert}")
            )
        if problems.key:
            errs.append(FieldViolation(key_ref.field, f"secret {key_ref.secret!r} {problems.key}"))
    return errs


def _missing(view: TxView, mesh: str, ref: SecretRef) -> str:
    what = f"the {ref.role} secret {ref.secret!r}"
    if ref.field.endswith("]"):  # builtin: its CA secrets are named, not given
        return f"{what} of this builtin backend does not exist in mesh {mesh!r}"
    if view.get(Key(Kind.GLOBAL_SECRET, "", ref.secret)) is not None:
        return (
            f"{ref.secret!r} is a GlobalSecret: global secrets cannot be used in mesh "
            f"policies; create a Secret {ref.secret!r} in mesh {mesh!r}"
        )
    others = [m for m in view.secret_meshes(ref.secret) if m != mesh]
    if others:
        return (
            f"secret {ref.secret!r} belongs to mesh {others[0]!r}, not {mesh!r}: secrets "
            f"cannot be shared across meshes; create it in mesh {mesh!r}"
        )
    return f"secret {ref.secret!r} does not exist in mesh {mesh!r}"


def check_delete(view: TxView, key: Key) -> list[str]:
    """Before deleting ``key``: raise Conflict if refused; return the names of Secrets of the
    same mesh to delete with it (a Mesh's builtin CA secrets)."""
    if key.kind is Kind.SECRET:
        users = users_of(view, key)
        if users:
            u = users[0]
            raise Conflict(
                f"secret {key.name!r} is used by mesh {key.mesh!r} mTLS backend {u.backend!r} "
                f"(its CA {u.role}): remove the backend from the mesh first"
            )
        return []
    if key.kind is not Kind.MESH:
        return []
    names = view.secret_names(key.name)
    builtin = [n for n in names if is_builtin_secret_name(key.name, n)]
    others = [n for n in names if n not in builtin]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise Conflict(
            f"mesh {key.name!r} still holds {len(others)} secret(s) ({shown}): delete them "
            "first (its builtin CA secrets are deleted with it; a secret an mTLS backend "
            "uses can be deleted once the backend is removed from the mesh)"
        )
    return builtin


def _parse_time(now: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.now(dt.UTC)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
