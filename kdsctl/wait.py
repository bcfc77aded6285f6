"""kdsctl wait synced: exit 0 once the zones acknowledged global's revision and applied it.

    kdsctl wait synced [--zone N]... [--timeout 30s]

Asks global's zone list every --interval; what it prints from the API goes through
``safe_text``. ``kdsctl.cli`` adds the group here to the root.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import quote

import click

from kdsctl.client import ApiClient, duration_param, pass_client
from kdsctl.render import fail, safe_text
from kdsctl.status import _get, _need_role, _since

__all__ = ["wait"]


@click.group()
def wait() -> None:
    """Wait for a condition instead of sleeping in scripts."""


@wait.command("synced")
@click.option(
    "--zone",
    "zones",
    multiple=True,
    metavar="NAME",
    help="A zone to wait for (repeatable). Default: every zone Online when the wait starts, "
    "or every zone global knows if none is.",
)
@click.option(
    "--timeout",
    "wait_for",
    default="30s",
    show_default=True,
    callback=duration_param,
    metavar="DURATION",
    help="Give up after this long (5s, 2m, ...).",
)
@click.option(
    "--interval",
    default="250ms",
    show_default=True,
    callback=duration_param,
    metavar="DURATION",
    help="How often to ask global.",
)
@pass_client
def wait_synced(
    client: ApiClient, zones: tuple[str, ...], wait_for: float, interval: float
) -> None:
    """Exit 0 once the zones have acknowledged global's current revision and applied it.

    The revision is global's when the wait starts; later writes are not waited for. The zones
    are those named with --zone (one that has not connected yet is waited for), else every
    zone Online when the wait starts, else (none is) every zone global knows; with no zone
    known at all there is nothing to wait for (exit 0, said on stderr). On timeout, exits 1 and says
    which zones lag and by how much. Exits 3 when they all acknowledged it but some refuse
    changes global sent (a Mesh a zone keeps while its own secrets live in it, say): global
    keeps sending those changes, and a zone applies them once its reason is gone; until then
    it does not hold what global holds. The message names each change and the zone's reason.
    """
    _need_role(client, "global", "wait synced")
    deadline = time.monotonic() + wait_for
    answer, now = _get(client, "/zones")
    target = int(answer.get("globalRevision", 0))
    known = [z["name"] for z in answer["items"]]
    online = [z["name"] for z in answer["items"] if z["status"] == "Online"]
    # No zone online is no proof of anything: then every zone global knows is waited for.
    wanted = list(zones) or online or known
    if not wanted:
        click.echo("No zone has connected to this global: nothing to wait for.", err=True)
        return
    while True:
        by_name = {z["name"]: z for z in answer["items"]}
        lagging = [n for n in wanted if n not in by_name or by_name[n]["ackedRevision"] < target]
        if not lagging:
            refusing = [n for n in wanted if by_name[n].get("refusedCount")]
            if refusing:
                _refusing(client, refusing, by_name, target)
            names = safe_text(", ".join(wanted))
            click.echo(f"{len(wanted)} zone(s) synced to revision {target}: {names}")
            return
        if time.monotonic() >= deadline:
            fail(
                f"timed out after {wait_for:g}s: {len(lagging)} of {len(wanted)} zone(s) have "
                f"not acknowledged revision {target}",
                [("", safe_text(_behind(n, by_name.get(n), target, now))) for n in lagging],
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        answer, now = _get(client, "/zones")


# A refused change listed per zone when wait synced ends on refusals.
_REFUSED_LISTED = 5


def _refusing(
    client: ApiClient, names: list[str], by_name: Mapping[str, Any], target: int
) -> NoReturn:
    causes: list[tuple[str, str]] = []
    total = 0
    for n in names:
        count = int(by_name[n]["refusedCount"])
        total += count
        causes.append(("", safe_text(f"{n}: refuses {count} change(s); kdsctl inspect zone {n}")))
        overview, _ = _get(client, f"/zones/{quote(n, safe='')}/_overview")
        sync = overview.get("kdsSync") if isinstance(overview, Mapping) else None
        refused = sync.get("refused") if isinstance(sync, Mapping) else None
        for r in (refused if isinstance(refused, list) else [])[-_REFUSED_LISTED:]:
            if isinstance(r, Mapping):
                causes.append(("", "  " + safe_text(f"{r.get('key')}: {r.get('reason')}")))
    fail(
        f"{len(names)} zone(s) acknowledged revision {target} but refuse {total} change(s) "
        "global sent: they do not hold what global holds",
        causes,
        code=3,
    )


def _behind(name: str, z: Mapping[str, Any] | None, target: int, now: datetime) -> str:
    if z is None:
        return f"{name}: has never connected to this global"
    where = f"{name}: {z['status']}, acknowledged {z['ackedRevision']} ({target - z['ackedRevision']} behind)"
    if z["status"] != "Online":
        where += f", offline since {_since(z.get('disconnectedAt'), now)}"
    return where + f", last update {_since(z.get('lastUpdateAt'), now)}"
