"""Global's zone status on its HTTP API, and the status page.

    GET /zones                    {"total", "items": [summary], "next": null, "globalRevision"}
    GET /zones/_overview          {"total", "items": [overview], "next": null, "globalRevision"}
    GET /zones/{name}             summary of one zone (404 if global never saw it)
    GET /zones/{name}/_overview   overview of one zone: summary + per-type counters,
                                  conflict names and the last error
    GET /gui                      the status page (static HTML that polls /zones/_overview)

A summary is what ``kdsctl inspect zones`` tabulates; see globalcp.zones.ZoneStatusView.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from globalcp.zones import ZoneStatusView, ZoneTracker
from kds.errors import NotFound

__all__ = ["zone_routes"]


def _listing(views: list[ZoneStatusView], detail: bool, head: int) -> dict[str, Any]:
    items = [v.overview() if detail else v.summary() for v in views]
    return {"total": len(items), "items": items, "next": None, "globalRevision": head}


def zone_routes(tracker: ZoneTracker) -> list[web.RouteDef]:
    page = resources.files("globalcp").joinpath("status.html").read_text(encoding="utf-8")

    async def one(request: web.Request, detail: bool) -> web.Response:
        name = request.match_info["name"]
        view = await tracker.view(name)
        if view is None:
            raise NotFound(f"zone {name!r} is not known to global (it never connected)")
        return web.json_response(view.overview() if detail else view.summary())

    async def list_zones(request: web.Request) -> web.Response:
        return web.json_response(_listing(await tracker.views(), False, tracker.hub.head))

    async def list_overviews(request: web.Request) -> web.Response:
        return web.json_response(_listing(await tracker.views(), True, tracker.hub.head))

    async def get_zone(request: web.Request) -> web.Response:
        return await one(request, False)

    async def get_overview(request: web.Request) -> web.Response:
        return await one(request, True)

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
        web.get("/gui", gui),
    ]
