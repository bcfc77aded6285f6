"""A zone with two zonecp instances on one PostgreSQL store: one leader holds the stream,
both serve the zone's API, and when the leader is SIGKILLed the other takes over and resumes."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.integration.conftest import _TEST_ARGS, BIN, Daemon, free_port, wait_for
from tests.integration.test_postgres_globals import Pg, _secret
from tests.integration.test_postgres_globals import pg as pg  # the fixture


def _start_zone_instance(
    pg: Pg, name: str, token: Path, schema: str, globals_: tuple[str, ...] = ("g",)
) -> Daemon:
    api = free_port()
    addresses = ",".join(f"grpcs://127.0.0.1:{pg.kds[g]}" for g in globals_)
    argv = [
        str(BIN / "zonecp"), "run", "--zone", "zz", "--global-address", addresses,
        "--ca-file", str(pg.tmp / "g" / "ca.crt"), "--token-file", str(token),
        "--data-dir", str(pg.tmp / name), "--api-address", f"127.0.0.1:{api}",
        "--store", "postgres", "--postgres-url", pg.url, "--postgres-schema", schema,
        *_TEST_ARGS, "--reconnect-max-delay", "1s",
    ]  # fmt: skip
    d = Daemon(name, argv, pg.tmp / f"{name}.log", f"http://127.0.0.1:{api}", pg.tmp / name)
    pg.daemons.append(d)
    return d.start()


def _inspect_sync(d: Daemon) -> str:
    r = subprocess.run(
        [str(BIN / "kdsctl"), "--api-url", d.api_url, "--token-file",
         str(d.data_dir / "admin-token"), "inspect", "sync"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def _leader(d: Daemon) -> Any:
    return d.get_json("/status")["leader"]


def test_one_leader_syncs_both_serve_and_the_other_takes_over(pg: Pg) -> None:
    g = pg.start_global("g")
    _, token = pg.token(g, "zz")
    schema = "z" + uuid.uuid4().hex[:12]
    one = _start_zone_instance(pg, "zz-1", token, schema)
    two = _start_zone_instance(pg, "zz-2", token, schema)
    lead = wait_for(
        lambda: (a := _leader(one)) and (b := _leader(two)) and a["instanceId"]
        and a["instanceId"] == b["instanceId"] and a,
        10, "one leader named by both instances",
    )  # fmt: skip
    leader, standby = (one, two) if _leader(one)["thisInstance"] else (two, one)
    assert not _leader(standby)["thisInstance"]
    assert standby.http.get("/readyz").status_code == 200  # it serves the shared store
    shown = {d: _inspect_sync(d) for d in (leader, standby)}
    assert f"this instance (epoch {lead['epoch']})" in shown[leader]
    assert f"{lead['instanceId']} (epoch {lead['epoch']})" in shown[standby]
    assert "standby (serves what the leader applies)" in shown[standby]
    assert "NOT connected" not in shown[standby] and "Ready:" in shown[standby]

    # Global's write reaches the store both serve; a zone-local write on either is shared.
    assert g.put("/meshes/default/secrets/s1", _secret("s1", "1")).status_code == 201
    wait_for(lambda: standby.secret("default", "s1"), 10, "the synced secret on the standby")
    r = standby.put("/meshes/default/secrets/local", _secret("local", "z"))
    assert r.status_code == 201, r.text
    assert leader.secret("default", "local")
    wait_for(lambda: g.get_json("/zones/zz")["instanceId"] == lead["instanceId"], 10,
             "global names the leader")  # fmt: skip

    # A conflict ended by a zone-local delete on the standby reaches global through the
    # leader, woken by the shared store's notification.
    assert standby.put("/meshes/default/secrets/dup", _secret("dup", "z")).status_code == 201
    assert g.put("/meshes/default/secrets/dup", _secret("dup", "g")).status_code == 201
    wait_for(lambda: g.get_json("/zones/zz")["conflictCount"] == 1, 10, "the conflict on global")
    assert standby.http.delete("/meshes/default/secrets/dup").status_code in (200, 204)
    wait_for(lambda: g.get_json("/zones/zz")["conflictCount"] == 0, 10, "the conflict ended")

    leader.stop(signal.SIGKILL)
    killed = time.monotonic()
    assert g.put("/meshes/default/secrets/s2", _secret("s2", "2")).status_code == 201
    new = wait_for(
        lambda: (x := _leader(standby))["thisInstance"] and x, 15, "the standby takes over"
    )
    assert new["epoch"] == lead["epoch"] + 1
    wait_for(lambda: standby.secret("default", "s2"), 15, "the write after the kill")
    st = standby.get_json("/status")
    assert st["lastSync"]["mode"] == "resume" and st["snapshots"] == 0, st
    assert time.monotonic() - killed < 15
    wait_for(lambda: g.get_json("/zones/zz")["instanceId"] == new["instanceId"], 10,
             "global names the new leader")  # fmt: skip
