"""Sync status with real processes: zones API, zone /status, kdsctl inspect and wait,
readiness, metrics. Global runs with its default keepalive (3 s + 2 s) in the tests that
time how fast a dead zone shows Offline, so the figure is the one users get."""

from __future__ import annotations

import json
import signal
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Cluster, Daemon, b64, wait_for

DEFAULT_KEEPALIVE = ("--keepalive-interval", "3s", "--keepalive-timeout", "2s")


def _zone(g: Daemon, name: str) -> dict:  # type: ignore[type-arg]
    r = g.http.get(f"/zones/{name}/_overview")
    assert r.status_code == 200, r.text
    return r.json()["kdsSync"]  # type: ignore[no-any-return]


def _secret(name: str, value: str, mesh: str = "default") -> dict:  # type: ignore[type-arg]
    return {"type": "Secret", "mesh": mesh, "name": name, "data": b64(value)}


def _metrics(d: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = d.http.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_killed_zone_shows_offline_within_10s_and_online_after_restart(cluster: Cluster) -> None:
    g = cluster.start_global(*DEFAULT_KEEPALIVE)
    a = cluster.start_zone("zone-a")
    cluster.start_zone("zone-b")
    wait_for(lambda: _zone(g, "zone-a")["status"] == "Online", what="zone-a Online")
    first = _zone(g, "zone-a")
    assert first["connections"] == 1 and first["instanceId"].startswith("zone-a-")
    assert first["storeBackend"] == "sqlite" and first["zoneVersion"]

    a.signal(signal.SIGKILL)
    a.proc.wait()  # type: ignore[union-attr]
    killed = time.monotonic()
    wait_for(lambda: _zone(g, "zone-a")["status"] == "Offline", 10, "zone-a Offline")
    offline_after = time.monotonic() - killed
    assert offline_after < 10
    z = _zone(g, "zone-a")
    assert z["disconnectedAt"] and z["disconnectReason"]
    assert _zone(g, "zone-b")["status"] == "Online"

    g.put("/meshes/default/secrets/while-down", _secret("while-down", "v1"))
    head = g.get_json("/zones")["globalRevision"]
    assert _zone(g, "zone-a")["lagRevisions"] == head - z["ackedRevision"] > 0

    a.start()
    wait_for(lambda: _zone(g, "zone-a")["status"] == "Online", 15, "zone-a Online again")
    wait_for(lambda: _zone(g, "zone-a")["ackedRevision"] == head, 10, "zone-a caught up")
    z = _zone(g, "zone-a")
    assert z["connections"] == 2 and z["instanceId"] != first["instanceId"]
    assert z["lagRevisions"] == 0 and z["lagSeconds"] == 0
    assert z["disconnectedAt"] is None
    assert z["lastSyncMode"] == "resume"  # it came back with the revision it had

    # Kuma's shape, as kumactl inspect zones reads it: one subscription, the last stream.
    item = next(i for i in g.get_json("/zones/_overview")["items"] if i["name"] == "zone-a")
    assert item["type"] == "ZoneOverview" and item["kdsSync"]["connections"] == 2
    (sub,) = item["zoneInsight"]["subscriptions"]
    assert sub["zoneInstanceId"] == z["instanceId"] and "disconnectTime" not in sub
    assert sub["connectTime"] == z["connectedAt"] and sub["globalInstanceId"].startswith("global-")
    assert json.loads(sub["config"]) == {"store": {"type": "sqlite"}}
    assert int(sub["status"]["total"]["responsesAcknowledged"]) == z["totalUpdates"]


def test_stopped_zone_shows_lag_and_wait_synced_reports_it(cluster: Cluster) -> None:
    g = cluster.start_global(*DEFAULT_KEEPALIVE)
    cluster.start_zone("zone-a")
    b = cluster.start_zone("zone-b")
    cluster.kdsctl("wait", "synced", "--timeout", "10s")

    b.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    for i in range(5):
        assert g.put(f"/meshes/default/secrets/s{i}", _secret(f"s{i}", "x")).status_code == 201
    head = g.get_json("/zones")["globalRevision"]
    wait_for(lambda: _zone(g, "zone-a")["ackedRevision"] == head, what="zone-a synced")

    r = cluster.kdsctl(
        "wait", "synced", "--zone", "zone-a", "--zone", "zone-b", "--timeout", "1s", check=False
    )
    assert r.returncode == 1
    assert f"1 of 2 zone(s) have not acknowledged revision {head}" in r.stderr
    assert "zone-b:" in r.stderr and "5 behind" in r.stderr
    assert "zone-a:" not in r.stderr

    z = _zone(g, "zone-b")
    assert z["lagRevisions"] == 5 and z["lagSeconds"] > 0
    table = cluster.kdsctl("inspect", "zones").stdout
    row = next(line for line in table.splitlines() if line.startswith("zone-b"))
    assert " 5 (" in row  # REVISION LAG with its age
    m = _metrics(g)
    assert m[("kds_global_zone_lag_revisions", (("zone", "zone-b"),))] == 5
    assert m[("kds_global_zone_lag_revisions", (("zone", "zone-a"),))] == 0

    # A stopped process answers no keepalive ping: global sees the link as dead within
    # keepalive interval + timeout (3 s + 2 s), inside the 10 s the README promises, counted
    # from the SIGSTOP.
    left = 10 - (time.monotonic() - stopped)
    wait_for(lambda: _zone(g, "zone-b")["status"] == "Offline", left, "zone-b Offline")
    assert time.monotonic() - stopped < 10
    assert _zone(g, "zone-b")["lagRevisions"] == 5

    b.signal(signal.SIGCONT)
    r = cluster.kdsctl("wait", "synced", "--zone", "zone-a", "--zone", "zone-b", "--timeout", "30s")
    assert f"2 zone(s) synced to revision {head}" in r.stdout
    assert _zone(g, "zone-b")["lagRevisions"] == 0


def test_wait_synced_fails_clearly_for_a_zone_that_cannot_catch_up(cluster: Cluster) -> None:
    cluster.start_global()
    a = cluster.start_zone("zone-a")
    r = cluster.kdsctl(
        "wait", "synced", "--zone", "zone-a", "--zone", "nowhere", "--timeout", "1s", check=False
    )
    assert r.returncode == 1
    assert "nowhere: has never connected to this global" in r.stderr
    a.stop()
    cluster.kdsctl("apply", "-f", "-", input="type: GlobalSecret\nname: later\ndata: eA==\n")
    r = cluster.kdsctl("wait", "synced", "--zone", "zone-a", "--timeout", "1s", check=False)
    assert r.returncode == 1
    assert "zone-a: Offline, acknowledged" in r.stderr and "1 behind" in r.stderr
    # Default: the zones Online when the wait starts; none is, so every zone global knows:
    # zone-a, offline and behind, is no proof the write reached anything.
    r = cluster.kdsctl("wait", "synced", "--timeout", "1s", check=False)
    assert r.returncode == 1 and "1 of 1 zone(s) have not acknowledged" in r.stderr
    assert "zone-a: Offline" in r.stderr
    r = cluster.kdsctl("wait", "synced", api=a.api_url, check=False)
    assert r.returncode == 1  # zone-a is stopped: its API does not answer


def test_zone_view_readiness_and_conflicts_on_both_sides(cluster: Cluster) -> None:
    g = cluster.start_global()
    a = cluster.start_zone("zone-a")
    assert g.http.get("/readyz").status_code == 200
    assert g.http.get("/healthz").json()["status"] == "alive"
    wait_for(lambda: a.http.get("/readyz").status_code == 200, what="zone-a ready")

    g.put("/meshes/default/secrets/shared", _secret("shared", "from-global"))
    a.put("/meshes/default/secrets/mine", _secret("mine", "local"))
    wait_for(lambda: a.secret("default", "shared"), what="shared synced")
    # A zone-local GlobalSecret, then global creates one with the same name: a conflict.
    a.put("/global-secrets/clash", {"type": "GlobalSecret", "name": "clash", "data": b64("z")})
    g.put("/global-secrets/clash", {"type": "GlobalSecret", "name": "clash", "data": b64("g")})
    wait_for(lambda: _zone(g, "zone-a")["conflicts"] == ["GlobalSecret:clash"], what="conflict")

    st = a.get_json("/status")
    assert st["zone"] == "zone-a" and st["connected"] and st["ready"]
    assert st["global"]["instanceId"].startswith("global-")
    assert st["appliedRevision"] == st["globalRevision"] == g.get_json("/zones")["globalRevision"]
    assert st["lagRevisions"] == 0 and st["appliedAt"]
    assert st["resources"]["Secret"] == {"synced": 1, "local": 1}
    assert st["resources"]["GlobalSecret"] == {"synced": 1, "local": 1}
    assert st["conflicts"] == [{"type": "GlobalSecret", "mesh": "", "name": "clash"}]
    assert _zone(g, "zone-a")["conflictCount"] == 1

    out = cluster.kdsctl("inspect", "sync", api=a.api_url).stdout
    assert "Ready:" in out and "yes" in out
    assert "GlobalSecret clash: this zone's own copy is served" in out
    detail = cluster.kdsctl("inspect", "zone", "zone-a").stdout
    assert "Conflicts (1):" in detail and "GlobalSecret:clash" in detail
    r = cluster.kdsctl("inspect", "sync", check=False)  # against global
    assert r.returncode == 1 and "needs a zone's API" in r.stderr

    token_b = cluster.zone_token("zone-b")
    g.stop()
    wait_for(lambda: not a.get_json("/status")["connected"], what="zone-a disconnected")
    st = a.get_json("/status")
    assert st["ready"] and st["lastError"]["message"]  # serves its last state, still ready
    assert a.http.get("/readyz").status_code == 200
    # A zone that never reached global is not ready, and says why.
    b = cluster.start_zone("zone-b", synced=False, token_file=token_b)
    r = b.http.get("/readyz")
    assert r.status_code == 503 and "not ready" in r.json()["status"]
    assert "has not connected" in r.json()["reason"]
    assert b.http.get("/healthz").status_code == 200


def test_rejections_count_as_errors_and_status_survives_a_global_restart(cluster: Cluster) -> None:
    g = cluster.start_global()
    a = cluster.start_zone("zone-a")
    g.put("/meshes/team", {"type": "Mesh", "name": "team"})
    wait_for(lambda: a.get_json("/meshes/team"), what="mesh team synced")
    # The zone keeps a secret of its own in the synced mesh: global's delete of the mesh
    # cannot be applied there and is rejected (the zone keeps serving the mesh).
    a.put("/meshes/team/secrets/own", _secret("own", "zone-secret-value", "team"))
    assert g.http.delete("/meshes/team").status_code == 200
    head = g.get_json("/zones")["globalRevision"]
    wait_for(lambda: _zone(g, "zone-a")["ackedRevision"] == head, what="zone-a acked")
    z = _zone(g, "zone-a")
    assert z["resources"]["Mesh"]["rejected"] == 1
    assert z["resources"]["Mesh"]["acknowledged"] == 3  # default, team, team's delete
    assert z["totalErrors"] == 1
    assert "Mesh:team" in z["lastError"]["message"]
    assert a.get_json("/status")["rejected"]["Mesh"] == 1
    assert "zone-secret-value" not in str(z)

    a.stop()
    wait_for(lambda: _zone(g, "zone-a")["status"] == "Offline", what="zone-a Offline")
    before = _zone(g, "zone-a")
    cluster.restart(g)
    after = _zone(g, "zone-a")  # read back from global's store
    assert after["status"] == "Offline"
    for field in ("ackedRevision", "totalUpdates", "totalErrors", "resources", "lastError"):
        assert after[field] == before[field], field
    a.start()
    wait_for(lambda: _zone(g, "zone-a")["status"] == "Online", what="zone-a back")
    assert _zone(g, "zone-a")["connections"] == 2
    assert g.http.get("/zones/never-seen").status_code == 404


def test_metrics_on_both_daemons(cluster: Cluster) -> None:
    g = cluster.start_global()
    a = cluster.start_zone("zone-a")
    # The zone's snapshot first: a write made before it connects travels in the snapshot,
    # and the message and propagation counts below would then see one fewer.
    first = g.get_json("/zones")["globalRevision"]
    wait_for(
        lambda: (
            g.http.get("/zones/zone-a/_overview").status_code == 200
            and _zone(g, "zone-a")["ackedRevision"] == first
        ),
        what="zone-a's snapshot",
    )
    for i in range(3):
        g.put(f"/meshes/default/secrets/m{i}", _secret(f"m{i}", "x"))
        # One write at a time: writes made together may travel as one batch and one
        # acknowledged range, which the counts below would then see as fewer.
        head = g.get_json("/zones")["globalRevision"]
        wait_for(lambda h=head: _zone(g, "zone-a")["ackedRevision"] == h, what="zone-a synced")
    m = _metrics(g)
    z = (("zone", "zone-a"),)
    assert m[("kds_global_revision", ())] == head
    assert m[("kds_global_zones_connected", ())] == 1
    # zone-a's snapshot was acknowledged: no stream holds or waits for a snapshot turn.
    assert m[("kds_global_snapshot_streams_sending", ())] == 0
    assert m[("kds_global_snapshot_streams_waiting", ())] == 0
    assert m[("kds_global_zone_online", z)] == 1
    assert m[("kds_global_zone_acked_revision", z)] == head
    assert m[("kds_global_zone_resources_sent_total", (("type", "Secret"), *z))] == 3
    assert m[("kds_global_zone_resources_acknowledged_total", (("type", "Secret"), *z))] == 3
    assert m[("kds_global_zone_reconnects_total", z)] == 0
    assert m[("kds_global_zone_messages_acknowledged_total", z)] >= 4  # snapshot + 3 writes
    assert m[("kds_global_propagation_seconds_count", z)] >= 3
    assert m[("process_resident_memory_bytes", ())] > 0
    assert m[("kds_log_lines_lost_total", ())] == 0  # its log file takes every line
    zm = _metrics(a)
    assert zm[("kds_log_lines_lost_total", ())] == 0
    assert zm[("kds_zone_connected", ())] == 1
    assert zm[("kds_zone_applied_revision", ())] == head
    assert zm[("kds_zone_resources", (("origin", "global"), ("type", "Secret")))] == 3
    assert zm[("kds_zone_resources_applied_total", (("type", "Secret"),))] == 3


def test_zone_history_resources_and_latency_survive_a_global_restart(cluster: Cluster) -> None:
    """GET /zones/{name}/events: connects (how they started), disconnects (why), conflicts
    starting and ending, lag samples; kept across a global restart and shown by kdsctl
    inspect zone. GET /zones/_resources: who holds each resource, who keeps its own copy.
    GET /zones/_propagation: the propagation histogram."""
    g = cluster.start_global()
    a = cluster.start_zone("zone-a")
    b = cluster.start_zone("zone-b")
    b.put("/global-secrets/clash", {"type": "GlobalSecret", "name": "clash", "data": b64("z")})
    g.put("/global-secrets/clash", {"type": "GlobalSecret", "name": "clash", "data": b64("g")})
    g.put("/meshes/default/secrets/s1", _secret("s1", "v"))
    cluster.kdsctl("wait", "synced", "--timeout", "10s")
    wait_for(lambda: _zone(g, "zone-b")["conflictCount"] == 1, what="zone-b's conflict")
    assert b.http.delete("/global-secrets/clash").status_code == 200  # global's copy now served
    wait_for(lambda: _zone(g, "zone-b")["conflictCount"] == 0, what="zone-b's conflict ended")

    res = g.get_json("/zones/_resources")
    assert res["zones"] == ["zone-a", "zone-b"] and not res["truncated"]
    by_name = {(i["type"], i["name"]): i for i in res["items"]}
    assert set(by_name) == {("Mesh", "default"), ("GlobalSecret", "clash"), ("Secret", "s1")}
    assert by_name[("Secret", "s1")]["zones"]["held"] == ["zone-a", "zone-b"]
    fields = {"type", "mesh", "name", "origin", "revision", "zones"}
    assert all(set(i) == fields for i in res["items"])  # names only, never data
    lat = g.get_json("/zones/_propagation")
    assert lat["total"]["count"] >= 2 and len(lat["total"]["counts"]) == len(lat["buckets"])
    assert set(lat["zones"]) == {"zone-a", "zone-b"}

    cluster.restart(a)
    wait_for(lambda: _zone(g, "zone-a")["connections"] == 2, what="zone-a back")
    g = cluster.restart(g)
    wait_for(lambda: _zone(g, "zone-a")["status"] == "Online", 15, "zone-a after global restart")
    events = g.get_json("/zones/zone-a/events")
    # (A restarted zone that dials before global saw its old stream end is refused once as
    # a second instance: such a "refused" event may sit between these.)
    kinds = [
        (e["type"], e.get("mode") or e.get("reason"))
        for e in events["events"]
        if e["type"] in ("connected", "disconnected")
    ]
    # A zone stopped by SIGTERM closes its stream, or global sees the connection go first.
    assert kinds[1] in [
        ("disconnected", "zone closed the stream"),
        ("disconnected", "connection lost"),
    ]
    kinds[1] = ("disconnected", "stopped")
    assert kinds == [
        ("connected", "snapshot"),
        ("disconnected", "stopped"),
        ("connected", "resume"),
        ("disconnected", "global is shutting down"),
        ("connected", "resume"),
    ]
    assert events["lag"] and all(s["revisions"] >= 0 for s in events["lag"])
    conflicts = [
        e for e in g.get_json("/zones/zone-b/events")["events"] if e["type"] == "conflicts"
    ]
    assert [(c["started"], c["ended"]) for c in conflicts] == [
        (["GlobalSecret:clash"], []),
        ([], ["GlobalSecret:clash"]),
    ]
    out = cluster.kdsctl("inspect", "zone", "zone-b").stdout
    assert "Events (the last" in out and "conflicts: 0 now; ended GlobalSecret:clash" in out
    assert "Lag over the last hour: at most" in out
    r = g.http.get("/zones/zone-a/events?limit=x")
    assert r.status_code == 400 and "limit" in r.text
    assert g.http.get("/zones/nowhere/events").status_code == 404


def test_wait_synced_and_inspect_name_a_change_a_zone_refuses(cluster: Cluster) -> None:
    """A zone keeps a synced Mesh global deleted while its own secret lives in it: the zone
    acknowledged the revision but does not hold what global holds. wait synced says so (exit
    3, the change and the zone's reason) instead of 'synced'; once the zone's secret is gone,
    the next check deletes the Mesh and the wait succeeds."""
    g = cluster.start_global("--anti-entropy-interval", "1s")
    a = cluster.start_zone("zone-a")
    assert g.put("/meshes/m1", {"type": "Mesh", "name": "m1"}).status_code == 201
    cluster.kdsctl("wait", "synced", "--timeout", "10s")
    assert a.put("/meshes/m1/secrets/mine", _secret("mine", "local", "m1")).status_code == 201
    assert g.http.delete("/meshes/m1").status_code == 200
    head = g.get_json("/zones")["globalRevision"]
    wait_for(lambda: _zone(g, "zone-a")["ackedRevision"] == head, what="the delete acknowledged")
    summary = next(z for z in g.get_json("/zones")["items"] if z["name"] == "zone-a")
    assert summary["refusedCount"] == 1
    refused = _zone(g, "zone-a")["refused"]
    assert [r["key"] for r in refused] == ["Mesh:m1"] and "zone-local" in refused[0]["reason"]

    r = cluster.kdsctl("wait", "synced", "--timeout", "5s", check=False)
    assert r.returncode == 3, r.stderr
    assert f"1 zone(s) acknowledged revision {head} but refuse 1 change(s)" in r.stderr
    assert "zone-a: refuses 1 change(s)" in r.stderr and "Mesh:m1: " in r.stderr
    assert _metrics(g)[("kds_global_zone_refused_resources", (("zone", "zone-a"),))] == 1
    table = cluster.kdsctl("inspect", "zones").stdout
    assert "zone-a refuses 1 change(s) global sent (kdsctl inspect zone zone-a)" in table
    shown = cluster.kdsctl("inspect", "zone", "zone-a").stdout
    assert "Refused by the zone (1;" in shown and "  Mesh:m1: " in shown

    assert a.http.delete("/meshes/m1/secrets/mine").status_code == 200
    wait_for(lambda: a.http.get("/meshes/m1").status_code == 404, 20, "the Mesh deleted")
    wait_for(lambda: _zone(g, "zone-a")["refused"] == [], 20, "the refusal over")
    assert _metrics(g)[("kds_global_zone_refused_resources", (("zone", "zone-a"),))] == 0
    r = cluster.kdsctl("wait", "synced", "--timeout", "10s")
    assert "1 zone(s) synced to revision" in r.stdout
