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
    "resource_age",
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
    t = _parse_time(timestamp)
    if t is None:
        return "<unknown>"
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def resource_age(timestamp: str, now: datetime) -> str:
    """A resource table's AGE, as kumactl's tables say it (its table.Duration): 45s, 3m,
    5h, 2d, 3y; ``never`` for a time ahead of ``now``."""
    t = _parse_time(timestamp)
    if t is None:
        return "<unknown>"
    s = int((now - t).total_seconds())
    if s < -1:
        return "never"
    for unit, size, below in (("s", 1, 60), ("m", 60, 3600), ("h", 3600, 86400)):
        if s < below:
            return f"{max(s, 0) // size}{unit}"
    hours = s // 3600
    return f"{hours // 24}d" if hours < 24 * 365 else f"{hours // 24 // 365}y"


def _parse_time(timestamp: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, a header line first; no trailing blanks."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
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


def _mesh_cells(item: Mapping[str, Any]) -> list[str]:
    """A Mesh's columns as kumactl's table has them: mTLS (the enabled backend as
    TYPE/NAME, or off), LOCALITY and ZONEEGRESS (on or off)."""
    mtls = item.get("mtls")
    mtls = mtls if isinstance(mtls, Mapping) else {}
    listed = mtls.get("backends")
    backends = {
        str(b.get("name")): str(b.get("type"))
        for b in (listed if isinstance(listed, list) else [])
        if isinstance(b, Mapping)
    }
    enabled = str(mtls.get("enabledBackend"))
    cells = [f"{backends[enabled]}/{enabled}" if enabled in backends else "off"]
    routing = item.get("routing")
    for key in ("localityAwareLoadBalancing", "zoneEgress"):
        on = isinstance(routing, Mapping) and routing.get(key) is True
        cells.append("on" if on else "off")
    return cells


def _render_table(kind: Kind, items: Sequence[Mapping[str, Any]]) -> str:
    """kumactl's columns (a Mesh's mTLS, LOCALITY and ZONEEGRESS; a Secret's MESH), then
    kds-sync's ORIGIN, then kumactl's AGE: the time since the last change."""
    now = datetime.now(UTC)
    headers = (["MESH"] if kind is Kind.SECRET else []) + ["NAME"]
    headers += (["mTLS", "LOCALITY", "ZONEEGRESS"] if kind is Kind.MESH else []) + ["ORIGIN", "AGE"]
    rows = []
    for it in items:
        row = [str(it.get("mesh", ""))] if kind is Kind.SECRET else []
        row += [str(it.get("name", ""))] + (_mesh_cells(it) if kind is Kind.MESH else [])
        row += [_origin(it), resource_age(str(it.get("modificationTime", "")), now)]
        rows.append([safe_text(cell) for cell in row])  # what the server sent, made safe
    return table(headers, rows)


def print_resources(kind: Kind, answer: Any, output: str, single: bool) -> None:
    """Print a get's answer: one resource (``single``) or a list, as a table, json or yaml."""
    if output in ("json", "yaml"):
        dump(answer, output)
    else:
        items = [answer] if single else list(answer.get("items") or [])
        # An empty list prints its header line alone, as kumactl's table does; the note
        # goes to stderr.
        click.echo(_render_table(kind, items))
        if not items:
            click.echo(f"No {kind} resources found.", err=True)
