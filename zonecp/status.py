"""The zone's own view of its sync: GET /status on its API, and its Prometheus metrics.

    GET /status   {"zone", "connected", "ready", "global": {...}, "appliedRevision",
                   "appliedAt", "globalRevision", "lagRevisions", "resources": {type:
                   {"synced", "local"}}, "conflicts": [...], "lastSync": {"mode":
                   "resume"|"snapshot", "fromRevision"}, "resumes", "snapshots",
                   "antiEntropy": {"checks", "lastCheckAt", "repaired",
                   "lastRepaired", ...}, "problem": {"message", "since"} (why the zone cannot apply what
                   global sends, e.g. its disk is full; null when nothing is wrong),
                   "lastError", ...}

Counts and names only: never resource data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kds.clock import rfc3339
from kds.logging import lost_log_lines
from kds.model import Kind
from kds.store import ZoneStore
from zonecp.client import ZoneClient, ZoneSyncStatus

__all__ = ["ZoneMetrics", "status_document", "status_route"]

KINDS = tuple(str(k) for k in Kind)


def _ts(t: float) -> str | None:
    return rfc3339(dt.datetime.fromtimestamp(t, dt.UTC)) if t else None


def status_document(
    zone: str, st: ZoneSyncStatus, counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    return {
        "zone": zone,
        "connected": st.connected,
        "ready": st.ready,
        "global": {
            "address": st.global_address,
            "instanceId": st.global_instance_id or None,
            "storeId": st.global_store_id or None,
        },
        "connectedSince": _ts(st.connected_since) if st.connected else None,
        "disconnectedAt": None if st.connected else _ts(st.disconnected_at),
        "lastMessageAt": _ts(st.last_message_at),
        "appliedRevision": st.applied_revision,
        "appliedAt": st.applied_at or None,
        "globalRevision": st.global_head,
        "lagRevisions": max(0, st.global_head - st.applied_revision),
        "resources": {
            kind: {"synced": counts[kind]["global"], "local": counts[kind]["zone"]}
            for kind in KINDS
        },
        "applied": {kind: st.applied.get(kind, 0) for kind in KINDS},
        "rejected": {kind: st.rejected.get(kind, 0) for kind in KINDS},
        "batchesApplied": st.batches_applied,
        "conflicts": [{"type": str(k.kind), "mesh": k.mesh, "name": k.name} for k in st.conflicts],
        "connections": st.connections,
        # How the last stream started: resumed after the zone's revision, or a full snapshot.
        "lastSync": (
            {"mode": st.sync_mode, "fromRevision": st.sync_from_revision} if st.sync_mode else None
        ),
        "resumes": st.resumes,
        "snapshots": st.snapshots,
        "failedAttempts": st.attempts,
        "problem": ({"message": st.problem, "since": _ts(st.problem_at)} if st.problem else None),
        # Anti-entropy checks global ran with this zone, and what they repaired here.
        "antiEntropy": {
            "checks": st.checks,
            "lastCheckAt": _ts(st.last_check_at),
            "lastCheckRevision": st.last_check_revision,
            "lastCheckDiffered": st.last_check_differed,
            "repaired": st.repaired,
            "lastRepairAt": _ts(st.last_repair_at),
            "lastRepaired": list(st.last_repaired),
        },
        "lastError": (
            {"message": st.last_error, "time": _ts(st.last_error_at)} if st.last_error else None
        ),
    }


def status_route(
    zone: str,
    client: ZoneClient,
    store: ZoneStore,
    leader: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> web.RouteDef:
    """``leader``: with several instances of the zone on one store, which one holds the
    stream (``{"instanceId", "thisInstance", "epoch"}``); the document's ``leader``."""

    async def handler(request: web.Request) -> web.Response:
        counts = await store.counts()
        doc = status_document(zone, client.status, counts)
        doc["leader"] = await leader() if leader is not None else None
        return web.json_response(doc)

    return web.get("/status", handler)


class _ZoneCollector(Collector):
    def __init__(self, status: ZoneSyncStatus):
        self.status = status
        self.counts: dict[str, dict[str, int]] = {}

    def collect(self) -> Iterator[Metric]:
        st = self.status
        yield CounterMetricFamily(
            "kds_log_lines_lost", "Log lines dropped because stderr could not take them.",
            lost_log_lines(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "kds_zone_connected", "1 while the sync stream to global is up.", int(st.connected)
        )
        yield GaugeMetricFamily(
            "kds_zone_ready", "1 once connected and caught up since start.", int(st.ready)
        )
        yield GaugeMetricFamily(
            "kds_zone_applied_revision", "Last global revision applied.", st.applied_revision
        )
        yield GaugeMetricFamily(
            "kds_zone_global_revision", "Global's revision as last heard.", st.global_head
        )
        yield GaugeMetricFamily(
            "kds_zone_lag_revisions",
            "Global's revision as last heard minus the applied one.",
            max(0, st.global_head - st.applied_revision),
        )
        yield GaugeMetricFamily(
            "kds_zone_conflicts", "Zone-local resources shadowing global ones.", len(st.conflicts)
        )
        yield GaugeMetricFamily(
            "kds_zone_problem",
            "1 while the zone cannot apply what global sends (its store failed: /status says why).",
            int(bool(st.problem)),
        )
        yield CounterMetricFamily(
            "kds_zone_anti_entropy_checks", "Anti-entropy checks global ran.", st.checks
        )
        yield CounterMetricFamily(
            "kds_zone_anti_entropy_repaired",
            "Synced resources repaired by anti-entropy.",
            st.repaired,
        )
        yield CounterMetricFamily(
            "kds_zone_batches_applied", "Sync batches applied.", st.batches_applied
        )
        yield CounterMetricFamily(
            "kds_zone_reconnects",
            "Streams to global after the first since start.",
            max(0, st.connections - 1),
        )
        applied = CounterMetricFamily(
            "kds_zone_resources_applied", "Synced resource changes applied.", labels=["type"]
        )
        rejected = CounterMetricFamily(
            "kds_zone_resources_rejected", "Synced resource changes refused.", labels=["type"]
        )
        for kind in KINDS:
            applied.add_metric([kind], st.applied.get(kind, 0))
            rejected.add_metric([kind], st.rejected.get(kind, 0))
        yield applied
        yield rejected
        held = GaugeMetricFamily(
            "kds_zone_resources",
            "Resources held, by type and origin (global: synced; zone: local).",
            labels=["type", "origin"],
        )
        for kind, by_origin in sorted(self.counts.items()):
            for origin, n in sorted(by_origin.items()):
                held.add_metric([kind, origin], n)
        yield held


class ZoneMetrics:
    def __init__(self, status: ZoneSyncStatus, store: ZoneStore):
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self._collector = _ZoneCollector(status)
        self.registry.register(self._collector)
        self._store = store

    async def before_scrape(self) -> None:
        self._collector.counts = await self._store.counts()
