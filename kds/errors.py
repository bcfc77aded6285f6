"""The one exception tree of kds-sync. Errors say whose fault they are.

    KdsError
    ├── InvalidResource      the user's input broke a rule (API 400); lists FieldErrors
    ├── NotFound             the resource does not exist (API 404)
    ├── Conflict             the write clashes with current state (API 409)
    │   └── ReadOnlySynced   a zone was asked to change a copy synced from global (API 409)
    ├── ProtocolError        the peer broke the sync protocol (stream closed, not retried as-is)
    ├── StoreError           the store failed (our side; API 500)
    └── ConfigError          a bad option, environment variable or config file entry

Messages never include secret data: they name types, meshes, names and fields only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "Conflict",
    "FieldError",
    "InvalidResource",
    "KdsError",
    "NotFound",
    "ProtocolError",
    "ReadOnlySynced",
    "StoreError",
]


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class KdsError(Exception):
    """Base of every error kds-sync raises on purpose."""


class InvalidResource(KdsError):
    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors) or "invalid resource")


class NotFound(KdsError):
    pass


class Conflict(KdsError):
    pass


class ReadOnlySynced(Conflict):
    pass


class ProtocolError(KdsError):
    pass


class StoreError(KdsError):
    pass


class ConfigError(KdsError):
    pass
