"""kdsctl apply: resources from files, directories or stdin, written through POST /_apply.

    kdsctl apply -f secrets.yaml            (or -f dir/, -f -; -v KEY=VALUE; --dry-run)

Each document is checked here as it is read (kds.model, the rules global applies too), and
what passes is sent at once: the resources go as one request of JSON Lines, streamed while
the rest of the input is still being read, so global checks the first resources while
kdsctl reads the last, and writes them all in one transaction once the body is complete.
An invalid document, or an input that would not fit in one request of APPLY_CHUNK_BYTES,
ends that request unfinished, which global never applies (kds.api._apply): the problems are
then reported (nothing was applied), or the input is sent again in requests of up to
APPLY_CHUNK_BYTES, each its own transaction: Meshes first, then the Secrets their mTLS
backends name, then the rest.

Messages are kumactl's where kumactl has them (``resource type="Secret" mesh="default"
name="sample" Created``, ``Warning: ...``). yaml is imported only here, when apply runs.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import click

from kds.errors import InvalidResource
from kds.model import SYSTEM_LABELS, Kind, Limits, Resource, from_document, to_json
from kds.mtls import conf_alias_warnings, secret_refs
from kdsctl.client import ApiClient, ApiError, pass_client
from kdsctl.inputs import Input, parse_vars, read_inputs, render, unfilled_hint, unfilled_in
from kdsctl.render import fail, print_error, quoted, safe_text

__all__ = ["APPLY_CHUNK_BYTES", "APPLY_TIMEOUT", "apply"]

APPLY_CHUNK_BYTES = 8 * 1024 * 1024
# A large apply is one transaction on the server: wait for it longer than for a read.
APPLY_TIMEOUT = 300.0
# What a streamed body gathers before it is written: fewer, larger writes.
_BLOCK_BYTES = 64 * 1024
_NDJSON = "application/x-ndjson"

# Local checks leave the size limit to the server, whose limit is configurable.
_LOCAL_LIMITS = Limits(max_data_bytes=1 << 62)


@dataclass
class _Doc:
    where: str  # "FILE document N"
    resource: Resource


def _read_documents(item: Input) -> Iterator[_Doc]:
    """Each resource of ``item``, as soon as it is read and checked. After the last one, if
    any document was invalid, each problem is printed and kdsctl fails (nothing was applied);
    invalid YAML fails at once, naming where."""
    import yaml

    from kds.safe_yaml import AliasRefused, load_all, where_and_problem

    name = item.name
    # Plain generated files without a parser (kds.plain_yaml), anything else with libyaml's
    # when PyYAML was built with it (the wheels are): ~12x faster than PyYAML's own on big
    # files. Aliases are refused, which could make a small file expand to gigabytes.
    docs = load_all(item.text)
    templated = "{{" in item.text  # a variable left as written? (none: nothing to look at)
    index = problems = stripped = 0
    errors: list[tuple[str, list[tuple[str, str]]]] = []
    while True:
        try:
            doc = next(docs, _END)
        except AliasRefused as e:
            fail(f"{name} document {index + 1}: {e}")
        except yaml.MarkedYAMLError as e:
            fail(f"{name}: invalid YAML{where_and_problem(e)}{unfilled_hint(item)}")
        except yaml.YAMLError:
            fail(f"{name}: invalid YAML{unfilled_hint(item)}")
        if doc is _END:
            break
        index += 1
        if templated and (unfilled := unfilled_in(doc)):
            # kumactl applies it as written too; it is never what was meant.
            names = safe_text(", ".join(unfilled))
            click.echo(
                f"Warning: {name} document {index}: holds {{{{ {names} }}}}, which no -v "
                f"gave: applied as written (give -v {safe_text(unfilled[0])}=VALUE)",
                err=True,
            )
        for where, one in _resources_of(f"{name} document {index}", doc):
            stripped += _strip_system_labels(one)
            try:
                resource = from_document(one, _LOCAL_LIMITS)
            except InvalidResource as e:
                problems += 1
                # A field can name a key of the input (labels[KEY]) and a message quote a
                # value: escaped like a server's answer, so no control character of the
                # file reaches the terminal.
                causes = [(safe_text(c.field), safe_text(c.message)) for c in e.errors]
                errors.append((where, causes))
            else:
                if resource.kind is Kind.MESH:
                    # kdsctl sends the Mesh as stored (conf), so global cannot say this.
                    fields = one.get("spec") if "apiVersion" in one else one
                    for warning in conf_alias_warnings(fields):
                        click.echo(f"Warning: {where}: {warning}", err=True)
                yield _Doc(where, resource)
    # Printed once the whole file has parsed, as before: invalid YAML further on is the
    # one error shown.
    for where, causes in errors:
        print_error(f"{where}: invalid resource", causes)
    if problems:
        fail(f"{problems} invalid document(s); nothing was applied")
    if stripped:
        click.echo(
            f"note: {name}: left out the labels the control plane sets "
            f"({', '.join(sorted(SYSTEM_LABELS))}) of {stripped} resource(s)",
            err=True,
        )


_END = object()


def _resources_of(where: str, doc: Any) -> Iterator[tuple[str, Any]]:
    """Each resource of one document with where it came from. A list, as `kdsctl get ...
    -o yaml|json` prints it ({"items": [...]}, or Kubernetes' kind: List), stands for its
    items; an empty document holds none."""
    if doc is None:
        return
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


class _Unsent(Exception):
    """Raised by a streamed body instead of ending it: the request stays unfinished, so the
    server applies none of it."""


class _Stream:
    """The input's resources as the body of one POST /_apply of JSON Lines, each sent as
    soon as it is read and checked, gathered in blocks.

    Where the body would pass ``limit`` bytes it stops sending but reads the rest of the
    input; after the last document, if it stopped, it raises _Unsent rather than end the
    body. ``docs`` is every resource read so far, in input order; ``done`` says the block
    just yielded is the last."""

    def __init__(self, inputs: list[Input], variables: dict[str, str], limit: int):
        self.inputs = inputs
        self.variables = variables
        self.limit = limit
        self.docs: list[_Doc] = []
        self.stopped = False  # the body passed the limit: the rest is read, not sent
        self.done = False  # the last block is the one yielded now

    def body(self) -> Iterator[bytes]:
        block: list[bytes] = []
        block_size = size = 0
        for item in self.inputs:
            item = render(item, self.variables) if self.variables else item
            for d in _read_documents(item):
                self.docs.append(d)
                if self.stopped:
                    continue
                line = json.dumps(_body(d.resource)).encode() + b"\n"
                size += len(line)
                if size > self.limit:
                    self.stopped = True
                    continue
                block.append(line)
                block_size += len(line)
                if block_size >= _BLOCK_BYTES:
                    yield b"".join(block)
                    block, block_size = [], 0
        if self.stopped or not self.docs:
            raise _Unsent()
        self.done = True
        if block:
            yield b"".join(block)


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
    "no -v gives is an error. With no -v at all the input is read as written, as kumactl "
    "reads it, and a warning names any {{ KEY }} left in a value.",
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

    Every document is checked before anything is applied; an invalid one is reported with
    its document number and field, and nothing is applied. The resources go to the API's
    POST /_apply, sent as they are checked, in one request written in one transaction (all
    or nothing), Meshes first, when they fit in 8 MiB: an input under 8 MiB is applied
    atomically. A larger one goes in requests of up to 8 MiB, each one transaction (a Mesh
    with the Secrets its mTLS backends name), and stops at the first request the API
    refuses, saying which resources were applied. Each
    request may take up to 5 minutes (or --timeout, if longer).

    Each resource is reported as kumactl reports it, with Unchanged for one already as given:

    \b
      resource type="Secret" mesh="default" name="sample" Created
    """
    given = parse_vars(variables)
    inputs = read_inputs(files)
    if dry_run:
        import yaml

        docs = [
            d for item in inputs for d in _read_documents(render(item, given) if given else item)
        ]
        if not docs:
            fail("no resource(s) passed to apply")
        docs.sort(key=lambda d: d.resource.kind is not Kind.MESH)  # stable: meshes first
        click.echo(
            "---\n".join(yaml.safe_dump(_body(d.resource), sort_keys=False) for d in docs), nl=False
        )
        return
    stream = _Stream(inputs, given, APPLY_CHUNK_BYTES)
    body = stream.body()
    try:
        # The first block before the request starts: an input that is invalid or empty
        # never opens a request, and one of a single block goes whole, with its length.
        first = next(body, None)
        if first is not None:
            sent = first if stream.done else itertools.chain([first], body)
            _send(client, stream.docs, sent, _NDJSON, 0, _OLDER_GLOBAL)
            return
    except _Unsent:
        pass
    except _OlderGlobal:
        # A global from before JSON Lines read the body as one JSON document, refused it
        # and applied nothing: send it again as JSON, as that version takes it.
        for _ in body:  # the whole input was read and checked (the request had it all)
            pass
    docs = stream.docs
    if not docs:
        fail("no resource(s) passed to apply")
    applied = 0
    for chunk, encoded in _chunks(_in_order(docs), APPLY_CHUNK_BYTES):
        body_bytes = b'{"items": [' + b", ".join(encoded) + b"]}"
        _send(client, chunk, body_bytes, "application/json", applied)
        applied += len(chunk)


# What a global from before JSON Lines answers them with (it parses the body as one JSON
# document: several lines are not one, one line has no "items"); it applies nothing then.
_OLDER_GLOBAL = ("the request body is not valid JSON: Extra data", 'expected {"items": [')


class _OlderGlobal(Exception):
    pass


def _send(
    client: ApiClient,
    chunk: list[_Doc],
    body: bytes | Iterator[bytes],
    content_type: str,
    applied: int,
    older_global: tuple[str, ...] = (),
) -> None:
    """POST /_apply of ``chunk`` (``applied`` resources went in requests before it) and
    print its answer; an error fails naming the documents (a 400 whose detail starts with
    ``older_global``, if given, raises _OlderGlobal instead)."""
    try:
        answer = client.post("/_apply", body, max(client.timeout, APPLY_TIMEOUT), content_type)
    except ApiError as e:
        if e.status == 400 and older_global and e.detail.startswith(older_global):
            raise _OlderGlobal() from e
        causes = [(_where(chunk, f.replace("].", "]: ", 1)), m) for f, m in e.causes]
        detail = _where(chunk, e.detail)
        note = f" ({applied} resources applied before this request)" if applied else ""
        fail(f"{e.title}: {detail}{note}", causes)
    # One write for the lot: click.echo per line checks the terminal each time, which cost
    # ~0.1 s of CPU per 10,000 resources.
    lines = [
        f"resource type={quoted(item['type'])} mesh={quoted(item.get('mesh', ''))} "
        f"name={quoted(item['name'])} {safe_text(item['result'].capitalize())}"
        for item in _applied(answer)
    ]
    if lines:
        click.echo("\n".join(lines))
    warnings = answer.get("warnings") or []
    for warning in warnings if isinstance(warnings, list) else [warnings]:
        click.echo(f"Warning: {_where(chunk, safe_text(warning))}", err=True)


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


def _in_order(docs: list[_Doc]) -> list[_Doc]:
    """Meshes first, then the Secrets their mTLS backends name, then the rest, each group in
    file order: in requests of their own a Mesh and its CA secrets go in one, whose
    transaction checks them together (the secrets coming later in a large file, the Mesh
    was refused for want of them)."""
    used = {(d.resource.name, name) for d in docs for name in _secrets_named(d.resource)}

    def group(d: _Doc) -> int:
        r = d.resource
        if r.kind is Kind.MESH:
            return 0
        return 1 if r.kind is Kind.SECRET and (r.mesh, r.name) in used else 2

    return sorted(docs, key=group)


def _secrets_named(r: Resource) -> list[str]:
    """The Secrets a Mesh's mTLS backends name (none for another kind, or a spec the API is
    left to refuse)."""
    try:
        return [ref.secret for ref in secret_refs(r.name, r.spec)] if r.kind is Kind.MESH else []
    except (AttributeError, KeyError, TypeError, ValueError):
        return []


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
