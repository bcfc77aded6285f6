"""One-shot provisioning for the compose project: global's CA certificate and a token per zone.

Runs in the ``provision`` service after global is healthy, with global's data volume mounted
read-only (for its admin token and ``ca.crt``) and each zone's credentials volume at
``/credentials/ZONE`` (the zone mounts the same volume read-only at ``/credentials``, so a
zone never sees another zone's token). For each zone in ``KDS_ZONES`` (space- or
comma-separated) it:

- copies global's ``ca.crt`` to ``/credentials/ZONE/ca.crt`` (every run: it follows a new CA);
- keeps ``/credentials/ZONE/token`` when global still knows that token, it is for that zone,
  not revoked and not expiring within ``KDS_TOKEN_RENEW_BEFORE`` days; otherwise asks global
  for a new one (``POST /zone-tokens``, valid ``KDS_TOKEN_VALID_FOR``) and writes it 0600,
  atomically.

So a re-run is harmless, a fourth zone needs its name and its volume added, and a token lost
with a recreated global volume is replaced. Token values are never printed, only ids and
expiry. It runs as root to own fresh volumes; what it writes belongs to ``KDS_OWNER``
(10001:10001, the image's ``kds`` user the daemons run as).

Environment: ``KDS_GLOBAL_API`` (http://global:5681), ``KDS_GLOBAL_DATA_DIR``
(/global/global), ``KDS_CREDENTIALS_DIR`` (/credentials), ``KDS_ZONES``,
``KDS_TOKEN_VALID_FOR`` (365d), ``KDS_TOKEN_RENEW_BEFORE`` (30), ``KDS_OWNER``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def _owner() -> tuple[int, int] | None:
    """Who must own what this writes: KDS_OWNER (uid:gid) when running as root, else None."""
    if os.geteuid() != 0:
        return None
    uid, _, gid = os.environ.get("KDS_OWNER", "10001:10001").partition(":")
    return int(uid), int(gid or uid)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    if (owner := _owner()) is not None:
        os.chown(tmp, *owner)
    tmp.replace(path)


def _zone_dir(out: Path, zone: str) -> Path:
    d = out / zone
    if not d.is_dir():
        raise SystemExit(
            f"{d} does not exist: mount zone {zone}'s credentials volume there "
            "(see compose/README.md, 'Add a zone')"
        )
    if (owner := _owner()) is not None:
        os.chown(d, *owner)
    d.chmod(0o700)
    return d


def token_claims(token: str) -> dict[str, Any]:
    """The JWT's claims, unverified (global verifies; this only reads the id and zone)."""
    try:
        payload = token.strip().split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def stale_reason(
    token: str, zone: str, issued: dict[str, dict[str, Any]], renew_before: dt.timedelta
) -> str | None:
    """Why the token in a zone's file must be replaced, or None to keep it."""
    claims = token_claims(token)
    if not claims.get("jti"):
        return "the file holds no token"
    if claims.get("sub") != zone:
        return f"the token is for zone {claims.get('sub')!r}"
    info = issued.get(str(claims["jti"]))
    if info is None:
        return "global does not know this token (its data was recreated?)"
    if info.get("revokedAt"):
        return f"the token was revoked at {info['revokedAt']}"
    expires = _parse_time(info["expiresAt"])
    if expires - renew_before <= dt.datetime.now(dt.UTC):
        return f"the token expires at {info['expiresAt']}"
    return None


def _wait_ready(http: httpx.Client, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http.get("/readyz").status_code == 200:
                return
            problem = "not ready"
        except httpx.HTTPError as e:
            problem = str(e)
        if time.monotonic() > deadline:
            raise SystemExit(f"global at {http.base_url} did not get ready: {problem}")
        time.sleep(1)


def main() -> int:
    env = os.environ
    api = env.get("KDS_GLOBAL_API", "http://global:5681")
    global_dir = Path(env.get("KDS_GLOBAL_DATA_DIR", "/global/global"))
    out = Path(env.get("KDS_CREDENTIALS_DIR", "/credentials"))
    zones = env.get("KDS_ZONES", "").replace(",", " ").split()
    valid_for = env.get("KDS_TOKEN_VALID_FOR", "365d")
    renew_before = dt.timedelta(days=float(env.get("KDS_TOKEN_RENEW_BEFORE", "30")))
    if not zones:
        print("KDS_ZONES names no zone: nothing to provision", file=sys.stderr)
        return 2
    admin_token = (global_dir / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=api, headers=headers, timeout=10) as http:
        _wait_ready(http)
        ca = (global_dir / "ca.crt").read_bytes()
        listing = http.get("/zone-tokens")
        listing.raise_for_status()
        issued = {t["id"]: t for t in listing.json()["items"]}
        for zone in zones:
            zdir = _zone_dir(out, zone)
            _write(zdir / "ca.crt", ca, 0o644)
            path = zdir / "token"
            held = path.read_text() if path.exists() else ""
            reason = stale_reason(held, zone, issued, renew_before) if held else "no token yet"
            if reason is None:
                jti = token_claims(held)["jti"]
                print(f"{zone}: kept token {jti} (expires {issued[jti]['expiresAt']})")
                continue
            r = http.post("/zone-tokens", json={"zone": zone, "validFor": valid_for})
            if r.status_code != 201:
                print(f"{zone}: global refused a token: {r.status_code} {r.text}", file=sys.stderr)
                return 1
            answer = r.json()
            _write(path, answer["token"].encode() + b"\n", 0o600)
            print(f"{zone}: issued token {answer['id']} (expires {answer['expiresAt']}): {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
