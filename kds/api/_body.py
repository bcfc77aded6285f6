"""What a request may send: a JSON body within a size limit, and paging parameters.

A body is read in chunks and refused (413) as soon as it passes its limit, whether it came
with a Content-Length or chunked, so a client cannot make the daemon hold more than the
limit. A body that parses but could not be handled safely is a 400 too: nesting deeper than
MAX_DEPTH, a number of more digits than Python converts, or an object that repeats a key
(JSON leaves what that means to the parser: Python's keeps the last, another program on the
request's way may have read the first). Messages name the problem and its place, never the
body's text (it may hold secret data).

A body of JSON Lines (one JSON value per line, ``json_lines``) is decoded line by line as it
arrives, within the same limits, so a handler can check each value while the client is still
sending the next ones.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError

from kds.api._context import API_CONTEXT, client_max_size
from kds.api._errors import HttpError, too_large
from kds.errors import FieldViolation
from kds.text import safe_text
from kds.validation import MAX_DEPTH, depth_over

__all__ = ["BODY_IDLE_S", "MAX_DEPTH", "MAX_PAGE_NUMBER", "int_param", "json_lines", "read_json"]

# Largest offset or page size accepted: far more rows than a store holds, and well inside
# SQLite's 64-bit integers.
MAX_PAGE_NUMBER = 10**12
_PAGE_NUMBER_RE = re.compile(r"[0-9]{1,13}", re.ASCII)
# How long a request body may pause between two reads (nginx's client_body_timeout, shorter).
BODY_IDLE_S = 30.0

log = structlog.get_logger("kds.api")


def _bad_body(message: str) -> HttpError:
    return HttpError(
        400, "Bad request", f"the request body {message}", [FieldViolation("body", message)]
    )


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive; 408 once none has come for BODY_IDLE_S, so a client
    that stops sending part-way cannot hold a request, and its connection, open. A body
    that does not decode as its Content-Encoding says, or that ends before its framing
    does, is a 400; so is a body cut off by the client closing its connection, though no
    answer reaches it then: that is logged at debug level only, as the client's doing and
    nothing the control plane can act on."""
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE_S):
                chunk = await request.content.readany()
        except TimeoutError:
            raise HttpError(
                408,
                "Request timeout",
                f"no part of the request body arrived for {BODY_IDLE_S:g} s: send it whole, "
                "without pauses",
                headers={"Connection": "close"},
            ) from None
        except (RequestPayloadError, HttpProcessingError) as e:
            raise _undecodable(request, e) from None
        except ConnectionError as e:
            log.debug(
                "request body cut off: the client closed its connection",
                method=request.method,
                path=request.path,
                error_type=type(e).__name__,
            )
            raise _bad_body(f"ended before it was complete ({type(e).__name__})") from None
        if not chunk:
            return
        yield chunk


def _undecodable(request: web.Request, e: Exception) -> HttpError:
    """400 for a body aiohttp could not read: not in the Content-Encoding the request
    names, or shorter than its Content-Length or chunked framing says. aiohttp's message is
    not shown: it may quote the body."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "")
    if encoding and encoding.lower() != "identity":
        return _bad_body(
            f"could not be decoded as its Content-Encoding ({safe_text(encoding, 64)}) "
            "says: send it encoded so, or without a Content-Encoding header"
        )
    return _bad_body(f"ended before it was complete ({type(e).__name__})")


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise too_large(request.app[API_CONTEXT], limit)
    body = bytearray()
    async for chunk in _chunks(request):
        body += chunk
        if len(body) > limit:
            raise too_large(request.app[API_CONTEXT], limit)
    return bytes(body)


async def read_json(request: web.Request, limit: int | None = None) -> object:
    """The request's JSON body, at most ``limit`` bytes (by default, one resource's)."""
    limit = limit or client_max_size(request.app[API_CONTEXT].limits)
    raw = await _read_limited(request, limit)
    if not raw.strip():
        raise HttpError(400, "Bad request", "the request body is empty: expected a JSON object")
    return _decode(raw)


def _decode(raw: bytes, line: int = 0) -> object:
    """One JSON value: the whole body, or its line ``line`` (counted from 1) of JSON Lines."""
    where = f" (line {line})" if line else ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "Bad request", f"the request body must be UTF-8 JSON{where}") from None
    try:
        body = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite,
            parse_int=_whole,
            object_pairs_hook=_object,
        )
    except _RepeatedKey:
        key, path = _repeated_key(text)
        message = f"repeats the key {key} in one object" + (f" (at {path})" if path else "")
        raise HttpError(
            400,
            "Bad request",
            f"the request body {message}{where}",
            [FieldViolation(path or "body", f"repeats the key {key}{where}")],
        ) from None
    except _NotJson as e:
        raise _bad_body(f"{e}{where}") from None
    except json.JSONDecodeError as e:
        # e.msg and the position only: e.doc is the body.
        at = f"line {line}, column {e.colno}" if line else f"line {e.lineno}, column {e.colno}"
        raise HttpError(
            400, "Bad request", f"the request body is not valid JSON: {e.msg} ({at})"
        ) from None
    except RecursionError:
        raise _bad_body(f"nests lists and objects deeper than {MAX_DEPTH} levels{where}") from None
    except ValueError:  # an integer of more digits than int() converts; its message is ours
        raise _bad_body(f"holds a number of too many digits{where}") from None
    # A value nests no deeper than the brackets its text opens (those in strings counted too),
    # so nearly every body, a resource of a few maps, is not walked: the walk was 7% of
    # global's event loop in an apply of 10,000 secrets.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and depth_over(body, MAX_DEPTH):
        raise _bad_body(f"nests lists and objects deeper than {MAX_DEPTH} levels{where}")
    # An escaped lone surrogate decodes to a string no UTF-8 encoder takes: stored, every
    # later answer holding it would not be JSON. Looked for only where the text escapes one.
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _bad_body(
                f"holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF){where}"
            ) from None
    return body


class _NotJson(ValueError):
    """What Python's JSON parser takes and JSON is not; the message names it."""


# \uD800 to \uDFFF, as JSON escapes them (a pair decodes to one character and is fine).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _RepeatedKey(ValueError):
    """An object of the body names one key twice."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of the body, refused if it repeats a key (about 0.4 us per object more
    than json's own dict: 4 ms in a body of 10,000 resources)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _RepeatedKey()
    return obj


class _Repeated:
    """Where a second parse found an object repeating ``key``."""

    def __init__(self, key: str):
        self.key = key


def _repeated_key(text: str) -> tuple[str, str]:
    """The key (quoted, escaped) and the path of the first object of ``text`` found repeating
    a key ("" at the top): the text is parsed again with each such object left as a
    _Repeated marker, then walked to it. Only on the way to an error: a body that is fine
    is parsed once."""

    def mark(pairs: list[tuple[str, Any]]) -> object:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                return _Repeated(key)
            seen.add(key)
        return dict(pairs)

    def find(value: object, path: str) -> tuple[str, str] | None:
        if isinstance(value, _Repeated):
            return f'"{safe_text(value.key, 100)}"', path
        if isinstance(value, dict):
            items: Any = ((f"{path}.{safe_text(k, 100)}" if path else safe_text(k, 100), v)
                          for k, v in value.items())  # fmt: skip
        elif isinstance(value, list):
            items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
        else:
            return None
        for where, child in items:
            found = find(child, where)
            if found is not None:
                return found
        return None

    try:
        found = find(json.loads(text, object_pairs_hook=mark), "")
    except (ValueError, RecursionError):
        found = None
    return found or ("(a key)", "")


def _no_constant(name: str) -> float:
    raise _NotJson(f"holds {name}, which is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson("holds a number too large for a 64-bit float")
    return value


def _whole(text: str) -> int:
    """An integer within a 64-bit float's range, the numbers Kuma's JSON takes (a number in a
    Mesh's backend settings is one): 10**400 was stored and synced, where Kuma refuses it.
    An integer of more digits than int() converts raises its ValueError (too many digits)."""
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise _NotJson("holds a number too large for a 64-bit float")
    return value


async def json_lines(request: web.Request, limit: int) -> AsyncIterator[object]:
    """The request's body as JSON Lines: each line's value as soon as the line is in (blank
    lines skipped), at most ``limit`` bytes in all. A body that ends early (the client gave
    up, or found a problem of its own while sending) is a 400, and nothing after its last
    whole line is taken."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(request.app[API_CONTEXT], limit)
    pending = bytearray()  # the start of a line whose end has not come yet
    size = line = 0
    async for chunk in _chunks(request):  # a body that ends early: a 400 from _chunks
        size += len(chunk)
        if size > limit:
            raise too_large(request.app[API_CONTEXT], limit)
        start = len(pending)
        pending += chunk
        end = pending.rfind(b"\n", start)  # only the new bytes can end a line
        if end < 0:
            continue
        lines = bytes(pending[:end]).split(b"\n")
        del pending[: end + 1]
        for raw in lines:
            line += 1
            if raw.strip():
                yield _decode(raw, line)
    if pending.strip():
        yield _decode(bytes(pending), line + 1)


def int_param(request: web.Request, name: str, default: int | None, minimum: int) -> int | None:
    """The query parameter ``name`` as an integer from ``minimum`` to MAX_PAGE_NUMBER."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if _PAGE_NUMBER_RE.fullmatch(raw) else -1
    if not minimum <= value <= MAX_PAGE_NUMBER:
        raise HttpError(
            400,
            "Bad request",
            f"invalid query parameter {name!r}",
            [FieldViolation(name, f"must be an integer from {minimum} to {MAX_PAGE_NUMBER}")],
        )
    return value
