"""How kdsctl prints: tables, ages, -o json / -o yaml, and ``Error: ...`` lines.

Tables never show secret data; ``-o json`` and ``-o yaml`` print the API's answer as is. yaml
is imported only to print -o yaml. Text a daemon relays from a peer (a zone's instance id,
version, conflicts, errors) goes through ``safe_text`` before it is printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from kds import text
from kds.resource import LABEL_ORIGIN, LABEL_ZONE, Kind

__all__ = [
    "dump",
    "fail",
    "format_age",
    "print_error",
    "print_resources",
    "quoted",
    "safe_text",
    "table",
]

# The most characters of one value kdsctl prints in a table or a detail line.
SHOWN_CHARS = 1024


def safe_text(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as text safe to print on a terminal: control and other non-printable
    characters escaped (``\\x1b``), at most ``limit`` characters."""
    return text.safe_text(value, limit)


def quoted(value: object) -> str:
    """As kumactl's %q shows a string (JSON quoting is the same for printable text), with
    what the server sent made safe for a terminal first."""
    if (
        type(value) is str
        and len(value) <= SHOWN_CHARS
        and value.isprintable()
        and '"' not in value
        and "\\" not in value
    ):
        # What the general case gives such a text (safe_text leaves it as it is, and JSON
        # escapes nothing in it), without its cost: an apply prints three per resource.
        return f'"{value}"'
    return json.dumps(safe_text(value), ensure_ascii=False)


def print_error(message: str, causes: Iterable[tuple[str, str]] = ()) -> None:
    """Print ``Error: message`` and one line per (field, message) cause on stderr."""
    click.echo(f"Error: {message}", err=True)
    for f, m in causes:
        click.echo(f"  {f}: {m}" if f else f"  {m}", err=True)


def fail(message: str, causes: Iterable[tuple[str, str]] = (), code: int = 1) -> NoReturn:
    """Print ``Error: message`` (and one line per cause) on stderr and exit ``code``."""
    print_error(message, causes)
    raise click.exceptions.Exit(code)


def format_age(timestamp: str, now: datetime) -> str:
    """How long before ``now`` an RFC 3339 ``timestamp`` was: 45s, 3m, 5h, 2d."""
    try:
        t = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, a header line first; no trailing blanks."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in [list(headers), *rows]
    ]
    return "\n".join(lines)


def dump(answer: Any, output: str) -> None:
    """Print an API answer as is: ``output`` is "json" or "yaml"."""
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(answer, sort_keys=False, default_flow_style=False), nl=False)


def _origin(item: Mapping[str, Any]) -> str:
    labels = item.get("labels") or {}
    origin = str(labels.get(LABEL_ORIGIN, ""))
    zone = labels.get(LABEL_ZONE)
    return f"{origin} ({zone})" if origin == "zone" and zone else origin or "-"


def _mtls(item: Mapping[str, Any]) -> str:
    """A Mesh's mTLS column: the enabled backend and its type, or off."""
    mtls = item.get("mtls") or {}
    backends = {b.get("name"): b.get("type") for b in mtls.get("backends") or []}
    enabled = mtls.get("enabledBackend")
    if enabled in backends:
        return f"{enabled} ({backends[enabled]})"
    return f"off ({len(backends)} backends)" if backends else "off"


def _render_table(kind: Kind, items: Sequence[Mapping[str, Any]]) -> str:
    now = datetime.now(UTC)
    headers = (["MESH"] if kind is Kind.SECRET else []) + ["NAME"]
    headers += (["MTLS"] if kind is Kind.MESH else []) + ["ORIGIN", "AGE"]
    rows = []
    for it in items:
        row = [str(it.get("mesh", ""))] if kind is Kind.SECRET else []
        row += [str(it.get("name", ""))] + ([_mtls(it)] if kind is Kind.MESH else [])
        row += [_origin(it), format_age(str(it.get("creationTime", "")), now)]
        rows.append([safe_text(cell) for cell in row])  # what the server sent, made safe
    return table(headers, rows)


def print_resources(kind: Kind, answer: Any, output: str, single: bool) -> None:
    """Print a get's answer: one resource (``single``) or a list, as a table, json or yaml."""
    if output in ("json", "yaml"):
        dump(answer, output)
    else:
        items = [answer] if single else list(answer.get("items") or [])
        if not items:
            click.echo(f"No {kind} resources found.", err=True)
            return
        click.echo(_render_table(kind, items))
