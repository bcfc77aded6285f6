"""What the status page shows beside the zones: which zones hold each resource, and how
fast changes reach them.

    GET /zones/_resources     every Mesh, Secret and GlobalSecret by name (never data), and
                              for each, the zones that hold global's current copy, those that
                              keep their own copy instead (a name conflict), and those that
                              have not acknowledged it yet
    GET /zones/_propagation   global's propagation histogram (commit to acknowledgement):
                              bucket bounds and cumulative counts, per zone and in all

A zone holds global's copy of a resource once it acknowledged the revision that last wrote
it (the resource's version on global) and does not report a conflict on its key; a zone
that reports one keeps its own resource of that name. Only zones that ever connected are
counted. The list is cut at MAX_RESOURCES (``truncated`` says so); ``total`` counts all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from globalcp.zone_state import key_label
from globalcp.zones import ZoneTracker
from kds.model import Kind

__all__ = ["MAX_RESOURCES", "inventory_routes"]

MAX_RESOURCES = 1000


async def _resources(tracker: ZoneTracker) -> dict[str, Any]:
    zones = [z for z in sorted(tracker.zones.values(), key=lambda z: z.name) if z.connected_at]
    conflicts = {z.name: set(z.conflicts) for z in zones}
    items: list[dict[str, Any]] = []
    total = 0
    for kind in (Kind.MESH, Kind.SECRET, Kind.GLOBAL_SECRET):
        # Only the keys shown are read (a page, names and versions, never data), however
        # many the store holds: the page is open to the read-only token and polled by the
        # status page.
        count, keys = await tracker.store.versions_page(kind, max(MAX_RESOURCES - len(items), 1))
        total += count
        for key, version in keys:
            if len(items) >= MAX_RESOURCES:
                break
            held, own, pending = [], [], []
            for z in zones:
                if key_label(key.kind, key.mesh, key.name) in conflicts[z.name]:
                    own.append(z.name)
                elif z.acked_revision >= version:
                    held.append(z.name)
                else:
                    pending.append(z.name)
            items.append(
                {
                    "type": str(key.kind),
                    "mesh": key.mesh or None,
                    "name": key.name,
                    "origin": "global",  # all of global's resources are
                    "revision": version,
                    "zones": {"held": held, "ownCopy": own, "pending": pending},
                }
            )
    return {
        "globalRevision": tracker.hub.head,
        "zones": [z.name for z in zones],
        "total": total,
        "truncated": total > len(items),
        "items": items,
    }


def inventory_routes(
    tracker: ZoneTracker, propagation: Callable[[], dict[str, Any]]
) -> list[web.RouteDef]:
    async def resources(request: web.Request) -> web.Response:
        return web.json_response(await _resources(tracker))

    async def latency(request: web.Request) -> web.Response:
        return web.json_response(propagation())

    return [
        web.get("/zones/_resources", resources),
        web.get("/zones/_propagation", latency),
    ]
