"""kdsctl's zone token commands (against global's API, with its admin token).

kdsctl generate zone-token --zone NAME [--valid-for 30d] --output-file NAME.token
kdsctl get zone-tokens
kdsctl revoke zone-token ID
kdsctl get zone-token-signing-keys
kdsctl rotate zone-token-signing-key
kdsctl delete zone-token-signing-key NAME

``kdsctl.cli`` adds the groups here to the root and the get_* / delete_* commands to its
``get`` and ``delete`` groups.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import click

from kdsctl.client import ApiClient, pass_client
from kdsctl.render import fail, safe_text, table

# A signed JWT as global issues it: three base64url parts (a token is a few hundred bytes).
_JWT = re.compile(r"[A-Za-z0-9_-]{1,4096}\.[A-Za-z0-9_-]{1,4096}\.[A-Za-z0-9_-]{1,4096}")

__all__ = [
    "delete_signing_key",
    "generate",
    "get_signing_keys",
    "get_zone_tokens",
    "revoke",
    "rotate",
]


@click.group()
def generate() -> None:
    """Generate credentials (zone tokens) on global."""


@generate.command("zone-token")
@click.option("--zone", required=True, metavar="NAME", help="The zone the token is for.")
@click.option(
    "--valid-for",
    default="365d",
    show_default=True,
    metavar="DURATION",
    help="How long the token is valid (e.g. 24h, 30d).",
)
@click.option(
    "--output-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the token to FILE, mode 0600 (replacing FILE at once if it exists), for "
    "'zonecp --token-file FILE', instead of printing it.",
)
@pass_client
def generate_zone_token(
    client: ApiClient, zone: str, valid_for: str, output_file: Path | None
) -> None:
    """Issue a token for the zone NAME and write it to --output-file (mode 0600), or print
    it on stdout (and nothing else), for 'zonecp --token-file'. Its id and expiry go to
    stderr. The token is shown only now."""
    answer = client.post("/zone-tokens", {"zone": zone, "validFor": valid_for})
    token = answer.get("token")
    if not isinstance(token, str) or not _JWT.fullmatch(token):
        # Written to a file a zone reads, or to a terminal: only what a token can be.
        fail("the API's answer holds no zone token (a JWT): was --api-url global's API?")
    shown = {k: safe_text(answer.get(k)) for k in ("id", "zone", "expiresAt")}
    if output_file is None:
        click.echo(token)
    else:
        from kds.secret_files import write_secret_file  # structlog: only this command needs it

        try:
            write_secret_file(output_file, token + "\n")
        except OSError as e:
            fail(
                f"--output-file {output_file}: cannot write it: {e.strerror}; the token "
                f"{shown['id']} was issued: revoke it with kdsctl revoke zone-token {shown['id']}"
            )
        click.echo(f"wrote the zone token to {output_file} (mode 0600)", err=True)
    click.echo(
        f"zone token {shown['id']} for zone {shown['zone']}, valid until "
        f"{shown['expiresAt']} (revoke with: kdsctl revoke zone-token {shown['id']})",
        err=True,
    )


@click.group()
def revoke() -> None:
    """Revoke credentials."""


@revoke.command("zone-token")
@click.argument("token_id", metavar="ID")
@pass_client
def revoke_zone_token(client: ApiClient, token_id: str) -> None:
    """Refuse the zone token ID from now on and end the streams using it."""
    answer = client.post(f"/zone-tokens/{quote(token_id, safe='')}/revoke", {})
    shown = {k: safe_text(answer.get(k)) for k in ("id", "zone", "revokedAt", "streamsEnded")}
    click.echo(
        f"zone token {shown['id']} (zone {shown['zone']}) revoked at {shown['revokedAt']}; "
        f"{shown['streamsEnded']} live stream(s) ended"
    )


@click.command("zone-tokens")
@pass_client
def get_zone_tokens(client: ApiClient) -> None:
    """List the zone tokens global issued (ids and times, never the tokens)."""
    items = client.get("/zone-tokens")["items"]
    if not items:
        click.echo("No zone tokens have been issued.", err=True)
        return
    rows = [
        [t["id"], t["zone"], t["keyName"], t["issuedAt"], t["expiresAt"], t["revokedAt"] or "-"]
        for t in items
    ]
    rows = [[safe_text(cell) for cell in row] for row in rows]  # what the server sent
    click.echo(table(["ID", "ZONE", "SIGNING KEY", "ISSUED", "EXPIRES", "REVOKED"], rows))


@click.command("zone-token-signing-keys")
@pass_client
def get_signing_keys(client: ApiClient) -> None:
    """List the keys that sign zone tokens (names only; the newest signs new tokens)."""
    items = client.get("/zone-token-signing-keys")["items"]
    click.echo(
        table(
            ["NAME", "CURRENT"],
            [[safe_text(k["name"]), "yes" if k["current"] else ""] for k in items],
        )
    )


@click.group()
def rotate() -> None:
    """Rotate keys."""


@rotate.command("zone-token-signing-key")
@pass_client
def rotate_signing_key(client: ApiClient) -> None:
    """Add a signing key that signs every zone token issued from now on. Tokens signed by
    older keys keep working until those keys are deleted."""
    answer = client.post("/zone-token-signing-keys", {})
    click.echo(f"{safe_text(answer.get('name'))} now signs new zone tokens")


@click.command("zone-token-signing-key")
@click.argument("name")
@pass_client
def delete_signing_key(client: ApiClient, name: str) -> None:
    """Delete the signing key NAME: zone tokens it signed are refused from now on."""
    answer = client.delete(f"/zone-token-signing-keys/{quote(name, safe='')}") or {}
    click.echo(
        f"{safe_text(name)} deleted; tokens it signed are refused from now on; "
        f"{safe_text(answer.get('streamsEnded', 0))} live stream(s) ended"
    )
