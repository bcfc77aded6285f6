"""kdsctl's resource commands: apply, and the get and delete commands of each kind.

    kdsctl apply -f secrets.yaml            (or -f dir/, -f -; -v KEY=VALUE; --dry-run)
    kdsctl get secrets --mesh default
    kdsctl get secret sample-secret -o yaml
    kdsctl delete secret sample-secret --mesh default

Verbs, flags and messages are kumactl's where kumactl has them (``resource type="Secret"
mesh="default" name="sample" Created``, ``deleted Secret "sample"``, ``Warning: ...``).

The commands here are not in a group: ``kdsctl.cli`` puts ``apply`` under the root and the
get_* / delete_* commands under its ``get`` and ``delete`` groups. yaml is imported only when
apply reads a file or a command prints -o yaml.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import click

from kds.errors import InvalidResource
from kds.model import (
    SYSTEM_LABELS,
    Kind,
    Limits,
    Resource,
    from_document,
    to_json,
)
from kdsctl.client import ApiClient, ApiError, pass_client, resource_path
from kdsctl.inputs import Input, parse_vars, read_inputs, render, unfilled_hint
from kdsctl.render import fail, print_error, print_resources, safe_text

__all__ = [
    "APPLY_CHUNK_BYTES",
    "APPLY_TIMEOUT",
    "apply",
    "delete_global_secret",
    "delete_mesh",
    "delete_secret",
    "get_global_secrets",
    "get_meshes",
    "get_secrets",
]

# Local checks leave the size limit to the server, whose limit is configurable.
_LOCAL_LIMITS = Limits(max_data_bytes=1 << 62)

# --------------------------------------------------------------------------- apply


@dataclass
class _Doc:
    where: str  # "FILE document N"
    resource: Resource


def _load_documents(item: Input) -> list[_Doc]:
    import yaml

    from kds.safe_yaml import AliasRefused, load_all

    name = item.name
    # libyaml's parser when PyYAML was built with it (the wheels are): ~12x faster on big
    # files. It refuses aliases, which could make a small file expand to gigabytes.
    docs: list[Any] = []
    try:
        for doc in load_all(item.text):
            docs.append(doc)
    except AliasRefused as e:
        fail(f"{name} document {len(docs) + 1}: {e}")
    except yaml.MarkedYAMLError as e:
        # Problem and position only: a snippet of the line could show secret data.
        mark = e.problem_mark
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "cannot parse"
        fail(f"{name}: invalid YAML{pos}: {problem}{unfilled_hint(item)}")
    except yaml.YAMLError:
        fail(f"{name}: invalid YAML{unfilled_hint(item)}")
    out: list[_Doc] = []
    problems = 0
    stripped = 0
    for where, doc in _documents(name, docs):
        stripped += _strip_system_labels(doc)
        try:
            out.append(_Doc(where, from_document(doc, _LOCAL_LIMITS)))
        except InvalidResource as e:
            problems += 1
            print_error(f"{where}: invalid resource", [(c.field, c.message) for c in e.errors])
    if problems:
        fail(f"{problems} invalid document(s); nothing was applied")
    if stripped:
        click.echo(
            f"note: {name}: left out the labels the control plane sets "
            f"({', '.join(sorted(SYSTEM_LABELS))}) of {stripped} resource(s)",
            err=True,
        )
    return out


def _documents(name: str, docs: list[Any]) -> Iterator[tuple[str, Any]]:
    """Each resource with where it came from. A list, as `kdsctl get ... -o yaml|json` prints
    it ({"items": [...]}, or Kubernetes' kind: List), stands for its items."""
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{name} document {index}"
        items = doc.get("items") if isinstance(doc, Mapping) else None
        if isinstance(items, list) and "type" not in doc and doc.get("kind") in (None, "List"):
            for i, item in enumerate(items):
                yield f"{where} items[{i}]", item
        else:
            yield where, doc


def _strip_system_labels(doc: Any) -> int:
    """Drop the labels the control plane computes (which `get` shows), so that `get -o yaml`
    output applies as it is, even to another control plane; 1 if the document had any."""
    if not isinstance(doc, dict):
        return 0
    holder = doc.get("metadata") if ("apiVersion" in doc or "kind" in doc) else doc
    labels = holder.get("labels") if isinstance(holder, dict) else None
    if not isinstance(labels, dict) or not (SYSTEM_LABELS & labels.keys()):
        return 0
    for k in SYSTEM_LABELS:
        labels.pop(k, None)
    return 1


def _body(res: Resource) -> dict[str, Any]:
    body = to_json(res)
    body.pop("creationTime", None)
    body.pop("modificationTime", None)
    return body


@click.command()
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    required=True,
    metavar="FILE|DIR|-",
    help="YAML or JSON file with one or more documents ('---' separated), '-' for stdin, or "
    "a directory: every .yaml, .yml and .json file in it, in name order (as kumactl). "
    "Universal (type: Secret|GlobalSecret|Mesh) and Kubernetes (apiVersion/kind) forms are "
    "accepted. Repeatable.",
)
@click.option(
    "-v",
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="Replace {{ KEY }} in the input by VALUE before it is read (kumactl's variables); "
    "repeatable, or comma-separated: -v mesh=default,team=a. A variable the input uses but "
    "no -v gives is an error.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check every resource and print them as YAML, variables resolved, without applying "
    "anything (as kumactl; the output holds the input's secret data).",
)
@pass_client
def apply(
    client: ApiClient, files: tuple[str, ...], variables: tuple[str, ...], dry_run: bool
) -> None:
    """Create or modify the resources described in FILE.

    Every document is checked before anything is sent; an invalid one is reported with its
    document number and field, and nothing is applied. The resources then go to the API's
    POST /_apply in requests of up to 8 MiB, each written in one transaction (all or
    nothing), Meshes first. An input under 8 MiB is therefore applied atomically; a larger one
    stops at the first request the API refuses, and says which resources were applied. Each
    request may take up to 5 minutes (or --timeout, if longer).

    Each resource is reported as kumactl reports it, with Unchanged for one already as given:

    \b
      resource type="Secret" mesh="default" name="sample" Created
    """
    given = parse_vars(variables)
    docs: list[_Doc] = []
    for item in read_inputs(files):
        docs += _load_documents(render(item, given) if given else item)
    if not docs:
        fail("no resource(s) passed to apply")
    docs.sort(key=lambda d: d.resource.kind is not Kind.MESH)  # stable: meshes first
    if dry_run:
        import yaml

        click.echo(
            "---\n".join(yaml.safe_dump(_body(d.resource), sort_keys=False) for d in docs), nl=False
        )
        return
    applied = 0
    for chunk, encoded in _chunks(docs, APPLY_CHUNK_BYTES):
        try:
            answer = client.post(
                "/_apply",
                b'{"items": [' + b", ".join(encoded) + b"]}",
                timeout=max(client.timeout, APPLY_TIMEOUT),
            )
        except ApiError as e:
            causes = [(_where(chunk, f.replace("].", "]: ", 1)), m) for f, m in e.causes]
            detail = _where(chunk, e.detail)
            note = f" ({applied} resources applied before this request)" if applied else ""
            fail(f"{e.title}: {detail}{note}", causes)
        # One write for the lot: click.echo per line checks the terminal each time, which
        # cost ~0.1 s of CPU per 10,000 resources.
        lines = [
            f"resource type={_quoted(item['type'])} mesh={_quoted(item.get('mesh', ''))} "
            f"name={_quoted(item['name'])} {str(item['result']).capitalize()}"
            for item in _applied(answer)
        ]
        if lines:
            click.echo("\n".join(lines))
        warnings = answer.get("warnings") or []
        for warning in warnings if isinstance(warnings, list) else [warnings]:
            click.echo(f"Warning: {_where(chunk, safe_text(warning))}", err=True)
        applied += len(chunk)


def _applied(answer: object) -> list[dict[str, Any]]:
    """The items of an answer to POST /_apply, checked: objects, each with a string
    ``type``, ``name`` and ``result``; else an error naming what is wrong."""
    where = "the answer to POST /_apply"
    items = answer.get("items") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        fail(f"{where} has no list 'items': is --api-url a kds-sync control plane?")
    for i, item in enumerate(items):
        for name in ("type", "name", "result"):
            if not isinstance(item, dict) or not isinstance(item.get(name), str):
                fail(f"{where}: items[{i}] has no string {name!r}")
        if not isinstance(item.get("mesh", ""), str):
            fail(f"{where}: items[{i}].mesh is not a string")
    return items


def _quoted(value: object) -> str:
    """As kumactl's %q shows a string (JSON quoting is the same for printable text), with
    what the server sent made safe for a terminal first."""
    return json.dumps(safe_text(value), ensure_ascii=False)


APPLY_CHUNK_BYTES = 8 * 1024 * 1024
# A large apply is one transaction on the server: wait for it longer than for a read.
APPLY_TIMEOUT = 300.0


def _chunks(docs: list[_Doc], limit: int) -> Iterator[tuple[list[_Doc], list[bytes]]]:
    """The documents in requests of at most ``limit`` bytes of JSON, each with its items
    encoded (once: the sizes are those of what is sent)."""
    chunk: list[_Doc] = []
    encoded: list[bytes] = []
    size = 0
    for d in docs:
        item = json.dumps(_body(d.resource)).encode()
        n = len(item) + 2
        if chunk and size + n > limit:
            yield chunk, encoded
            chunk, encoded, size = [], [], 0
        chunk.append(d)
        encoded.append(item)
        size += n
    if chunk:
        yield chunk, encoded


_ITEM_RE = re.compile(r"items\[(\d+)\]")


def _where(chunk: list[_Doc], text: str) -> str:
    """Replace the API's items[i] by the document it came from."""

    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return chunk[i].where if i < len(chunk) else m.group(0)

    return _ITEM_RE.sub(sub, text)


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
    print_resources(kind, _list(client, path, size, offset), output, single=False)


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
        where = f" in mesh {_quoted(mesh)}" if kind is Kind.SECRET else ""
        fail(f"there is no {kind} with name {_quoted(name)}{where}", e.causes)  # kumactl's words
    click.echo(f"deleted {kind} {_quoted(name)}")  # kumactl's words


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
