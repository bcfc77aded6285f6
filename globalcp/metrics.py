"""Global's Prometheus metrics, served at /metrics.

Zone figures are read from the zone tracker at scrape time (one source of truth with the
API), except the propagation histogram, observed as acknowledgements arrive. Each daemon has
its own registry, so several can run in one test process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from globalcp.zones import KINDS, ZoneStatusView
from kds.logging import lost_log_lines

__all__ = ["GlobalMetrics"]

# Commit on global to acknowledgement from a connected zone: loopback is ~1 ms, a WAN tens.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _ZonesCollector(Collector):
    def __init__(self) -> None:
        self.views: Sequence[ZoneStatusView] = ()
        self.head = 0
        self.snapshots = (0, 0)  # streams sending a snapshot, streams waiting for a turn

    def collect(self) -> Iterator[Metric]:
        views = self.views
        yield CounterMetricFamily(
            "kds_log_lines_lost", "Log lines dropped because stderr could not take them.",
            lost_log_lines(),
        )  # fmt: skip
        yield GaugeMetricFamily("kds_global_revision", "Global's current revision.", self.head)
        yield GaugeMetricFamily(
            "kds_global_snapshot_streams_sending",
            "Zone streams sending a snapshot (at most --snapshot-streams).",
            self.snapshots[0],
        )
        yield GaugeMetricFamily(
            "kds_global_snapshot_streams_waiting",
            "Zone streams waiting for a turn to send the snapshot their zone needs.",
            self.snapshots[1],
        )
        yield GaugeMetricFamily(
            "kds_global_zones_connected",
            "Zones with a live sync stream.",
            sum(1 for v in views if v.state.online),
        )
        yield GaugeMetricFamily("kds_global_zones_known", "Zones global has ever seen.", len(views))

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["zone"])

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=labels)

        online = gauge("kds_global_zone_online", "1 if the zone's stream is live, else 0.")
        acked = gauge("kds_global_zone_acked_revision", "Last revision the zone acknowledged.")
        lag = gauge("kds_global_zone_lag_revisions", "Global's revision minus the zone's.")
        lag_s = gauge(
            "kds_global_zone_lag_seconds",
            "Age of the oldest change the zone has not acknowledged (0 when caught up).",
        )
        conflicts = gauge(
            "kds_global_zone_conflicts", "Zone-local resources shadowing global ones."
        )
        refused = gauge(
            "kds_global_zone_refused_resources",
            "Changes the zone refuses now, as this global instance last heard (0 once applied).",
        )
        messages = counter(
            "kds_global_zone_messages_sent", "Sync batches sent to the zone.", ["zone"]
        )
        messages_acked = counter(
            "kds_global_zone_messages_acknowledged",
            "Sync batches the zone acknowledged.",
            ["zone"],
        )
        sent = counter("kds_global_zone_resources_sent", "Resource changes sent.", ["zone", "type"])
        acknowledged = counter(
            "kds_global_zone_resources_acknowledged",
            "Resource changes the zone acknowledged.",
            ["zone", "type"],
        )
        rejected = counter(
            "kds_global_zone_resources_rejected",
            "Resource changes the zone refused to apply.",
            ["zone", "type"],
        )
        errors = counter(
            "kds_global_zone_errors", "Errors: rejections, refusals, protocol errors.", ["zone"]
        )
        reconnects = counter(
            "kds_global_zone_reconnects", "Streams accepted after the zone's first.", ["zone"]
        )
        checks = counter(
            "kds_global_zone_anti_entropy_checks",
            "Anti-entropy checks by result: equal, repair, differed, inconclusive.",
            ["zone", "result"],
        )
        repaired = counter(
            "kds_global_zone_anti_entropy_repaired",
            "Synced resources anti-entropy repaired on the zone.",
            ["zone"],
        )
        slowed = counter(
            "kds_global_zone_read_slowed_seconds",
            "Seconds global waited to read the zone's next message: it sent more than its "
            "stream's byte budget.",
            ["zone"],
        )
        for v in views:
            s, z = v.state, [v.state.name]
            online.add_metric(z, 1 if s.online else 0)
            acked.add_metric(z, s.acked_revision)
            lag.add_metric(z, v.lag_revisions)
            if v.lag_seconds is not None:
                lag_s.add_metric(z, v.lag_seconds)
            conflicts.add_metric(z, s.conflict_count)
            refused.add_metric(z, v.refused_count)
            messages.add_metric(z, s.messages_sent)
            messages_acked.add_metric(z, s.messages_acked)
            errors.add_metric(z, s.errors)
            reconnects.add_metric(z, max(0, s.connections - 1))
            repaired.add_metric(z, s.repaired)
            slowed.add_metric(z, round(s.read_slowed_s, 3))
            for result in ("equal", "repair", "differed", "inconclusive"):
                checks.add_metric([s.name, result], s.checks.get(result, 0))
            for kind in KINDS:
                sent.add_metric([s.name, kind], s.sent.get(kind, 0))
                acknowledged.add_metric([s.name, kind], s.acknowledged.get(kind, 0))
                rejected.add_metric([s.name, kind], s.rejected.get(kind, 0))
        yield from (
            online,
            acked,
            lag,
            lag_s,
            conflicts,
            refused,
            messages,
            messages_acked,
            sent,
            acknowledged,
            rejected,
            errors,
            reconnects,
            checks,
            repaired,
            slowed,
        )


class GlobalMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self._zones = _ZonesCollector()
        self.registry.register(self._zones)
        self.propagation = Histogram(
            "kds_global_propagation_seconds",
            "Commit on global to acknowledgement by a connected zone, per acknowledged batch.",
            ["zone"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Not per zone: whoever was refused proved no zone name, and any name can be claimed.
        self.token_refusals = Counter(
            "kds_global_zone_token_refusals",
            "Sync streams refused for their zone token, by gRPC status code.",
            ["code"],
            registry=self.registry,
        )

    def token_refused(self, code: str) -> None:
        """A stream's zone token was refused (with this gRPC status code name)."""
        self.token_refusals.labels(code).inc()

    def observe_propagation(self, zone: str, seconds: float) -> None:
        self.propagation.labels(zone).observe(seconds)

    def propagation_summary(self) -> dict[str, Any]:
        """The propagation histogram as JSON: bucket bounds (seconds) and, per zone and in
        all, the observations at or under each bound (cumulative), their count and sum."""
        zones: dict[str, dict[str, Any]] = {}
        for metric in self.propagation.collect():
            for sample in metric.samples:
                zone = sample.labels.get("zone", "")
                z = zones.setdefault(zone, {"counts": [], "count": 0, "sum": 0.0})
                if sample.name.endswith("_bucket") and sample.labels.get("le") != "+Inf":
                    z["counts"].append(int(sample.value))
                elif sample.name.endswith("_count"):
                    z["count"] = int(sample.value)
                elif sample.name.endswith("_sum"):
                    z["sum"] = round(sample.value, 6)
        total = {
            "counts": [sum(c) for c in zip(*(z["counts"] for z in zones.values()), strict=True)]
            or [0] * len(LATENCY_BUCKETS),
            "count": sum(z["count"] for z in zones.values()),
            "sum": round(sum(z["sum"] for z in zones.values()), 6),
        }
        return {"buckets": list(LATENCY_BUCKETS), "total": total, "zones": zones}

    def update(
        self, head: int, views: Sequence[ZoneStatusView], snapshots: tuple[int, int] = (0, 0)
    ) -> None:
        """Set the zone figures the next scrape reports (called just before it);
        ``snapshots``: streams sending a snapshot, and waiting for a turn to."""
        self._zones.head = head
        self._zones.views = views
        self._zones.snapshots = snapshots
