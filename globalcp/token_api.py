"""Zone tokens on global's API (admin token only for every write).

    POST   /zone-tokens                      {"zone", "validFor"} -> 201 {"id", "zone",
                                             "keyName", "expiresAt", "token"}
    GET    /zone-tokens                      issued tokens' ids, zones, times (never a token)
    POST   /zone-tokens/{id}/revoke          refuse the token from now on, end its streams
    GET    /zone-token-signing-keys          the signing keys' names (never a key)
    POST   /zone-token-signing-keys          rotate: a new key signs tokens from now on
    DELETE /zone-token-signing-keys/{name}   tokens signed by that key are refused from now on,
                                             their streams ended -> {"streamsEnded"}

A token is shown once, in the answer that issued it; global keeps only its id and facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog
from aiohttp import web

from globalcp.tokens import ZoneTokens
from kds.api import read_json
from kds.clock import utcnow
from kds.config import parse_duration
from kds.errors import Conflict, FieldViolation, InvalidResource, NotFound
from kds.model import validate_name

__all__ = ["DEFAULT_VALIDITY", "token_routes"]

log = structlog.get_logger("globalcp.tokens")

DEFAULT_VALIDITY = 365 * 86400.0


# A token request is a zone name and a duration: a few hundred bytes.
_MAX_BODY = 64 * 1024


async def _body(request: web.Request) -> Mapping[str, object]:
    body = await read_json(request, _MAX_BODY)
    if not isinstance(body, Mapping):
        raise InvalidResource([FieldViolation("", "the body must be a JSON object")])
    return body


def token_routes(tokens: ZoneTokens, end_streams: Callable[..., int]) -> list[web.RouteDef]:
    """``end_streams(reason, token_id=..., key_name=...)`` ends the matching live streams."""

    async def issue(request: web.Request) -> web.Response:
        body = await _body(request)
        zone = body.get("zone")
        errs = validate_name(zone, "zone")
        valid_for = DEFAULT_VALIDITY
        if body.get("validFor") not in (None, ""):
            try:
                valid_for = parse_duration(body["validFor"])
            except ValueError as e:
                errs.append(FieldViolation("validFor", str(e)))
            else:
                # The expiry is whole seconds (the token's exp claim), cut down: under a
                # second, a token was issued already expired.
                if valid_for < 1:
                    errs.append(FieldViolation("validFor", "must be at least 1s"))
        if errs:
            raise InvalidResource(errs)
        token, info = await tokens.issue(str(zone), valid_for, utcnow())
        log.info(
            "zone token issued",
            token_id=info.token_id,
            zone=info.zone,
            key=info.key_name,
            expires_at=info.expires_at,
        )
        return web.json_response(
            {
                "id": info.token_id,
                "zone": info.zone,
                "keyName": info.key_name,
                "expiresAt": info.expires_at,
                "token": token,
            },
            status=201,
        )

    async def list_tokens(request: web.Request) -> web.Response:
        rows = await tokens.store.zone_tokens()
        return web.json_response({"total": len(rows), "items": rows, "next": None})

    async def revoke(request: web.Request) -> web.Response:
        token_id = request.match_info["id"]
        row = await tokens.revoke(token_id)
        if row is None:
            raise NotFound(f"no zone token with id {token_id!r} was issued by this global")
        ended = end_streams(f"zone token {token_id} has been revoked", token_id=token_id)
        log.warning("zone token revoked", token_id=token_id, zone=row["zone"], streams_ended=ended)
        return web.json_response({**row, "streamsEnded": ended})

    async def list_keys(request: web.Request) -> web.Response:
        current = tokens.current_key
        items = [{"name": k, "current": k == current} for k in sorted(tokens.keys)]
        return web.json_response({"total": len(items), "items": items, "next": None})

    async def rotate(request: web.Request) -> web.Response:
        name = await tokens.rotate()
        log.info("zone token signing key added; it signs new tokens from now on", key=name)
        return web.json_response({"name": name, "current": True}, status=201)

    async def remove_key(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await tokens.remove_key(name)
        except KeyError:
            raise NotFound(f"no signing key {name!r}") from None
        except ValueError as e:
            raise Conflict(str(e)) from None
        ended = end_streams(
            f"the key that signed this zone's token ({name}) was removed", key_name=name
        )
        log.warning(
            "zone token signing key removed; tokens it signed are refused",
            key=name,
            streams_ended=ended,
        )
        return web.json_response({"streamsEnded": ended})

    return [
        web.post("/zone-tokens", issue),
        web.get("/zone-tokens", list_tokens),
        web.post("/zone-tokens/{id}/revoke", revoke),
        web.get("/zone-token-signing-keys", list_keys),
        web.post("/zone-token-signing-keys", rotate),
        web.delete("/zone-token-signing-keys/{name}", remove_key),
    ]
