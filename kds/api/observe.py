"""What both daemons serve for machines: liveness, readiness and Prometheus metrics.

    GET /healthz   200 {"status": "alive", ...} while the process can do its job, else 503
    GET /readyz    200 {"status": "ready", ...} once it can serve, else 503 with the reason
    GET /metrics   Prometheus text format (prometheus_client)

These never show resource data, only counts, revisions and names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["Check", "health_routes", "metrics_route"]

# A check answers (ok, details); details are shown in the JSON body either way.
Check = Callable[[], tuple[bool, dict[str, Any]]]


def _check_handler(check: Check, ok_status: str, failed_status: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        ok, details = check()
        body = {"status": ok_status if ok else failed_status, **details}
        return web.json_response(body, status=200 if ok else 503)

    return handler


def health_routes(live: Check, ready: Check) -> list[web.RouteDef]:
    return [
        web.get("/healthz", _check_handler(live, "alive", "failing")),
        web.get("/readyz", _check_handler(ready, "ready", "not ready")),
    ]


def metrics_route(
    registry: CollectorRegistry, before: Callable[[], Awaitable[None]] | None = None
) -> web.RouteDef:
    """``before`` runs ahead of each scrape (to read figures that need the store)."""

    async def handler(request: web.Request) -> web.Response:
        if before is not None:
            await before()
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web.get("/metrics", handler)
