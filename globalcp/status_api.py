"""Global's zone status on its HTTP API, and the status page.

    GET /zones                    {"total", "items": [summary], "next": null, "globalRevision"}
    GET /zones/_overview          {"total", "items": [ZoneOverview], "next": null, "globalRevision"}
    GET /zones/{name}             summary of one zone (404 if global never saw it)
    GET /zones/{name}/_overview   one zone's ZoneOverview
    GET /zones/{name}/events      {"name", "events": [...], "lag": [...]}: the zone's newest
                                  events (?limit=, default 200, at most 1000) and its lag
                                  samples of the last hour (globalcp.history), oldest first
    GET /gui                      the status page (static HTML that polls /zones/_overview)

A summary is what ``kdsctl inspect zones`` tabulates (globalcp.zones.ZoneStatusView). A
ZoneOverview is Kuma's shape, which ``kumactl inspect zones`` reads, with this project's
overview of the zone (summary, per-type counters, conflict names, last error, last sync mode)
in its added ``kdsSync`` field (globalcp.zone_overview).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from globalcp.history import KEEP
from globalcp.zone_overview import zone_overview
from globalcp.zones import ZoneStatusView, ZoneTracker
from kds.api import int_param
from kds.errors import NotFound

__all__ = ["zone_routes"]

# Events a /zones/{name}/events answer holds unless ?limit= says otherwise; lag samples it
# holds: those of the last LAG_WINDOW seconds.
EVENTS_SHOWN = 200
LAG_WINDOW = 3600.0


def _listing(views: list[ZoneStatusView], detail: bool, head: int) -> dict[str, Any]:
    items = [zone_overview(v) if detail else v.summary() for v in views]
    return {"total": len(items), "items": items, "next": None, "globalRevision": head}


def zone_routes(tracker: ZoneTracker) -> list[web.RouteDef]:
    page = resources.files("globalcp").joinpath("status.html").read_text(encoding="utf-8")

    async def one(request: web.Request, detail: bool) -> web.Response:
        name = request.match_info["name"]
        view = await tracker.view(name)
        if view is None:
            raise NotFound(f"zone {name!r} is not known to global (it never connected)")
        return web.json_response(zone_overview(view) if detail else view.summary())

    async def list_zones(request: web.Request) -> web.Response:
        return web.json_response(_listing(await tracker.views(), False, tracker.hub.head))

    async def list_overviews(request: web.Request) -> web.Response:
        return web.json_response(_listing(await tracker.views(), True, tracker.hub.head))

    async def get_zone(request: web.Request) -> web.Response:
        return await one(request, False)

    async def get_overview(request: web.Request) -> web.Response:
        return await one(request, True)

    async def events(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if await tracker.view(name) is None:
            raise NotFound(f"zone {name!r} is not known to global (it never connected)")
        limit = min(int_param(request, "limit", EVENTS_SHOWN, 0) or 0, KEEP)
        history = await tracker.history.read(name, limit, tracker.clock() - LAG_WINDOW)
        return web.json_response({"name": name, **history})

    async def gui(request: web.Request) -> web.Response:
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                # The page runs only its own inline script and talks only to this server.
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; connect-src 'self'"
                ),
            },
        )

    return [
        web.get("/zones", list_zones),
        web.get("/zones/_overview", list_overviews),
        web.get("/zones/{name}", get_zone),
        web.get("/zones/{name}/_overview", get_overview),
        web.get("/zones/{name}/events", events),
        web.get("/gui", gui),
    ]
