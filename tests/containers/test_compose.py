"""The compose project end to end: a global and three zones in containers, secure by default.

The tests share one project and run in file order; each leaves every zone Online and synced
for the next. Values are unique per run so a leak into any log can be searched for at the end.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid

import httpx
import pytest

from tests.containers.conftest import ZONES, Project
from tests.integration.conftest import b64, wait_for

RUN = uuid.uuid4().hex[:8]
VALUES: list[str] = []  # every secret value written, searched for in the logs at the end


def value(label: str) -> str:
    v = f"{label}-value-{RUN}-{uuid.uuid4().hex[:6]}"
    VALUES.append(v)
    return v


def put_secret(api: httpx.Client, name: str, data: str, mesh: str = "default") -> None:
    """Writes through global's published API (committed when it answers)."""
    r = api.put(
        f"/meshes/{mesh}/secrets/{name}",
        json={"type": "Secret", "mesh": mesh, "name": name, "data": b64(data)},
    )
    assert r.status_code in (200, 201), r.text


def has_value(p: Project, service: str, name: str, data: str) -> bool:
    s = p.secret(service, "default", name)
    return s is not None and s["data"] == b64(data)


def wait_synced(p: Project, zones: tuple[str, ...] = ZONES, timeout: str = "90s") -> None:
    r = p.kdsctl(
        "global",
        "wait",
        "synced",
        *(a for z in zones for a in ("--zone", z)),
        "--timeout",
        timeout,
        check=False,
    )
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{p.zones()}"


def test_every_zone_online_and_synced_over_tls_with_tokens(
    project: Project, global_api: httpx.Client
) -> None:
    """Up from nothing: zones dial grpcs://global:5685 with tokens the provision step issued."""
    zones = project.zones()
    assert sorted(zones) == list(ZONES)
    for name, z in zones.items():
        assert z["status"] == "Online", (name, z)
        assert z["lagRevisions"] == 0 and z["totalErrors"] == 0, (name, z)
    wait_synced(project)
    for zone in ZONES:
        st = project.sync_status(zone)
        assert st["connected"] and st["ready"], st
        assert st["global"]["address"] == "grpcs://global:5685"
        assert project.health(zone) == "healthy"
        # Its own credentials only: a zone cannot read another zone's token.
        listing = project.exec(zone, "ls", "/credentials").stdout.split()
        assert sorted(listing) == ["ca.crt", "token"], listing
        assert project.exec(zone, "id", "-u").stdout.strip() == "10001"
        assert not project.events(zone, "insecure: plaintext sync without zone tokens")
    assert project.exec("global", "id", "-u").stdout.strip() == "10001"
    assert project.health("global") == "healthy"
    # The provision step ran once, printed token ids, never a token.
    out = project.logs("provision")
    for zone in ZONES:
        assert f"{zone}: issued token" in out
        token = project.exec(zone, "cat", "/credentials/token").stdout.strip()
        assert token and token not in out and token not in project.logs("global")
    # Global's API and status page on the host's loopback; tokens required.
    url = project.api_url
    assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
    assert httpx.get(f"{url}/zones").status_code == 401
    assert global_api.get("/zones").status_code == 200
    assert "<title>" in httpx.get(f"{url}/gui").text


def test_secret_applied_on_global_appears_on_all_three_zones(
    project: Project, global_api: httpx.Client
) -> None:
    data = value("fanout")
    put_secret(global_api, "fanout", data)
    for zone in ZONES:
        wait_for(lambda z=zone: has_value(project, z, "fanout", data), 30, f"fanout on {zone}")
        s = project.secret(zone, "default", "fanout")
        assert s is not None and s["labels"]["kuma.io/origin"] == "global"
    # And through kdsctl apply inside the global container.
    data2 = value("applied")
    project.kdsctl(
        "global",
        "apply",
        "-f",
        "-",
        input=f"type: Secret\nmesh: default\nname: applied\ndata: {b64(data2)}\n",
    )
    for zone in ZONES:
        wait_for(lambda z=zone: has_value(project, z, "applied", data2), 30, f"applied on {zone}")


def test_zone_local_secret_with_a_global_name_is_kept_with_a_warning(
    project: Project, global_api: httpx.Client
) -> None:
    local = value("local")
    project.kdsctl(
        "zone-2",
        "apply",
        "-f",
        "-",
        input=f"type: Secret\nmesh: default\nname: clash\ndata: {b64(local)}\n",
    )
    from_global = value("global-clash")
    put_secret(global_api, "clash", from_global)
    for zone in ("zone-1", "zone-3"):
        wait_for(lambda z=zone: has_value(project, z, "clash", from_global), 30, f"clash {zone}")
    warning = wait_for(
        lambda: project.events(
            "zone-2",
            "name conflict: this zone keeps its own resource; global's copy is kept aside",
            name="clash",
        ),
        30,
        "the conflict warning in zone-2's log",
    )[-1]
    assert warning["level"] == "warning" and warning["zone"] == "zone-2"
    assert warning["mesh"] == "default" and warning["type"] == "Secret"
    kept = project.secret("zone-2", "default", "clash")
    assert kept is not None and kept["data"] == b64(local)
    assert kept["labels"]["kuma.io/origin"] == "zone"
    wait_for(lambda: project.zones()["zone-2"]["conflictCount"] == 1, 20, "conflict on global")


def _offline(p: Project, zone: str) -> bool:
    return bool(p.zones()[zone]["status"] == "Offline")


def test_network_disconnect_shows_offline_and_catches_up_while_others_never_stall(
    project: Project, global_api: httpx.Client
) -> None:
    net = project.network()
    cut = project.container("zone-3")
    project.docker("network", "disconnect", net, cut)
    try:
        t0 = time.monotonic()
        wait_for(lambda: _offline(project, "zone-3"), 30, "zone-3 Offline on global")
        offline_after = time.monotonic() - t0
        # Changes made meanwhile reach the other zones at once (each within seconds).
        arrivals = []
        for i in range(5):
            data = value(f"during-cut-{i}")
            t = time.monotonic()
            put_secret(global_api, f"during-cut-{i}", data)
            for zone in ("zone-1", "zone-2"):
                wait_for(
                    lambda z=zone, d=data, i=i: has_value(project, z, f"during-cut-{i}", d),
                    15,
                    f"during-cut-{i} on {zone}",
                )
            arrivals.append(time.monotonic() - t)
        zones = project.zones()
        assert zones["zone-3"]["status"] == "Offline" and zones["zone-3"]["lagRevisions"] >= 5
        for zone in ("zone-1", "zone-2"):
            assert zones[zone]["status"] == "Online", zones[zone]
        wait_synced(project, ("zone-1", "zone-2"), "20s")
        # zone-3 serves what it had, and knows it is cut off.
        st = project.sync_status("zone-3")
        assert not st["connected"] and st["ready"]
        assert project.secret("zone-3", "default", "during-cut-0") is None
        assert has_value(project, "zone-3", "fanout", VALUES[0])
    finally:
        project.docker("network", "connect", net, cut, check=False)
    t0 = time.monotonic()
    wait_synced(project, ("zone-3",), "60s")
    caught_up_after = time.monotonic() - t0
    for i in range(5):
        assert project.secret("zone-3", "default", f"during-cut-{i}") is not None
    st = project.sync_status("zone-3")
    assert st["connected"] and st["lastSync"]["mode"] == "resume", st
    print(
        f"zone-3 Offline on global {offline_after:.1f}s after the cut; others took "
        f"{max(arrivals):.2f}s at most per change; caught up {caught_up_after:.1f}s after reconnect"
    )


def test_global_killed_zones_keep_serving_then_resume_without_resync(
    project: Project, global_api: httpx.Client
) -> None:
    last = value("last-before-kill")
    put_secret(global_api, "last-before-kill", last)  # acknowledged, then global dies at once
    snapshots_before = {z: project.sync_status(z)["snapshots"] for z in ZONES}
    project.docker("kill", project.container("global"))
    for zone in ZONES:
        wait_for(lambda z=zone: not project.sync_status(z)["connected"], 30, f"{zone} sees it")
        assert has_value(project, zone, "fanout", VALUES[0])  # last state still served
        assert project.health(zone) == "healthy"
    time.sleep(3)  # zones retry meanwhile, with backoff
    project.compose("start", "global")
    wait_for(lambda: project.health("global") == "healthy", 60, "global healthy again")
    # Nothing acknowledged was lost: the last write is on global and reaches every zone.
    assert has_value(project, "global", "last-before-kill", last)
    after = value("after-restart")
    put_secret(global_api, "after-restart", after)
    wait_synced(project)
    for zone in ZONES:
        assert has_value(project, zone, "last-before-kill", last)
        assert has_value(project, zone, "after-restart", after)
        st = project.sync_status(zone)
        assert st["lastSync"]["mode"] == "resume", (zone, st)
        assert st["snapshots"] == snapshots_before[zone], (zone, st)
    # Global's side: since its restart every zone connected in RESUME mode, no snapshot sent.
    logs = [json.loads(line) for line in _lines_since_last_start(project.logs("global"))]
    modes = {e["zone"]: e["mode"] for e in logs if e.get("event") == "zone connected"}
    assert modes == dict.fromkeys(ZONES, "RESUME"), modes
    assert not [e for e in logs if e.get("event") == "snapshot sent"]


def test_global_process_crash_is_undone_by_the_restart_policy(
    project: Project, global_api: httpx.Client
) -> None:
    """Not `docker kill` (a stop by hand): the process dies by itself; Docker restarts it."""
    if os.geteuid() != 0:
        pytest.skip("killing a container's process from the host needs root")
    gid = project.container("global")
    fmt = "{{.State.Pid}} {{.RestartCount}}"
    pid, restarts = map(int, project.docker("inspect", "--format", fmt, gid).stdout.split())
    data = value("before-crash")
    put_secret(global_api, "before-crash", data)
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            int(project.docker("inspect", "--format", "{{.RestartCount}}", gid).stdout) > restarts
        ),
        30,
        "Docker restarting global",
    )
    wait_for(lambda: project.health("global") == "healthy", 60, "global healthy again")
    assert has_value(project, "global", "before-crash", data)
    wait_synced(project)
    for zone in ZONES:
        assert has_value(project, zone, "before-crash", data)
        assert project.sync_status(zone)["lastSync"]["mode"] == "resume"


def _lines_since_last_start(log: str) -> list[str]:
    lines = [ln for ln in log.splitlines() if ln.startswith("{")]
    starts = [i for i, ln in enumerate(lines) if '"global started"' in ln]
    assert starts, "no 'global started' line in global's log"
    return lines[starts[-1] :]


def test_restarted_zone_container_resumes_from_its_revision(
    project: Project, global_api: httpx.Client
) -> None:
    before = project.sync_status("zone-1")["appliedRevision"]
    project.compose("stop", "zone-1")
    wait_for(lambda: _offline(project, "zone-1"), 30, "zone-1 Offline")
    datas = [value(f"while-stopped-{i}") for i in range(3)]
    for i, d in enumerate(datas):
        put_secret(global_api, f"while-stopped-{i}", d)
    project.compose("start", "zone-1")
    wait_for(lambda: project.health("zone-1") == "healthy", 60, "zone-1 healthy")
    wait_synced(project, ("zone-1",))
    st = project.sync_status("zone-1")
    assert st["lastSync"] == {"mode": "resume", "fromRevision": before}, st
    assert (st["resumes"], st["snapshots"]) == (1, 0), st
    for i, d in enumerate(datas):
        assert has_value(project, "zone-1", f"while-stopped-{i}", d)
    resumed = project.events("global", "resumed zone from its revision", zone="zone-1")
    assert resumed and resumed[-1]["from_revision"] == before
    assert resumed[-1]["changes"] == 3, resumed[-1]


def test_a_revoked_zone_token_is_replaced_by_running_provision_again(project: Project) -> None:
    """As compose/README.md says: revoke, `start provision`, and the zone is back unrestarted."""
    token = project.exec("zone-2", "cat", "/credentials/token").stdout.strip()
    payload = token.split(".")[1]
    token_id = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    zone_container = project.container("zone-2")
    project.kdsctl("global", "revoke", "zone-token", token_id)
    wait_for(lambda: _offline(project, "zone-2"), 30, "zone-2 Offline after the revocation")
    wait_for(
        lambda: "revoked" in (project.sync_status("zone-2")["lastError"] or {}).get("message", ""),
        30,
        "the refusal in zone-2's status",
    )
    project.compose("start", "provision")
    code = project.docker("wait", project.container("provision"), timeout=120).stdout.strip()
    assert code == "0", project.logs("provision")
    reissued = [ln for ln in project.logs("provision").splitlines() if "zone-2: issued" in ln]
    assert len(reissued) == 2 and "revoked" in reissued[-1], reissued
    wait_for(lambda: project.zones()["zone-2"]["status"] == "Online", 60, "zone-2 back Online")
    wait_synced(project)
    assert project.container("zone-2") == zone_container
    assert project.exec("zone-2", "cat", "/credentials/token").stdout.strip() != token


def test_a_fourth_zone_added_as_the_readme_says(project: Project, global_api: httpx.Client) -> None:
    with4 = project.with_files("zone-4.yml")
    ids_before = {z: project.container(z) for z in ZONES}
    with4.compose("up", "-d", "--no-build", "zone-4", timeout=300)
    wait_for(lambda: with4.health("zone-4") == "healthy", 120, "zone-4 healthy")
    wait_synced(with4, ("zone-4",))
    assert has_value(with4, "zone-4", "fanout", VALUES[0])
    out = with4.logs("provision")
    assert "zone-4: issued token" in out
    for zone in ZONES:
        assert f"{zone}: kept token" in out
        # The running zones were left alone.
        assert with4.compose("ps", "-q", zone).stdout.strip() == ids_before[zone]
    zones = with4.zones()
    assert zones["zone-4"]["status"] == "Online"


def test_no_secret_value_in_any_log(project: Project) -> None:
    with4 = project.with_files("zone-4.yml")
    for service in ("global", "provision", *ZONES, "zone-4"):
        text = with4.logs(service)
        assert text, f"{service} logged nothing"
        for v in VALUES:
            assert v not in text and b64(v) not in text, f"{v} in {service}'s log"
