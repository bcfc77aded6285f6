"""What every API handler reads: the ApiContext, and the size limits it enforces.

A request body may be at most ``client_max_size`` (base64 of the largest data plus room for
the rest); a resource must also fit, alone, in one sync message to a zone
(``encoded_message_size`` against ``ApiContext.max_message_bytes``), or it could never be sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from kds import wire
from kds.api.auth import ApiTokens
from kds.clock import rfc3339
from kds.errors import FieldViolation, StoreFull
from kds.model import Limits, Resource
from kds.store import ResourceStore

__all__ = [
    "API_CONTEXT",
    "OPEN_PATHS",
    "RESULT_HEADER",
    "ApiContext",
    "client_max_size",
    "encoded_message_size",
]

# Header on a PUT answer telling what the write did: created, updated or unchanged.
RESULT_HEADER = "X-Kds-Result"

# Largest revision/version a Change can carry (uint64 on the wire; 2**63-1 in SQLite).
_MAX_REVISION = 2**63 - 1
_BODY_SLACK = 64 * 1024


@dataclass
class ApiContext:
    store: ResourceStore  # GlobalStore on global, ZoneStore on a zone
    role: Literal["global", "zone"]
    zone: str = ""  # the zone's name when role == "zone"
    limits: Limits = Limits()
    # A resource whose largest encoded Change plus kds.wire.BATCH_OVERHEAD exceeds this is
    # refused with 400 naming "data": it could never be sent to a zone in one message.
    max_message_bytes: int = 4 * 1024 * 1024
    now: Callable[[], str] = field(default=rfc3339)
    # Largest body POST /_apply accepts (many resources, applied in one transaction).
    max_apply_bytes: int = 64 * 1024 * 1024
    # Bearer tokens the API requires (None: no authentication, for in-process tests only).
    tokens: ApiTokens | None = None
    # Told of every write: None when it went through, the error when a full disk refused it
    # (a zone reports that to global as its problem).
    on_write: Callable[[StoreFull | None], None] | None = None


API_CONTEXT: web.AppKey[ApiContext] = web.AppKey("kds_api_ctx", ApiContext)
# Paths anyone may read: they carry no resource data and no status beyond up or down.
OPEN_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/openapi.yaml", "/openapi.json", "/gui", "/favicon.ico"}
)
# Set on a request made with the read-only token: its answers leave out secret data.
READ_ONLY_KEY: web.RequestKey[bool] = web.RequestKey("kds_read_only", bool)


def client_max_size(limits: Limits) -> int:
    """The largest request body accepted: base64 of the largest data plus room for the rest."""
    return 4 * ((limits.max_data_bytes + 2) // 3) + _BODY_SLACK


def encoded_message_size(resource: Resource, now: str) -> int:
    """An upper bound of the message that carries ``resource`` alone to a zone.

    Counts the Change as global will encode it (timestamps set, the largest possible
    revision and version), plus kds.wire.BATCH_OVERHEAD for the batch header and framing.
    """
    probe = resource.with_meta(creation_time=now, modification_time=now, version=_MAX_REVISION)
    return len(wire.change_put(_MAX_REVISION, probe)) + wire.BATCH_OVERHEAD


def _size_bound(r: Resource, now: str) -> int:
    """An upper bound of encoded_message_size without encoding: every field's bytes plus at
    most 11 bytes of tag and length each, and room for the Change and batch framing. Checking
    it first spares encoding each resource twice, which is most of the cost of applying
    thousands of secrets at once."""
    if r.spec:
        return encoded_message_size(r, now)
    n = len(r.data) + len(r.name.encode()) + len(r.mesh.encode()) + 2 * len(now.encode())
    n += sum(len(k.encode()) + len(v.encode()) + 24 for k, v in r.labels.items())
    return n + 9 * 11 + 32 + wire.BATCH_OVERHEAD


def size_violation(
    ctx: ApiContext, res: Resource, now: str, prefix: str = ""
) -> FieldViolation | None:
    """The violation to report when ``res`` would not fit in one sync message, else None."""
    if _size_bound(res, now) <= ctx.max_message_bytes:
        return None
    size = encoded_message_size(res, now)
    if size <= ctx.max_message_bytes:
        return None
    return FieldViolation(
        f"{prefix}data",
        f"the resource would encode to about {size} bytes, over the sync message limit of "
        f"{ctx.max_message_bytes} bytes",
    )
