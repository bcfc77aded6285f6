"""kdsctl's sync status commands: inspect zones / zone / sync (wait synced: kdsctl.wait).

    kdsctl inspect zones              every zone global knows, as a table
    kdsctl inspect zone NAME          one zone in detail (per-type counters, conflicts, refusals)
    kdsctl inspect sync               against a zone's API: that zone's own view

Times shown as "ago" are measured against the server's clock (its Date header), so a skewed
clock on the machine running kdsctl does not distort them. Every value that came from the API
is printed through ``safe_text`` (a zone's instance id, version, conflicts and errors are what
the zone sent). ``kdsctl.cli`` adds the group here to the root.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import click

from kdsctl.client import ApiClient, Response, pass_client
from kdsctl.render import dump, fail, format_age, safe_text, table

__all__ = ["inspect"]

_OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format; json and yaml print the API answer as is.",
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return table(headers, [[safe_text(cell) for cell in row] for row in rows])


def _server_now(resp: Response) -> datetime:
    try:
        return parsedate_to_datetime(resp.headers.get("Date", "")).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _get(client: ApiClient, path: str) -> tuple[Any, datetime]:
    resp = client.request("GET", path)
    try:
        return resp.json(), _server_now(resp)
    except ValueError:
        fail(f"GET {path}: the answer is not JSON; is --api-url a kds control plane?")


def _role(client: ApiClient) -> str:
    index, _ = _get(client, "/")
    return str(index.get("role", "")) if isinstance(index, Mapping) else ""


def _need_role(client: ApiClient, role: str, command: str) -> None:
    actual = _role(client)
    if actual != role:
        other = "a zone's" if role == "zone" else "global's"
        fail(
            f"{command} needs {other} API, but {client.shown_url} is a {safe_text(actual, 64) or 'unknown'} "
            "control plane (see --api-url)"
        )


def _ago(timestamp: str | None, now: datetime) -> str:
    return "never" if not timestamp else format_age(timestamp, now)


def _since(timestamp: str | None, now: datetime) -> str:
    return "never" if not timestamp else f"{format_age(timestamp, now)} ago"


def _lag(z: Mapping[str, Any]) -> str:
    lag = int(z.get("lagRevisions") or 0)
    seconds = z.get("lagSeconds")
    if lag and isinstance(seconds, int | float):
        return f"{lag} ({seconds:.1f}s)"
    return str(lag)


# --------------------------------------------------------------------------- inspect


@click.group()
def inspect() -> None:
    """Show sync status: zones (on global) or this zone's sync (on a zone)."""


@inspect.command("zones")
@_OUTPUT
@pass_client
def inspect_zones(client: ApiClient, output: str) -> None:
    """List every zone global knows, with its sync status.

    \b
    LAST CONNECTED AGO  since the zone's current (or last) stream was accepted
    LAST UPDATED AGO    since the zone last acknowledged a batch
    REVISION LAG        global's revision minus the zone's acknowledged one (and its age)
    TOTAL UPDATES       resource changes the zone acknowledged
    TOTAL ERRORS        rejected resources, refused streams, protocol errors
    CONFLICTS           zone-local resources shadowing global ones (names: inspect zone)

    Below the table, a line per zone that reports a problem (its disk is full, say) and per
    zone that refuses changes global sent (which and why: inspect zone).
    """
    _need_role(client, "global", "inspect zones")
    answer, now = _get(client, "/zones")
    if output != "table":
        dump(answer, output)
        return
    items = answer.get("items") or []
    if not items:
        click.echo("No zones have connected to this global yet.", err=True)
        return
    headers = [
        "NAME",
        "STATUS",
        "LAST CONNECTED AGO",
        "LAST UPDATED AGO",
        "REVISION LAG",
        "TOTAL UPDATES",
        "TOTAL ERRORS",
        "CONFLICTS",
        "ZONE-CP VERSION",
        "BACKEND",
    ]
    rows = [
        [
            str(z["name"]),
            str(z["status"]),
            _ago(z.get("connectedAt"), now),
            _ago(z.get("lastUpdateAt"), now),
            _lag(z),
            str(z.get("totalUpdates", 0)),
            str(z.get("totalErrors", 0)),
            str(z.get("conflictCount", 0)),
            str(z.get("zoneVersion") or "-"),
            str(z.get("storeBackend") or "-"),
        ]
        for z in items
    ]
    if any(z.get("globalInstance") for z in items):  # the instance holding each zone's stream
        headers.append("GLOBAL INSTANCE")
        for row, z in zip(rows, items, strict=True):
            row.append(str(z.get("globalInstance") or "-"))
    click.echo(_table(headers, rows))
    failing = [z for z in items if z.get("problem")]
    refusing = [z for z in items if isinstance(z.get("refusedCount"), int) and z["refusedCount"]]
    if failing or refusing:
        click.echo()
    for z in failing:
        click.echo(f"{safe_text(z['name'])} reports: {_problem_line(z, now)}")
    for z in refusing:
        name = safe_text(z["name"])
        click.echo(
            f"{name} refuses {z['refusedCount']} change(s) global sent (kdsctl inspect zone {name})"
        )


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{k + ':':<{width}} {safe_text(v)}" for k, v in pairs)


def _sync_mode(mode: object) -> str:
    if mode == "snapshot":
        return "snapshot (the zone was sent global's full state)"
    if mode == "resume":
        return "resume (the zone was sent the changes since its revision)"
    return str(mode or "-")


def _error_line(z: Mapping[str, Any], now: datetime) -> str:
    last = z.get("lastError")
    if not last:
        return "none"
    return f"{last['message']} ({_since(last.get('time'), now)})"


def _problem_line(z: Mapping[str, Any], now: datetime) -> str:
    problem = z.get("problem")
    if not problem:
        return "none"
    return f"{safe_text(problem['message'])} (since {_since(problem.get('since'), now)})"


def _names(names: object, count: object) -> str:
    shown = [safe_text(n) for n in names] if isinstance(names, list) else []
    total = count if isinstance(count, int) else len(shown)
    more = f" (+{total - len(shown)} more)" if total > len(shown) else ""
    return ", ".join(shown) + more


def _event_text(e: Mapping[str, Any]) -> str:
    """One history event as a line; what the zone sent is escaped by the caller's table."""
    kind = e.get("type")
    if kind == "connected":
        return (
            f"connected: instance {e.get('instance')}, version {e.get('version')}, {e.get('mode')}"
        )
    if kind == "disconnected":
        return f"disconnected: {e.get('reason')}"
    if kind == "refused":
        return f"refused: {e.get('reason')}"
    if kind == "token-refused":
        more = f" (and {e['more']} more)" if e.get("more") else ""
        return f"token refused ({e.get('code')}): {e.get('reason')}{more}"
    if kind == "conflicts":
        parts = [f"{e.get('count')} now"]
        if e.get("startedCount"):
            parts.append("started " + _names(e.get("started"), e.get("startedCount")))
        if e.get("endedCount"):
            parts.append("ended " + _names(e.get("ended"), e.get("endedCount")))
        return "conflicts: " + "; ".join(parts)
    return str(kind)


def _lag_line(samples: Sequence[Mapping[str, Any]]) -> str:
    if not samples:
        return "no samples"
    worst = max((s["revisions"] for s in samples if isinstance(s.get("revisions"), int)), default=0)
    seconds = [float(s["seconds"]) for s in samples if isinstance(s.get("seconds"), int | float)]
    age = f", oldest unacknowledged change {max(seconds):.1f}s old" if seconds else ""
    return f"at most {worst} revision(s) behind{age} ({len(samples)} samples)"


def _print_history(client: ApiClient, name: str, shown: int, now: datetime) -> None:
    history, _ = _get(client, f"/zones/{quote(name, safe='')}/events?limit={shown}")
    click.echo()
    click.echo(f"Lag over the last hour: {_lag_line(history.get('lag') or [])}")
    events = history.get("events") or []
    click.echo()
    if not events:
        click.echo("Events: none recorded")
        return
    click.echo(f"Events (the last {len(events)}, oldest first):")
    rows = [[f"{_ago(e.get('time'), now)} ago", _event_text(e)] for e in events]
    click.echo("\n".join("  " + line for line in _table(["WHEN", "WHAT"], rows).splitlines()))


@inspect.command("zone")
@click.argument("name")
@_OUTPUT
@click.option(
    "--events",
    "shown",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    metavar="N",
    help="Show the zone's last N events (connects, disconnects and why, refusals, conflicts "
    "starting and ending) and its lag over the last hour; 0 leaves them out. Table only.",
)
@pass_client
def inspect_zone(client: ApiClient, name: str, output: str, shown: int) -> None:
    """Show the zone NAME in detail: connection, revisions, per-type counters, conflicts,
    its lag over the last hour and its recent events.

    -o json and -o yaml print the API's answer: Kuma's ZoneOverview, with these figures in
    its kdsSync field (the events are at GET /zones/NAME/events).
    """
    _need_role(client, "global", "inspect zone")
    answer, now = _get(client, f"/zones/{quote(name, safe='')}/_overview")
    if output != "table":
        dump(answer, output)
        return
    z = answer.get("kdsSync") if isinstance(answer, Mapping) else None
    if not isinstance(z, Mapping):
        fail(f"GET /zones/{name}/_overview: the answer has no kdsSync field; is this a kds global?")
    if z["status"] == "Online":
        status = f"Online since {z['connectedAt']} ({_since(z['connectedAt'], now)})"
    else:
        since = z.get("disconnectedAt")
        why = f": {z['disconnectReason']}" if z.get("disconnectReason") else ""
        status = f"Offline since {since}{why}" if since else "Offline (never connected)"
    pairs = [
        ("Zone", str(z["name"])),
        ("Status", status),
        ("Instance", str(z.get("instanceId") or "-")),
        *([("Global instance", str(z["globalInstance"]))] if z.get("globalInstance") else []),
        (
            "Zone CP",
            f"version {z.get('zoneVersion') or '-'}, protocol {z.get('protocolVersion') or '-'}, "
            f"store {z.get('storeBackend') or '-'}",
        ),
        (
            "Revision",
            f"acknowledged {z['ackedRevision']} of {z['globalRevision']} (lag {_lag(z)})",
        ),
        ("Last sync", _sync_mode(z.get("lastSyncMode"))),
        ("Last message", _since(z.get("lastMessageAt"), now)),
        ("Last update", _since(z.get("lastUpdateAt"), now)),
        ("Connections", str(z.get("connections", 0))),
        ("Messages sent", str(z.get("messagesSent", 0))),
        ("Zone problem", _problem_line(z, now)),
        ("Errors", f"{z.get('totalErrors', 0)}; last: {_error_line(z, now)}"),
    ]
    click.echo(_fields(pairs))
    click.echo()
    resources = z.get("resources") or {}
    click.echo(
        _table(
            ["TYPE", "SENT", "ACKNOWLEDGED", "REJECTED"],
            [
                [kind, str(c["sent"]), str(c["acknowledged"]), str(c["rejected"])]
                for kind, c in resources.items()
            ],
        )
    )
    conflicts = z.get("conflicts") or []
    count = int(z.get("conflictCount") or len(conflicts))
    click.echo()
    if not count:
        click.echo("Conflicts: none")
    elif count > len(conflicts):
        click.echo(f"Conflicts ({count}, the first {len(conflicts)} shown):")
    else:
        click.echo(f"Conflicts ({count}):")
    for c in conflicts:
        click.echo(f"  {safe_text(c)}")
    _print_refused(z)
    if shown:
        _print_history(client, name, shown, now)


def _ready_line(st: Mapping[str, Any], standby: bool) -> str:
    if standby:
        return "standby (serves what the leader applies)"
    return "yes" if st["ready"] else "no"


def _leader_line(leader: Mapping[str, Any]) -> str:
    """Several instances of a zone on PostgreSQL: which one holds the stream to global."""
    who = "this instance" if leader.get("thisInstance") else str(leader.get("instanceId") or "-")
    return f"{who} (epoch {leader.get('epoch', '-')})"


def _print_refused(z: Mapping[str, Any]) -> None:
    refused = z.get("refused")
    refused = [r for r in refused if isinstance(r, Mapping)] if isinstance(refused, list) else []
    count = int(z.get("refusedCount") or len(refused))
    if not count:
        return  # an older global, or nothing refused
    more = f", the newest {len(refused)} shown" if count > len(refused) else ""
    click.echo()
    click.echo(f"Refused by the zone ({count}{more}; global sends them again at each check):")
    for r in refused:
        click.echo("  " + safe_text(f"{r.get('key')}: {r.get('reason')}"))


@inspect.command("sync")
@_OUTPUT
@pass_client
def inspect_sync(client: ApiClient, output: str) -> None:
    """Against a zone's API: the zone's own view of its sync with global."""
    _need_role(client, "zone", "inspect sync")
    st, now = _get(client, "/status")
    if output != "table":
        dump(st, output)
        return
    g = st.get("global") or {}
    leader = st.get("leader") if isinstance(st.get("leader"), Mapping) else None
    standby = leader is not None and not leader.get("thisInstance")
    if standby:
        link = "not connected: a standby; the leader holds the stream"
    elif st["connected"]:
        link = f"connected since {st['connectedSince']} ({_since(st['connectedSince'], now)})"
    else:
        link = "NOT connected" + (
            f" since {st['disconnectedAt']}" if st.get("disconnectedAt") else ""
        )
    applied = (
        f"{st['appliedRevision']} at {st.get('appliedAt') or '-'} "
        f"(global at {st['globalRevision']} as last heard, lag {st['lagRevisions']})"
    )
    pairs = [
        ("Zone", str(st["zone"])),
        ("Global", f"{g.get('address')} ({link})"),
        ("Global instance", str(g.get("instanceId") or "-")),
        *([("Leader", _leader_line(leader))] if leader is not None else []),
        ("Ready", _ready_line(st, standby)),
        ("Applied revision", "- (the leader's: inspect sync on it)" if standby else applied),
        ("Last message", _since(st.get("lastMessageAt"), now)),
        ("Connections", str(st.get("connections", 0))),
        ("Problem", _problem_line(st, now)),
        ("Last error", _error_line(st, now)),
    ]
    click.echo(_fields(pairs))
    click.echo()
    rows = [
        [
            kind,
            str(c["synced"]),
            str(c["local"]),
            str(st["applied"].get(kind, 0)),
            str(st["rejected"].get(kind, 0)),
        ]
        for kind, c in (st.get("resources") or {}).items()
    ]
    click.echo(_table(["TYPE", "SYNCED", "LOCAL", "APPLIED", "REJECTED"], rows))
    conflicts = st.get("conflicts") or []
    click.echo()
    click.echo(f"Conflicts ({len(conflicts)}):" if conflicts else "Conflicts: none")
    for c in conflicts:
        where = f"{c['mesh']}/{c['name']}" if c.get("mesh") else c["name"]
        click.echo(f"  {safe_text(c['type'])} {safe_text(where)}: this zone's own copy is served")
