"""SIGKILL at chosen points of the write and apply paths (kds.failpoints, armed by a
test-only environment variable): global dying between a write's commit and its answer, or
before it woke the zones' streams; a zone dying after committing a batch and before its ack,
or in the middle of a snapshot. Each time, nothing committed is lost, the zone resumes where
its store is, and every side ends with the same data."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
from typing import Any

import httpx
import pytest

from kds.failpoints import ENV
from tests.integration.conftest import Cluster, Daemon, b64, wait_for
from tests.integration.proxy import Proxy


def _killed_at(d: Daemon, point: str) -> None:
    """``d`` died by SIGKILL, at ``point``, as its log says."""
    assert d.proc is not None
    wait_for(lambda: d.proc is not None and d.proc.poll() is not None, 20, f"{d.name} killed")
    assert d.proc.returncode == -signal.SIGKILL, d.log_text()[-2000:]
    assert d.events("TEST-ONLY crash point reached: SIGKILL", point=point)


def _events_since(d: Daemon, offset: int) -> list[dict[str, Any]]:
    out = []
    for line in d.log_path.read_bytes()[offset:].decode(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def _value(d: Daemon, mesh: str, name: str) -> str | None:
    doc = d.secret(mesh, name)
    return None if doc is None else base64.b64decode(doc["data"]).decode()


@pytest.mark.parametrize("point", ["api-after-commit", "global-commit-before-wake"])
def test_global_killed_after_a_commit_keeps_the_write(cluster: Cluster, point: str) -> None:
    g = cluster.start_global()
    z = cluster.start_zone("zone-a")
    g.stop()
    g.env_once = {ENV: point}
    g.start()
    assert g.events("TEST-ONLY crash points armed: this process will SIGKILL itself at them; "
                    f"never set {ENV} outside tests")  # fmt: skip
    # The write commits, then global dies: the client never gets an answer.
    with pytest.raises(httpx.HTTPError):
        g.put("/meshes/default/secrets/s1", {"data": b64("committed")})
    _killed_at(g, point)
    g.start()  # without the variable: nothing armed
    assert _value(g, "default", "s1") == "committed"
    wait_for(lambda: _value(z, "default", "s1") == "committed", 20, "the write on the zone")
    # The restarted global serves normally.
    assert g.put("/meshes/default/secrets/s2", {"data": b64("after")}).status_code == 201
    wait_for(lambda: _value(z, "default", "s2") == "after", 20, "the next write on the zone")


def test_zone_killed_between_a_batch_commit_and_its_ack_resumes(cluster: Cluster) -> None:
    g = cluster.start_global()
    z = cluster.start_zone("zone-a")
    z.stop()
    z.env_once = {ENV: "zone-batch-before-ack"}
    z.start()
    wait_for(lambda: z.get_json("/status")["connected"], 20, "zone-a connected")
    assert g.put("/meshes/default/secrets/s1", {"data": b64("v1")}).status_code == 201
    _killed_at(z, "zone-batch-before-ack")
    size = z.log_path.stat().st_size
    z.start()
    # It resumed from what its store committed (no snapshot), and syncs on.
    connected = wait_for(
        lambda: [e for e in _events_since(z, size) if e.get("event") == "connected to global"],
        20,
        "zone-a connected again",
    )
    assert connected[0]["mode"] == "RESUME", connected
    wait_for(lambda: _value(z, "default", "s1") == "v1", 20, "the batch on the zone")
    assert g.put("/meshes/default/secrets/s2", {"data": b64("v2")}).status_code == 201
    wait_for(lambda: _value(z, "default", "s2") == "v2", 20, "the next write on the zone")
    head = g.get_json("/readyz")["revision"]
    wait_for(lambda: z.get_json("/status")["appliedRevision"] == head, 20, "caught up")


def test_zone_killed_in_the_middle_of_a_snapshot_ends_equal(cluster: Cluster) -> None:
    g = cluster.start_global()
    # Three values of 100 KB: a snapshot of them takes several parts (128 KiB each at most).
    big = {f"big{i}": f"{i}" * 100_000 for i in range(3)}
    for name, value in big.items():
        assert g.put(f"/meshes/default/secrets/{name}", {"data": b64(value)}).status_code == 201
    proxy = Proxy(cluster.kds_port)
    try:
        proxy.down()  # the zone starts and serves its API before it can reach global
        z = cluster.start_zone(
            "zone-b",
            "--global-address",
            f"grpcs://127.0.0.1:{proxy.port}",
            synced=False,
            env={ENV: "zone-snapshot-part-applied"},
        )
        proxy.up()
        _killed_at(z, "zone-snapshot-part-applied")
        z.start()
        for name, value in big.items():
            wait_for(lambda n=name, v=value: _value(z, "default", n) == v, 30, f"{name} on zone")
        head = g.get_json("/readyz")["revision"]
        wait_for(lambda: z.get_json("/status")["appliedRevision"] == head, 20, "caught up")
    finally:
        proxy.close()
