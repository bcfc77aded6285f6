"""Zone tokens: how global knows a stream comes from the zone it claims to be.

A zone token is a JWT (PyJWT, HS256) that global signs with one of its signing keys, kept as
internal secrets ``zone-token-signing-key-N`` in its store (never synced, never served). The
header's ``kid`` names the key; claims: ``sub`` the zone name, ``jti`` the token id, ``iat``,
``exp``. Only global verifies tokens, so a symmetric key that never leaves it is enough.

Rotation: a new key gets the next N and signs every token issued from then on; tokens signed
by an older key verify until that key is removed. Revocation: a revoked token id is refused at
its next dial, and global ends the live stream that used it.

Every refusal is a ``TokenRefused`` with a gRPC status and a reason that never includes the
token itself.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass

import grpc
import jwt

from kds.clock import rfc3339
from kds.errors import KdsError
from kds.store import GlobalStore
from kds.text import safe_text

__all__ = ["SIGNING_KEY_PREFIX", "TokenInfo", "TokenRefused", "ZoneTokens"]

SIGNING_KEY_PREFIX = "zone-token-signing-key-"
_ALGORITHM = "HS256"
KID_LOGGED = 80  # characters of an unknown key id kept in global's log


class TokenRefused(KdsError):
    """A zone's token was refused (missing, forged, expired, revoked, for another zone, or
    signed by a removed key): the zone's or its operator's to fix. ``code`` is the gRPC
    status the stream ends with; ``reason`` is what the peer is told, fixed text or facts
    from a token that verified, never text the peer made up; ``detail`` is for global's own
    log only (peer-supplied, so bounded and escaped)."""

    def __init__(self, code: grpc.StatusCode, reason: str, detail: str = ""):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    zone: str
    key_name: str
    expires_at: str


def _key_number(name: str) -> int:
    return int(name.removeprefix(SIGNING_KEY_PREFIX))


class ZoneTokens:
    def __init__(self, store: GlobalStore, issuer: str):
        self.store = store
        self.issuer = issuer
        self.keys: dict[str, bytes] = {}
        self.revoked: set[str] = set()

    async def load(self) -> None:
        """Read the signing keys and revoked token ids; make the first key on a new store."""
        self.keys = await self.store.internal_secrets(SIGNING_KEY_PREFIX)
        if not self.keys:
            # Added only where no instance sharing the store made one first.
            first = f"{SIGNING_KEY_PREFIX}1"
            self.keys = await self.store.add_internal_secrets(
                {first: secrets.token_bytes(32)}, rfc3339()
            )
        rows = await self.store.zone_tokens()
        self.revoked = {r["id"] for r in rows if r["revokedAt"]}

    async def reload(self) -> tuple[set[str], set[str]]:
        """Re-read the signing keys and revocations another instance sharing the store may
        have changed: (signing keys removed, token ids newly revoked)."""
        keys = await self.store.internal_secrets(SIGNING_KEY_PREFIX)
        rows = await self.store.zone_tokens()
        revoked = {r["id"] for r in rows if r["revokedAt"]}
        removed = set(self.keys) - set(keys)
        newly = revoked - self.revoked
        if keys:  # never left with no key: the store answered, so it holds at least one
            self.keys = keys
        self.revoked |= revoked
        return removed, newly

    @property
    def current_key(self) -> str:
        return max(self.keys, key=_key_number)

    async def rotate(self) -> str:
        """Add a signing key with the next number; it signs every token issued from now on.
        A number another instance sharing the store took meanwhile is skipped, not replaced."""
        for _ in range(100):
            n = max((_key_number(k) for k in self.keys), default=0) + 1
            name = f"{SIGNING_KEY_PREFIX}{n}"
            key = secrets.token_bytes(32)
            stored = await self.store.add_internal_secrets({name: key}, rfc3339())
            self.keys[name] = stored[name]
            if stored[name] == key:
                return name
        raise RuntimeError("could not add a signing key: every number tried was taken")

    async def remove_key(self, name: str) -> None:
        """Remove a signing key: tokens it signed are refused from then on."""
        if name not in self.keys:
            raise KeyError(name)
        if len(self.keys) == 1:
            raise ValueError(f"{name} is the only signing key; rotate first, then remove it")
        await self.store.delete_internal_secret(name)
        del self.keys[name]

    async def issue(self, zone: str, valid_for: float, now: dt.datetime) -> tuple[str, TokenInfo]:
        key_name = self.current_key
        token_id = uuid.uuid4().hex
        # Whole seconds, as the token's exp claim holds it: the expiry shown (issue answer,
        # token list, log) is the instant the token stops working, not up to 1 s after it.
        expires = (now + dt.timedelta(seconds=valid_for)).replace(microsecond=0)
        claims = {
            "iss": self.issuer,
            "sub": zone,
            "jti": token_id,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = jwt.encode(
            claims, self.keys[key_name], algorithm=_ALGORITHM, headers={"kid": key_name}
        )
        info = TokenInfo(token_id, zone, key_name, rfc3339(expires))
        await self.store.add_zone_token(token_id, zone, key_name, rfc3339(now), info.expires_at)
        return token, info

    async def revoke(self, token_id: str) -> dict[str, str] | None:
        row = await self.store.revoke_zone_token(token_id, rfc3339())
        if row is not None:
            self.revoked.add(token_id)
        return row

    def withdrawn(self, info: TokenInfo) -> str | None:
        """Why a token verified earlier no longer holds (revoked, or its signing key removed
        since), or None. A stream is admitted after its token was verified: a revocation
        landing in between found no stream to end, so the stream asks again once it is
        registered."""
        if info.token_id in self.revoked:
            return f"zone token {info.token_id} has been revoked"
        if info.key_name not in self.keys:
            return f"the key that signed this zone's token ({info.key_name}) was removed"
        return None

    def verify(self, token: str, zone: str | None, now: dt.datetime) -> TokenInfo:
        """The token's facts if it is valid at ``now`` (and for ``zone``, unless None: then
        ``for_zone`` checks it later); else TokenRefused."""
        unauth = grpc.StatusCode.UNAUTHENTICATED
        if not token:
            raise TokenRefused(unauth, "no zone token: start the zone with --token-file")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRefused(unauth, "malformed zone token") from None
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None or not isinstance(kid, str):
            # The peer chose the kid: it is not echoed back, and logged here bounded, escaped.
            raise TokenRefused(
                unauth,
                "zone token signed by a key this global does not hold (removed, or never "
                "made here): generate a new token",
                detail=f"kid {safe_text(kid, KID_LOGGED) if kid is not None else 'missing'}",
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                issuer=self.issuer,
                options={"require": ["sub", "jti", "exp", "iat"], "verify_exp": False},
            )
        except jwt.InvalidTokenError as e:
            # PyJWT's own wording (fixed texts naming the failed check), bounded all the same.
            raise TokenRefused(unauth, f"invalid zone token: {safe_text(e, 200)}") from None
        token_id, subject = str(claims["jti"]), str(claims["sub"])
        expires = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)
        if now >= expires:
            raise TokenRefused(unauth, f"zone token {token_id} expired at {rfc3339(expires)}")
        if token_id in self.revoked:
            raise TokenRefused(
                grpc.StatusCode.PERMISSION_DENIED, f"zone token {token_id} has been revoked"
            )
        info = TokenInfo(token_id, subject, kid, rfc3339(expires))
        if zone is not None:
            self.for_zone(info, zone)
        return info

    @staticmethod
    def for_zone(info: TokenInfo, zone: str) -> None:
        """TokenRefused unless the verified token ``info`` was issued for ``zone``."""
        if info.zone != zone:
            raise TokenRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"zone token {info.token_id} was issued for zone {info.zone!r}, not {zone!r}",
            )
