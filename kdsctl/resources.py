"""kdsctl's resource commands: the get and delete commands of each kind (apply is
kdsctl.apply's).

    kdsctl get secrets --mesh default
    kdsctl get secret sample-secret -o yaml
    kdsctl delete secret sample-secret --mesh default

Verbs, flags and messages are kumactl's where kumactl has them (``deleted Secret
"sample"``, ``there is no Secret with name ...``).

The commands here are not in a group: ``kdsctl.cli`` puts the get_* / delete_* commands
under its ``get`` and ``delete`` groups. yaml is imported only when a command prints -o yaml.
"""

from __future__ import annotations

from typing import Any

import click

from kds.resource import Kind
from kdsctl.client import ApiClient, ApiError, pass_client, resource_path
from kdsctl.render import fail, print_resources, quoted

__all__ = [
    "delete_global_secret",
    "delete_mesh",
    "delete_secret",
    "get_global_secrets",
    "get_meshes",
    "get_secrets",
]

# --------------------------------------------------------------------------- get

_OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format. Tables never show secret data; json and yaml print the API "
    "answer, data included.",
)
_MESH = click.option(
    "-m",
    "--mesh",
    default="default",
    show_default=True,
    help="The mesh the secret belongs to.",
)
_NAME = click.argument("name", required=False)


_SIZE = click.option(
    "--size",
    type=click.IntRange(1, 1000),
    default=None,
    help="List one page of at most this many items (kumactl's flag); default: every page.",
)
_OFFSET = click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=None,
    help="List from this item on (with --size: one page from there).",
)


def _get(
    client: ApiClient,
    kind: Kind,
    name: str | None,
    output: str,
    mesh: str = "",
    size: int | None = None,
    offset: int | None = None,
) -> None:
    path = resource_path(kind, name or "", mesh)
    if name:
        try:
            answer = client.get(path)
        except ApiError as e:
            if e.status != 404:
                raise
            where = f" in {mesh} mesh" if kind is Kind.SECRET else ""
            fail(f"No resources found{where}", e.causes)  # kumactl's words
        print_resources(kind, answer, output, single=True)
        return
    answer = _list(client, path, size, offset)
    print_resources(kind, answer, output, single=False)
    if output == "table" and answer.get("items") and (after := _next_offset(answer)):
        # kumactl's footer of a table that is one page of more (table.PaginationFooter)
        click.echo(f"\nRerun command with --offset={after} argument to retrieve more resources")


def _next_offset(answer: dict[str, Any]) -> str | None:
    """The offset of the page after this one, as the answer's ``next`` gives it (None when
    it is the last page, or ``next`` holds no offset)."""
    from urllib.parse import parse_qs, urlsplit

    after = answer.get("next")
    if not isinstance(after, str):
        return None
    try:
        found = parse_qs(urlsplit(after).query).get("offset", [])
    except ValueError:
        return None
    return found[0] if len(found) == 1 and found[0].isascii() and found[0].isdigit() else None


# The most resources one listing reads, page after page (a store of 100,000 secrets is a
# hundred pages); more is paged by hand with --size and --offset.
MAX_LISTED = 250_000


def _list(client: ApiClient, path: str, size: int | None, offset: int | None) -> dict[str, Any]:
    """One page when --size is given, else every page (the API pages by 100 by default),
    following ``next`` on the same API."""
    query = {"size": size, "offset": offset}
    params = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    answer: dict[str, Any] = client.get(f"{path}?{params}" if params else path)
    if size is not None:
        return answer
    items = list(answer.get("items", []))
    total = answer.get("total")
    total = total if isinstance(total, int) else 0
    # Pages until the first answer's total: a server whose "next" never ends cannot keep
    # kdsctl reading forever.
    while answer.get("next") and len(items) + (offset or 0) < total:
        if len(items) >= MAX_LISTED:
            # Nor one whose total is made up: 10**12 took kdsctl past 5 GB.
            fail(f"the API lists more than {MAX_LISTED:,} of them: page with --size and --offset")
        start = len(items) + (offset or 0)
        answer = client.get(f"{path}?offset={start}&size=1000")
        if not answer.get("items"):
            break
        items += answer["items"]
    return {"total": answer.get("total", len(items)), "items": items, "next": None}


@click.command("meshes")
@_NAME
@_OUTPUT
@_SIZE
@_OFFSET
@pass_client
def get_meshes(
    client: ApiClient, name: str | None, output: str, size: int | None, offset: int | None
) -> None:
    """List meshes, or show the mesh NAME. Alias: mesh."""
    _get(client, Kind.MESH, name, output, "", size, offset)


@click.command("secrets")
@_NAME
@_MESH
@_OUTPUT
@_SIZE
@_OFFSET
@pass_client
def get_secrets(
    client: ApiClient,
    name: str | None,
    mesh: str,
    output: str,
    size: int | None,
    offset: int | None,
) -> None:
    """List the secrets of a mesh, or show the secret NAME. Alias: secret."""
    _get(client, Kind.SECRET, name, output, mesh, size, offset)


@click.command("global-secrets")
@_NAME
@_OUTPUT
@_SIZE
@_OFFSET
@pass_client
def get_global_secrets(
    client: ApiClient, name: str | None, output: str, size: int | None, offset: int | None
) -> None:
    """List global secrets, or show the global secret NAME. Aliases: global-secret,
    globalsecrets, globalsecret (kumactl's)."""
    _get(client, Kind.GLOBAL_SECRET, name, output, "", size, offset)


# --------------------------------------------------------------------------- delete


def _delete(client: ApiClient, kind: Kind, name: str, mesh: str = "") -> None:
    try:
        client.delete(resource_path(kind, name, mesh))
    except ApiError as e:
        if e.status != 404:
            raise
        where = f" in mesh {quoted(mesh)}" if kind is Kind.SECRET else ""
        fail(f"there is no {kind} with name {quoted(name)}{where}", e.causes)  # kumactl's words
    click.echo(f"deleted {kind} {quoted(name)}")  # kumactl's words


@click.command("mesh")
@click.argument("name")
@pass_client
def delete_mesh(client: ApiClient, name: str) -> None:
    """Delete the mesh NAME. Refused while it still holds secrets, except its builtin CA
    secrets, which are deleted with it (a secret an mTLS backend uses can be deleted once the
    backend is removed)."""
    _delete(client, Kind.MESH, name)


@click.command("secret")
@click.argument("name")
@_MESH
@pass_client
def delete_secret(client: ApiClient, name: str, mesh: str) -> None:
    """Delete the secret NAME of a mesh."""
    _delete(client, Kind.SECRET, name, mesh)


@click.command("global-secret")
@click.argument("name")
@pass_client
def delete_global_secret(client: ApiClient, name: str) -> None:
    """Delete the global secret NAME. Aliases: globalsecret (kumactl's), global-secrets."""
    _delete(client, Kind.GLOBAL_SECRET, name)
