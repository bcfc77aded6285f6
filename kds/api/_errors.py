"""How the API answers what goes wrong, and who may ask: the error and auth middlewares.

Every error is Kuma's error body: ``{"type": "/std-errors", "status", "title", "detail",
"instance", "invalid_parameters": [{field, reason}], "details", "causes": [{field,
message}]}``; ``details`` and ``causes`` repeat ``detail`` and ``invalid_parameters`` under
the names older Kuma clients read, and ``instance`` is an id for this answer that a 500 also
logs, so a user's report can be matched with the log line. Handlers raise
HttpError, or a KdsError the error middleware maps to its status (InvalidResource 400,
NotFound 404, Conflict 409, StoreDamaged 500 naming the damaged key, StoreFull 507,
StoreUnavailable 503);
anything else is a 500 logged by type and stack, never by its message or local variables
(which could hold a request body).
"""

from __future__ import annotations

import sqlite3
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog
from aiohttp import web

from kds.api._context import API_CONTEXT, OPEN_PATHS, READ_ONLY_KEY, ApiContext, client_max_size
from kds.api.auth import ApiTokens, Role
from kds.errors import (
    Conflict,
    FieldViolation,
    InvalidResource,
    KdsError,
    NotFound,
    StoreDamaged,
    StoreFull,
    StoreUnavailable,
)
from kds.text import safe_text

__all__ = ["HttpError", "auth_middleware", "error_middleware", "too_large"]

log = structlog.get_logger("kds.api")


class HttpError(KdsError):
    """An answer other than 2xx, with the fields that caused it: raised in handlers and
    turned into the response by the error middleware; it never leaves the API."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        causes: Sequence[FieldViolation] = (),
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.causes = list(causes)
        self.headers = dict(headers or {})


# The most characters of an error's detail, and of a cause's field and reason, an answer
# holds. They may quote what the request sent (a path, a name, a query parameter): each is
# cut and its control characters escaped, so no client that prints them (kumactl, curl) puts
# a terminal escape on a screen, and an answer never grows with the request.
DETAIL_CHARS = 2048
FIELD_CHARS = 512


def _error_response(e: HttpError, instance: str = "") -> web.Response:
    detail = safe_text(e.detail, DETAIL_CHARS)
    causes = [
        (safe_text(c.field, FIELD_CHARS), safe_text(c.message, DETAIL_CHARS)) for c in e.causes
    ]
    body = {
        "type": "/std-errors",
        "status": e.status,
        "title": safe_text(e.title, FIELD_CHARS),
        "detail": detail,
        "instance": instance or uuid.uuid4().hex,
        "invalid_parameters": [{"field": f, "reason": m} for f, m in causes],
        "details": detail,
        "causes": [{"field": f, "message": m} for f, m in causes],
    }
    return web.json_response(body, status=e.status, headers=e.headers)


def _log_unexpected(request: web.Request, exc: BaseException, instance: str) -> None:
    # No exc_info: a renderer that shows locals could print a request body. The message is
    # kept only for exception types whose messages are ours or the system's, never data.
    safe_message = isinstance(exc, (KdsError, OSError, sqlite3.Error))
    log.error(
        "unhandled error in API handler",
        instance=instance,
        method=request.method,
        path=request.path,
        error_type=type(exc).__name__,
        error=str(exc) if safe_message else None,
        stack="".join(traceback.format_tb(exc.__traceback__)),
    )


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except HttpError as e:
        return _error_response(e)
    except InvalidResource as e:
        return _error_response(HttpError(400, "Invalid resource", "invalid resource", e.errors))
    except Conflict as e:  # and ReadOnlySynced: a synced copy is read-only on a zone
        return _error_response(HttpError(409, "Conflict", str(e)))
    except NotFound as e:
        return _error_response(HttpError(404, "Not found", str(e)))
    except StoreDamaged as e:  # the message names the key and the store, never a value
        log.error("damaged row asked for", method=request.method, path=request.path, key=e.key)
        return _error_response(HttpError(500, "Damaged data", str(e)))
    except StoreFull as e:
        log.error("write refused: disk full", method=request.method, path=request.path)
        _write_outcome(request, e)
        return _error_response(HttpError(507, "Insufficient Storage", str(e)))
    except StoreUnavailable as e:  # the database server is away: retry once it is back
        log.error("store unavailable", method=request.method, path=request.path, error=str(e))
        return _error_response(HttpError(503, "Store unavailable", str(e)))
    except web.HTTPRequestEntityTooLarge:
        return _error_response(too_large(request.app[API_CONTEXT]))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else {}
        detail = {
            404: f"no such path: {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
        }.get(e.status, e.reason)
        return _error_response(HttpError(e.status, e.reason, detail, headers=headers))
    except Exception as e:
        instance = uuid.uuid4().hex
        _log_unexpected(request, e, instance)
        return _error_response(
            HttpError(
                500,
                "Internal server error",
                f"the control plane failed to handle the request; see its log (instance={instance})",
            ),
            instance,
        )
    if request.method in _WRITES and response.status < 300:
        _write_outcome(request, None)
    return response


_WRITES = frozenset({"PUT", "POST", "DELETE"})


def _write_outcome(request: web.Request, refused: StoreFull | None) -> None:
    """Tell the daemon (ApiContext.on_write) that a write went through or that a full disk
    refused it."""
    ctx = request.app.get(API_CONTEXT)
    if ctx is not None and ctx.on_write is not None:
        ctx.on_write(refused)


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bearer tokens: the admin token may do anything; the read-only one may use GET on
    metadata and status, and gets resources without their data. Then, a request holding a
    NUL character is refused (_refuse_nul)."""
    tokens = request.app[API_CONTEXT].tokens
    if tokens is not None and request.path not in OPEN_PATHS:
        _check_token(request, tokens)
    _refuse_nul(request)
    return await handler(request)


def _check_token(request: web.Request, tokens: ApiTokens) -> None:
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    role = tokens.role_of(token) if token else None
    if role is None:
        raise HttpError(
            401,
            "Unauthorized",
            ("the bearer token is not valid" if token else "this API needs a bearer token")
            + ": pass kdsctl --token-file or --token (KDSCTL_TOKEN_FILE, KDSCTL_TOKEN) or an "
            "'Authorization: Bearer' header; "
            "the daemon's admin token is in its data dir (admin-token)",
            headers={"WWW-Authenticate": 'Bearer realm="kds-sync"'},
        )
    if role is Role.READ_ONLY:
        if request.method not in ("GET", "HEAD"):
            raise HttpError(
                403, "Forbidden", f"the read-only token may not {request.method} {request.path}"
            )
        request[READ_ONLY_KEY] = True


def _refuse_nul(request: web.Request) -> None:
    """400 for a NUL character in the path or a query parameter: no name, label or parameter
    holds one, and PostgreSQL refuses one in any text it is sent, so a read naming one, even
    with the read-only token, failed with a 500 and an error logged with its stack."""
    where = ["path"] if "\0" in request.path else []
    where += [k for k, v in request.query.items() if "\0" in k or "\0" in v][:10]
    if where:
        reason = "must not contain a NUL character (no name or value holds one)"
        causes = [FieldViolation(w, reason) for w in dict.fromkeys(where)]
        raise HttpError(400, "Bad request", "the request holds a NUL character", causes)


def too_large(ctx: ApiContext, limit: int | None = None) -> HttpError:
    """413 for a body over ``limit`` (by default, the largest a single resource may send).
    Over POST /_apply's own limit, the body as a whole is the problem, not one secret's data:
    the answer says so rather than naming ``data``."""
    if limit is not None and limit == ctx.max_apply_bytes:
        return HttpError(
            413,
            "Request body too large",
            f"the apply's body exceeds {limit} bytes, the most one apply takes: apply the "
            "resources in several parts",
        )
    return HttpError(
        413,
        "Request body too large",
        f"the request body exceeds {limit or client_max_size(ctx.limits)} bytes; secret data "
        f"may be at most {ctx.limits.max_data_bytes} bytes once decoded",
        [FieldViolation("data", f"must decode to at most {ctx.limits.max_data_bytes} bytes")],
    )
