"""The one exception tree of kds-sync. Errors say whose fault they are.

    KdsError
    ├── InvalidResource      the user's input broke a rule (API 400); lists FieldViolations
    │   └── InvalidReferences  ... a rule across resources (a Mesh's mTLS secrets), per item
    │       └── NameTaken      ... a Kubernetes-form Secret's name another secret holds
    ├── NotFound             the resource does not exist (API 404)
    ├── Conflict             the write clashes with current state (API 409)
    │   └── ReadOnlySynced   a zone was asked to change a copy synced from global (API 409)
    ├── ProtocolError        the peer broke the sync protocol (stream closed, not retried as-is)
    ├── StoreError           the store failed (our side; API 500)
    │   ├── StoreDamaged     a stored row no longer matches its digest or does not decrypt:
    │   │                    the disk's or the file's fault (API 500 naming the key)
    │   ├── StoreFull        the disk under the store is full: the host operator's to fix
    │   │                    (API 507)
    │   └── StoreUnavailable the store's database server is unreachable (PostgreSQL): retry
    │                        once it is back (API 503)
    ├── ConfigError          a bad option, environment variable or config file entry
    │
    │   Defined beside the only code that raises them, on the edges:
    ├── TokenRefused         (globalcp.tokens) a zone's token was refused: the zone's or its
    │                        operator's to fix; carries the gRPC status the stream ends with
    ├── _EndStream           (globalcp.stream) global ends one zone's stream on purpose; private
    ├── StreamEnded          (zonecp.dial) the zone's sync stream closed: dial again
    ├── HttpError            (kds.api) an answer the API sends as it is (status, title,
    │                        causes); raised in handlers, never leaves the API
    ├── ApiError             (kdsctl.client) the API answered with an error: the request's
    │                        fault (4xx) or the control plane's (5xx)
    └── ApiUnreachable       (kdsctl.client) no HTTP answer: the setup's or the network's

Other libraries' exceptions (sqlite3, grpc, httpx) are handled at the edge that meets them:
the API answers 500 and logs the type, the zone's dial loop logs and retries, kdsctl says
what failed and exits 1.

FieldViolation is not an exception: it is a record (a field and the rule it broke) that an
InvalidResource carries, one per problem, so an API answer can list each in ``causes``.

Messages never include secret data: they name types, meshes, names and fields only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "Conflict",
    "FieldViolation",
    "InvalidReferences",
    "InvalidResource",
    "KdsError",
    "NameTaken",
    "NotFound",
    "ProtocolError",
    "ReadOnlySynced",
    "StoreDamaged",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "shown",
]


def shown(value: object, limit: int = 64) -> str:
    """A user-given value as an error message may show it: a short string quoted, a longer
    one cut, anything else by its type alone (a nested list could take gigabytes to print,
    and a value could be secret data, so it is never printed whole)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
    if isinstance(value, int) and value.bit_length() > 3 * limit:
        return "a very large integer"  # repr of over 4300 digits raises ValueError
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class FieldViolation:
    """One broken rule: the field (as the input names it; empty for the whole input) and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class KdsError(Exception):
    """Base of every error kds-sync raises on purpose."""

    # Set by a store's put_many: the position, in the resources given, of the one that
    # failed (the whole write was refused). None when the error is not about one item.
    item_index: int | None = None


class InvalidResource(KdsError):
    def __init__(self, errors: list[FieldViolation]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors) or "invalid resource")


class InvalidReferences(InvalidResource):
    """Checked inside the write's transaction; ``by_index`` maps a written resource's
    position in the write to its errors."""

    def __init__(self, by_index: dict[int, list[FieldViolation]]):
        self.by_index = dict(sorted(by_index.items()))
        super().__init__([e for errs in self.by_index.values() for e in errs])


class NameTaken(InvalidReferences):
    """A Secret or GlobalSecret written in the Kubernetes form is named as another one
    (kds.kubernetes_names), found inside the write's transaction; fields as the Universal
    form names them."""


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


class StoreDamaged(StoreError):
    """A row's stored bytes no longer match its digest (or no longer decrypt): the disk or
    someone with access to the file altered it. ``key`` names the row (never its value)."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


class StoreFull(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The database server holding the store cannot be reached or failed mid-call. A write
    refused before it reached the server was not made; one cut off at its commit may have
    been: retry (a put of the same content changes nothing) once the server is back.
    ``away``: the server could not be reached at all (refused, unresolvable, silent,
    shutting down), as against one that answered with an error (a refused password)."""

    away = True
