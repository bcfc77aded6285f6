"""What a resource is: Mesh, Secret and GlobalSecret, their identity and their limits. Pure.

A Resource is immutable and never shows its data in a repr. Building one checks nothing:
kds.validation holds the rules for input from users, and kds.model and kds.kubernetes the
text forms that apply them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_MAX_DATA_BYTES",
    "DEFAULT_MESH",
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
    "stays_on_global",
]

DEFAULT_MAX_DATA_BYTES = 1024 * 1024
LABEL_ORIGIN = "kuma.io/origin"
LABEL_ZONE = "kuma.io/zone"
LABEL_MESH = "kuma.io/mesh"
LABEL_DISPLAY_NAME = "kuma.io/display-name"
LABEL_ENV = "kuma.io/env"
# Labels the control plane computes (Kuma's): shown in answers, never stored. An API write
# may carry them when they agree with what the control plane would compute (a resource read
# and written back as it is); kuma.io/mesh is the Kubernetes form's way to name the mesh.
SYSTEM_LABELS = frozenset({LABEL_ORIGIN, LABEL_ZONE, LABEL_DISPLAY_NAME, LABEL_ENV})
# The mesh a Kubernetes-form Secret without the kuma.io/mesh label belongs to (Kuma's).
DEFAULT_MESH = "default"

# GlobalSecrets that Kuma keeps on its global control plane and never syncs to zones (its
# KDS filter): its admin token, internal CAs, user token signing keys and revocations.
# kds-sync keeps them on global too, so the keys stay where Kuma keeps them.
_GLOBAL_ONLY_NAMES = frozenset(
    {"admin-user-token", "envoy-admin-ca", "inter-cp-ca", "user-token-revocations"}
)
# Kuma syncs only the public half of a zone token signing key (renamed
# zone-token-signing-public-key-N); kds-sync does not derive it and keeps the key on global.
_GLOBAL_ONLY_PREFIXES = ("user-token-signing-key", "zone-token-signing-key")


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
        # it writes, 10,000 times for a 10,000-secret apply.
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


def stays_on_global(key: Key) -> bool:
    """Whether ``key`` is one of Kuma's system GlobalSecrets, never sent to zones."""
    return key.kind is Kind.GLOBAL_SECRET and (
        key.name in _GLOBAL_ONLY_NAMES or key.name.startswith(_GLOBAL_ONLY_PREFIXES)
    )


@dataclass(frozen=True)
class Limits:
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
