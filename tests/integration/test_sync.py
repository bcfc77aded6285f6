"""End to end: real globalcp and zonecp processes on loopback, driven by kdsctl and the API."""

from __future__ import annotations

import shutil
import signal
import stat
import subprocess
import time

import pytest

from tests.integration.conftest import BIN, Cluster, Daemon, b64, free_port, wait_for

pytestmark = pytest.mark.integration


def _secret(mesh: str, name: str, value: str, **labels: str) -> dict[str, object]:
    return {"type": "Secret", "mesh": mesh, "name": name, "data": b64(value), "labels": labels}


def _acked(g: Daemon, zone: str) -> int:
    """The revision global has recorded as acknowledged by ``zone``."""
    return int(g.zone_sync(zone)["ackedRevision"])


def _wait_applied_head(g: Daemon, z: Daemon) -> None:
    """Wait until zone ``z`` has applied global's head revision as it is now."""
    head = g.get_json("/zones")["globalRevision"]
    wait_for(lambda: z.get_json("/status")["appliedRevision"] >= head, what=f"{z.name} at {head}")


def test_create_update_delete_of_all_types_reaches_two_zones(cluster: Cluster) -> None:
    """Meshes, Secrets and GlobalSecrets written on global appear, change and vanish on both zones."""
    g = cluster.start_global()
    zones = [cluster.start_zone("zone-1"), cluster.start_zone("zone-2")]
    cluster.kdsctl(
        "apply",
        "-f",
        "-",
        input=(
            "type: Mesh\nname: payments\n---\n"
            "type: Secret\nmesh: payments\nname: db-pass\ndata: " + b64("v1-pass") + "\n---\n"
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-token\n  labels:\n"
            "    kuma.io/mesh: default\ndata:\n  value: " + b64("v1-token") + "\n"
            "type: system.kuma.io/secret\n---\n"
            "type: GlobalSecret\nname: shared-key\ndata: " + b64("v1-shared") + "\n"
        ),
    )
    for z in zones:
        wait_for(lambda z=z: z.secret("payments", "db-pass"), what=f"db-pass on {z.name}")
        wait_for(lambda z=z: z.secret("default", "api-token"), what=f"api-token on {z.name}")
        wait_for(lambda z=z: z.get_json("/global-secrets/shared-key"), what="shared-key")
        got = z.secret("payments", "db-pass")
        assert got["data"] == b64("v1-pass")
        assert got["labels"]["kuma.io/origin"] == "global"
        assert z.get_json("/meshes/payments")["name"] == "payments"

    # update
    assert (
        g.put("/meshes/payments/secrets/db-pass", _secret("payments", "db-pass", "v2")).status_code
        == 200
    )
    assert (
        g.put(
            "/global-secrets/shared-key",
            {"type": "GlobalSecret", "name": "shared-key", "data": b64("v2s")},
        ).status_code
        == 200
    )
    for z in zones:
        wait_for(lambda z=z: z.secret("payments", "db-pass")["data"] == b64("v2"), what="update")
        wait_for(
            lambda z=z: z.get_json("/global-secrets/shared-key")["data"] == b64("v2s"),
            what="gs update",
        )

    # delete (secret, global secret, then the now-empty mesh)
    cluster.kdsctl("delete", "secret", "db-pass", "--mesh", "payments")
    cluster.kdsctl("delete", "global-secret", "shared-key")
    cluster.kdsctl("delete", "mesh", "payments")
    for z in zones:
        wait_for(lambda z=z: z.get_json("/meshes/payments") is None, what="mesh gone")
        assert z.secret("payments", "db-pass") is None
        assert z.get_json("/global-secrets/shared-key") is None
        assert z.secret("default", "api-token")["data"] == b64("v1-token")
    # No zone rejected anything, and ordering never made a Secret arrive before its Mesh.
    assert not g.events("zone rejected a resource")


def test_zone_local_secret_never_reaches_global_and_synced_copies_are_read_only(
    cluster: Cluster,
) -> None:
    """A zone's own secret stays on the zone; synced copies refuse writes with 409."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    assert (
        z.put(
            "/meshes/default/secrets/local-only",
            _secret("default", "local-only", "zone-only-value"),
        ).status_code
        == 201
    )
    assert (
        g.put(
            "/meshes/default/secrets/from-global", _secret("default", "from-global", "gv")
        ).status_code
        == 201
    )
    wait_for(lambda: z.secret("default", "from-global"), what="sync")
    # Global has heard from the zone after its local write: the zone acknowledged the later
    # write on the one stream it could have used to send its own secret.
    head = g.get_json("/zones")["globalRevision"]
    wait_for(lambda: _acked(g, "zone-1") == head, what="zone-1's ack of from-global")
    assert g.secret("default", "local-only") is None
    local = z.secret("default", "local-only")
    assert local["labels"] == {  # the labels Kuma computes for a zone's own resource
        "kuma.io/origin": "zone",
        "kuma.io/zone": "zone-1",
        "kuma.io/env": "universal",
        "kuma.io/display-name": "local-only",
        "kuma.io/mesh": "default",
    }
    assert "zone-only-value" not in g.log_text()
    assert b64("zone-only-value") not in g.log_text()

    r = z.put("/meshes/default/secrets/from-global", _secret("default", "from-global", "x"))
    assert r.status_code == 409 and "global" in r.json()["detail"]
    r = z.http.delete("/meshes/default/secrets/from-global")
    assert r.status_code == 409 and "global" in r.json()["detail"]
    assert z.secret("default", "from-global")["data"] == b64("gv")


def test_name_conflict_rules(cluster: Cluster) -> None:
    """Zone keeps its own, warns once, keeps global's copy aside, swaps it in on local delete."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    z2 = cluster.start_zone("zone-2")
    assert (
        z.put("/meshes/default/secrets/dup", _secret("default", "dup", "zone-value")).status_code
        == 201
    )
    g.put("/meshes/default/secrets/dup", _secret("default", "dup", "global-value-1"))
    wait_for(lambda: z2.secret("default", "dup"), what="zone-2 sync")
    warning = z.wait_event(
        "name conflict: this zone keeps its own resource; global's copy is kept aside"
    )
    assert warning["level"] == "warning"
    assert (warning["type"], warning["mesh"], warning["name"], warning["zone"]) == (
        "Secret",
        "default",
        "dup",
        "zone-1",
    )
    assert z.secret("default", "dup")["data"] == b64("zone-value")
    # The zone reports its conflicts to global, names only.
    report = g.wait_event(
        "zone reported conflicts", zone="zone-1", conflicts=["Secret:default/dup"]
    )
    assert report

    # Global updates its copy: the copy aside follows, the local one is untouched, no new warning.
    g.put("/meshes/default/secrets/dup", _secret("default", "dup", "global-value-2"))
    wait_for(lambda: z2.secret("default", "dup")["data"] == b64("global-value-2"), what="z2 update")
    _wait_applied_head(g, z)  # zone-1 applied the update too (a warning is logged before that)
    assert z.secret("default", "dup")["data"] == b64("zone-value")
    warnings = z.events(
        "name conflict: this zone keeps its own resource; global's copy is kept aside"
    )
    assert len(warnings) == 1

    # Deleting the zone-local one puts global's (updated) copy in its place at once.
    assert z.http.delete("/meshes/default/secrets/dup").status_code == 200
    got = z.secret("default", "dup")
    assert got["data"] == b64("global-value-2")
    assert got["labels"]["kuma.io/origin"] == "global"
    g.wait_event("zone reported conflicts", zone="zone-1", conflicts=[])

    # A new conflict, then global deletes its copy: the local one survives.
    assert (
        z.put("/meshes/default/secrets/dup2", _secret("default", "dup2", "z2")).status_code == 201
    )
    g.put("/meshes/default/secrets/dup2", _secret("default", "dup2", "g2"))
    wait_for(lambda: z2.secret("default", "dup2"), what="dup2 on zone-2")
    z.wait_event(
        "name conflict: this zone keeps its own resource; global's copy is kept aside", name="dup2"
    )
    assert g.http.delete("/meshes/default/secrets/dup2").status_code == 200
    wait_for(lambda: z2.secret("default", "dup2") is None, what="dup2 deleted on zone-2")
    _wait_applied_head(g, z)  # zone-1 applied the delete too
    assert z.secret("default", "dup2")["data"] == b64("z2")
    # The copy aside is gone too: deleting the local one leaves nothing.
    assert z.http.delete("/meshes/default/secrets/dup2").status_code == 200
    assert z.secret("default", "dup2") is None

    # A zone-local resource cannot take a key a synced copy holds.
    r = z.put("/meshes/default/secrets/dup", _secret("default", "dup", "again"))
    assert r.status_code == 409
    for value in ("zone-value", "global-value-1", "global-value-2", "z2", "g2"):
        assert b64(value) not in cluster.all_logs()


def test_zone_restart_resumes_with_only_the_changes(cluster: Cluster) -> None:
    """A zone restarted after changes on global receives only those changes, not a snapshot."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    for i in range(20):
        g.put(f"/meshes/default/secrets/s{i}", _secret("default", f"s{i}", f"v{i}"))
    wait_for(lambda: z.secret("default", "s19"), what="initial sync")
    z.stop()
    g.wait_event("zone disconnected", zone="zone-1")
    for i in range(3):
        g.put(f"/meshes/default/secrets/s{i}", _secret("default", f"s{i}", f"changed{i}"))
    g.http.delete("/meshes/default/secrets/s5")
    z.start()
    wait_for(lambda: z.secret("default", "s2")["data"] == b64("changed2"), what="resume")
    assert z.secret("default", "s5") is None
    resumed = g.wait_event("resumed zone from its revision", zone="zone-1")
    assert resumed["changes"] == 4
    assert resumed["to_revision"] - resumed["from_revision"] == 4
    connects = g.events("zone connected", zone="zone-1")
    assert [c["mode"] for c in connects] == ["SNAPSHOT", "RESUME"]
    # The zone says so too (its counters start with the process).
    st = z.get_json("/status")
    assert st["lastSync"] == {"mode": "resume", "fromRevision": resumed["from_revision"]}
    assert (st["resumes"], st["snapshots"]) == (1, 0)


def test_global_restart_zones_keep_serving_and_resume(cluster: Cluster) -> None:
    """While global is down zones serve their last state; after restart they resume, not resync."""
    g = cluster.start_global()
    z1, z2 = cluster.start_zone("zone-1"), cluster.start_zone("zone-2")
    g.put("/meshes/default/secrets/before", _secret("default", "before", "b"))
    for z in (z1, z2):
        wait_for(lambda z=z: z.secret("default", "before"), what="initial")
    assert g.stop() == 0
    for z in (z1, z2):
        z.wait_event("disconnected from global")
        assert z.secret("default", "before")["data"] == b64("b")
    g.start()
    g.put("/meshes/default/secrets/after", _secret("default", "after", "a"))
    g.put("/meshes/default/secrets/before", _secret("default", "before", "b2"))
    for z in (z1, z2):
        wait_for(lambda z=z: z.secret("default", "after"), what="after restart")
        wait_for(lambda z=z: z.secret("default", "before")["data"] == b64("b2"), what="update")
    for name in ("zone-1", "zone-2"):
        modes = [c["mode"] for c in g.events("zone connected", zone=name)]
        assert modes[0] == "SNAPSHOT" and set(modes[1:]) == {"RESUME"}, modes
        assert not [e for e in g.events("snapshot sent", zone=name)][1:]
        # Resuming sent only what changed: the two writes after the restart, nothing else.
        resumed = g.events("resumed zone from its revision", zone=name)
        assert sum(e["changes"] for e in resumed) <= 2, resumed


def test_zone_offline_longer_than_change_log_gets_full_resync(cluster: Cluster) -> None:
    """Past the change log: a snapshot; stale synced copies removed; zone-local ones kept."""
    g = cluster.start_global("--log-size", "5")
    z = cluster.start_zone("zone-1")
    g.put("/meshes/default/secrets/doomed", _secret("default", "doomed", "d"))
    g.put("/meshes/default/secrets/kept", _secret("default", "kept", "k"))
    g.put("/meshes/stale-mesh", {"type": "Mesh", "name": "stale-mesh"})
    g.put("/meshes/stale-mesh/secrets/inner", _secret("stale-mesh", "inner", "i"))
    z.put("/meshes/default/secrets/mine", _secret("default", "mine", "m"))
    wait_for(lambda: z.secret("stale-mesh", "inner"), what="initial sync")
    z.stop()
    g.http.delete("/meshes/default/secrets/doomed")
    g.http.delete("/meshes/stale-mesh/secrets/inner")
    g.http.delete("/meshes/stale-mesh")
    for i in range(10):
        g.put(f"/meshes/default/secrets/n{i}", _secret("default", f"n{i}", f"n{i}"))
    z.start()
    wait_for(lambda: z.secret("default", "n9"), what="resync")
    assert z.secret("default", "doomed") is None
    assert z.get_json("/meshes/stale-mesh") is None
    assert z.secret("default", "kept")["data"] == b64("k")
    assert z.secret("default", "mine")["labels"]["kuma.io/origin"] == "zone"
    modes = [c["mode"] for c in g.events("zone connected", zone="zone-1")]
    assert modes == ["SNAPSHOT", "SNAPSHOT"]
    assert z.events("removed synced copies global no longer has")[-1]["count"] == 3


def test_invalid_input_is_refused_with_400_and_changes_nothing(cluster: Cluster) -> None:
    """Bad names, data, labels and types are 400 naming the field, on the API and in kdsctl."""
    g = cluster.start_global("--max-data-bytes", "1KiB")
    z = cluster.start_zone("zone-1")
    cases = {
        "name": _secret("default", "Bad_Name", "x") | {"name": "Bad_Name"},
        "data": {"type": "Secret", "mesh": "default", "name": "ok", "data": "***not base64***"},
        "labels[kuma.io/origin]": _secret("default", "ok", "x", **{"kuma.io/origin": "zone"}),
        "labels[bad key!]": _secret("default", "ok", "x", **{"bad key!": "v"}),
    }
    for field, body in cases.items():
        path = f"/meshes/default/secrets/{body['name']}"
        r = g.put(path, body)
        assert r.status_code == 400, (field, r.text)
        assert field in [c["field"] for c in r.json()["causes"]], (field, r.json())
    r = g.put("/meshes/default/secrets/big", _secret("default", "big", "x" * 2000))
    assert r.status_code == 400 and r.json()["causes"][0]["field"] == "data"
    r = g.put(
        "/meshes/default/secrets/empty",
        {"type": "Secret", "mesh": "default", "name": "empty", "data": ""},
    )
    assert r.status_code == 400
    bad = cluster.kdsctl(
        "apply", "-f", "-", input="type: Secretz\nname: a\ndata: eA==\n", check=False
    )
    assert bad.returncode != 0 and "type" in bad.stderr
    bad = cluster.kdsctl(
        "apply",
        "-f",
        "-",
        input="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
        check=False,
    )
    assert bad.returncode != 0 and "kind" in bad.stderr
    assert g.get_json("/meshes/default/secrets")["total"] == 0
    # A valid write after the refused ones: once it is on the zone, so would they be.
    assert (
        g.put("/meshes/default/secrets/after", _secret("default", "after", "a")).status_code == 201
    )
    wait_for(lambda: z.secret("default", "after"), what="the later valid write on the zone")
    assert [s["name"] for s in z.get_json("/meshes/default/secrets")["items"]] == ["after"]


def test_slow_zone_does_not_slow_others_and_catches_up_coalesced(cluster: Cluster) -> None:
    """A frozen zone holds only its own stream; when it thaws it gets the newest state."""
    g = cluster.start_global("--max-unacked", "2")
    fast = cluster.start_zone("fast")
    slow = cluster.start_zone("slow")
    g.put("/meshes/default/secrets/k", _secret("default", "k", "v0"))
    wait_for(lambda: slow.secret("default", "k"), what="initial")
    slow.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for i in range(1, 101):
            assert (
                g.put("/meshes/default/secrets/k", _secret("default", "k", f"v{i}")).status_code
                == 200
            )
            g.put(f"/meshes/default/secrets/n{i % 10}", _secret("default", f"n{i % 10}", f"{i}"))
        wait_for(lambda: fast.secret("default", "k")["data"] == b64("v100"), what="fast zone")
        assert time.monotonic() - t0 < 30
    finally:
        slow.signal(signal.SIGCONT)
    wait_for(
        lambda: slow.secret("default", "k")["data"] == b64("v100"), timeout=20, what="slow zone"
    )
    assert slow.get_json("/meshes/default/secrets")["total"] == 11


def test_batches_split_to_fit_the_message_limit_and_oversized_is_refused(cluster: Cluster) -> None:
    """With a 64 KiB message limit, 40 secrets of 4 KiB arrive in several parts; a bigger one is 400."""
    g = cluster.start_global("--max-message-bytes", "64KiB", "--max-data-bytes", "256KiB")
    docs = "".join(
        f"---\ntype: Secret\nmesh: default\nname: big-{i}\ndata: {b64(str(i) * 4096)}\n"
        for i in range(40)
    )
    cluster.kdsctl("apply", "-f", "-", input=docs)
    z = cluster.start_zone("zone-1", "--max-message-bytes", "64KiB")
    wait_for(lambda: z.get_json("/meshes/default/secrets")["total"] == 40, what="all 40")
    snap = g.wait_event("snapshot sent", zone="zone-1")
    assert snap["resources"] == 41  # 40 secrets and the default mesh
    assert snap["bytes"] > 64 * 1024  # so it must have been split
    r = g.put("/meshes/default/secrets/too-big", _secret("default", "too-big", "x" * 100_000))
    assert r.status_code == 400 and r.json()["causes"][0]["field"] == "data"
    # A zone that could not receive what global may send is refused with the fix in the message.
    small = cluster.start_zone("zone-small", "--max-message-bytes", "32KiB", synced=False)
    refused = small.wait_event("cannot sync with global: retrying")
    assert "FAILED_PRECONDITION" in refused["error"]
    assert "--max-message-bytes 65536" in refused["error"]


def test_dead_zone_is_noticed_within_seconds(cluster: Cluster) -> None:
    """A zone frozen with SIGSTOP is declared gone by keepalive within a few seconds."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    g.wait_event("zone connected", zone="zone-1")
    z.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        g.wait_event("zone disconnected", timeout=15, zone="zone-1")
        elapsed = time.monotonic() - t0
    finally:
        z.signal(signal.SIGCONT)
    # keepalive 1 s + ping timeout 1 s; the heartbeat write blocking adds at most a little.
    assert elapsed < 8, elapsed
    g.wait_event("zone connected", zone="zone-1", mode="RESUME")


def test_sigterm_stops_both_daemons_cleanly(cluster: Cluster) -> None:
    """SIGTERM and SIGINT end each daemon with exit code 0 within a few seconds."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    g.wait_event("zone connected", zone="zone-1")
    t0 = time.monotonic()
    assert z.stop(signal.SIGINT) == 0
    assert g.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 8
    # The data dirs are private, and so is every store file (the WAL holds secret data too).
    for d in (cluster.tmp / "global", cluster.tmp / "zone-1"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        files = list(d.iterdir())
        assert files
        for f in files:  # store, WAL, tokens, keys, certificates; tls/ is a private dir
            assert stat.S_IMODE(f.stat().st_mode) == (0o700 if f.is_dir() else 0o600), f
            for inner in f.iterdir() if f.is_dir() else ():
                assert stat.S_IMODE(inner.stat().st_mode) == 0o600, inner


def test_a_second_signal_exits_at_once(cluster: Cluster) -> None:
    """The first SIGTERM or SIGINT starts the graceful stop (exit code 0); a second signal ends
    the process at once: exit code 130, and the log says why. The two signals differ: two of
    the same kind sent back to back may merge into one while the first is pending."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    g.wait_event("zone connected", zone="zone-1")
    for d, first, second in (
        (z, signal.SIGINT, signal.SIGTERM),
        (g, signal.SIGTERM, signal.SIGINT),
    ):
        assert d.proc is not None
        d.signal(first)
        d.signal(second)
        assert d.proc.wait(10) == 130, d.name
        assert d.events("second signal: exiting now"), d.name


def test_acknowledged_writes_survive_sigkill_of_global_and_zone(cluster: Cluster) -> None:
    """Every write the API acknowledged is there after SIGKILL; a killed zone resumes to the head."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    for i in range(30):
        assert (
            g.put(f"/meshes/default/secrets/k{i}", _secret("default", f"k{i}", f"v{i}")).status_code
            == 201
        )
        if i == 15:
            z.signal(signal.SIGKILL)  # the zone dies mid-stream, between batches or inside one
    g.signal(signal.SIGKILL)
    assert g.proc is not None and g.proc.wait(5) == -signal.SIGKILL
    assert z.proc is not None and z.proc.wait(5) == -signal.SIGKILL
    g.start()
    assert g.get_json("/meshes/default/secrets")["total"] == 30
    assert g.secret("default", "k29")["data"] == b64("v29")
    z.start()
    wait_for(lambda: z.get_json("/meshes/default/secrets")["total"] == 30, what="zone caught up")
    assert z.secret("default", "k29")["data"] == b64("v29")
    # The zone kept what it had applied before it died and resumed from there.
    assert g.events("zone connected", zone="zone-1")[-1]["mode"] == "RESUME"


def test_second_instance_of_a_zone_is_refused_until_the_first_is_gone(cluster: Cluster) -> None:
    """One zone name, one live stream: a second live instance is refused with a clear reason,
    the first keeps its stream, and the second gets in once the first stops."""
    g = cluster.start_global()
    first = cluster.start_zone("zone-1")
    g.wait_event("zone connected", zone="zone-1")
    second = cluster.start_zone(
        "zone-1-twin", synced=False, token_file=cluster.zone_token("zone-1")
    )
    # Same zone name, its own data dir and port: relaunch the twin under zone-1's name, on a
    # new store (a store records the zone it serves, and would refuse another's name).
    second.stop()
    shutil.rmtree(cluster.tmp / "zone-1-twin")
    second.argv[second.argv.index("--zone") + 1] = "zone-1"
    second.start()
    refused = wait_for(
        lambda: [
            e
            for e in second.events("cannot sync with global: retrying")
            if "ALREADY_EXISTS" in e["error"]
        ],
        what="the twin refused as a second instance",
    )[-1]
    assert "already connected" in refused["error"]
    g.wait_event("refused a second instance of a connected zone", zone="zone-1")
    # Only the first instance was ever let in. (It may have reconnected on its own: with the
    # tests' 1 s keepalive a loaded machine can drop a stream; the twin still never got in.)
    connected = {e["instance"] for e in g.events("zone connected", zone="zone-1")}
    assert connected == {first.events("zone started")[-1]["instance"]}, connected
    g.put("/meshes/default/secrets/s", _secret("default", "s", "v"))
    wait_for(lambda: first.secret("default", "s"), what="first instance still syncing")
    first.stop()
    wait_for(lambda: second.secret("default", "s"), timeout=20, what="second instance took over")


def test_frozen_global_is_noticed_by_zones_and_they_resume(cluster: Cluster) -> None:
    """A global frozen with SIGSTOP is declared gone by the zone within seconds; after SIGCONT
    the zone reconnects and resumes."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    g.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        z.wait_event("disconnected from global", timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        g.signal(signal.SIGCONT)
    assert elapsed < 8, elapsed
    g.put("/meshes/default/secrets/after", _secret("default", "after", "a"))
    wait_for(lambda: z.secret("default", "after"), timeout=20, what="resumed")


def test_zone_backs_off_with_jitter_and_logs_every_attempt(cluster: Cluster) -> None:
    """With no global, the zone logs each attempt with a growing, capped, jittered delay, and
    connects as soon as global appears."""
    g = cluster.start_global()  # only to issue the zone's token
    token = cluster.zone_token("zone-1")
    g.stop()
    z = cluster.start_zone("zone-1", synced=False, token_file=token)  # reconnect max 1s
    wait_for(lambda: len(z.events("cannot sync with global: retrying")) >= 6, what="attempts")
    attempts = z.events("cannot sync with global: retrying")
    assert [a["attempt"] for a in attempts[:6]] == [1, 2, 3, 4, 5, 6]
    delays = [a["retry_in"] for a in attempts]
    assert all(0 < d <= 1.5 for d in delays), delays  # cap 1 s plus at most 0.5 s of jitter
    assert max(delays[3:]) > min(delays[:2]), delays  # it grows
    assert "Connection refused" in attempts[0]["error"]
    g.start()
    wait_for(lambda: z.get_json("/meshes/default"), what="connected once global is up")


def test_global_restored_from_a_backup_never_feeds_a_zone_another_history(
    cluster: Cluster,
) -> None:
    """Global restored from a backup (same store id) and written to past the zone's revision:
    the zone's history chain does not match, so it gets a snapshot and ends equal to global,
    instead of resuming onto the tail of a different history."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    g.put("/meshes/default/secrets/base", _secret("default", "base", "b"))
    wait_for(lambda: z.secret("default", "base"), what="base")
    g.stop()
    backup = cluster.tmp / "global-backup"
    shutil.copytree(cluster.tmp / "global", backup)
    g.start()
    for i in range(3):  # history A: the zone follows it
        g.put(f"/meshes/default/secrets/a{i}", _secret("default", f"a{i}", "a"))
    wait_for(lambda: z.secret("default", "a2"), what="history A on the zone")
    z.stop()
    g.stop()
    shutil.rmtree(cluster.tmp / "global")
    shutil.copytree(backup, cluster.tmp / "global")  # the restore
    g.start()
    for i in range(5):  # history B: same store id, revisions past the zone's
        g.put(f"/meshes/default/secrets/b{i}", _secret("default", f"b{i}", "b"))
    z.start()
    wait_for(lambda: z.secret("default", "b4"), what="history B on the zone")
    assert z.secret("default", "a0") is None  # history A's writes are gone, as on global
    assert z.get_json("/meshes/default/secrets")["total"] == 6
    modes = [c["mode"] for c in g.events("zone connected", zone="zone-1")]
    assert modes[-1] == "SNAPSHOT", modes


def test_a_second_global_on_the_same_sync_port_refuses_to_start(cluster: Cluster) -> None:
    """grpc would share a port (SO_REUSEPORT) and split the zones between two globals; ours
    exits 1 naming --kds-address instead."""
    cluster.start_global()
    r = subprocess.run(
        [
            str(BIN / "globalcp"), "run", "--data-dir", str(cluster.tmp / "other"),
            "--api-address", f"127.0.0.1:{free_port()}",
            "--kds-address", f"127.0.0.1:{cluster.kds_port}",
        ],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 1
    assert f"--kds-address 127.0.0.1:{cluster.kds_port}: cannot listen" in r.stderr


def test_a_second_daemon_on_the_same_data_dir_refuses_to_start(cluster: Cluster) -> None:
    """Two processes on one store would both serve and sync it: the second exits 1 naming the
    data dir and the first one's pid."""
    z = cluster.start_zone(
        "zone-1",
        "--global-address",
        f"grpc://127.0.0.1:{cluster.kds_port}",
        "--insecure",  # no global in this test
        synced=False,
        token_file=cluster.tmp / "no-token",
    )
    assert z.proc is not None
    r = subprocess.run(
        [
            str(BIN / "zonecp"), "run", "--zone", "zone-1", "--data-dir", str(cluster.tmp / "zone-1"),
            "--api-address", f"127.0.0.1:{free_port()}", "--token-file", str(cluster.tmp / "t"),
        ],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 1
    assert f"is in use by another process (pid {z.proc.pid})" in r.stderr
