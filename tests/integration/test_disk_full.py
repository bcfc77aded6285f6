"""A full disk under a real daemon's store (a small tmpfs of its own, filled: ENOSPC as on a
real disk; tests/integration/small_disks.py). Global refuses writes with 507 naming the
cause and loses nothing it acknowledged; reads go on; writes work again once space returns.
A zone-local write a full zone disk refuses answers 507 and is the zone's problem on global
until a write goes through again."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Cluster, Daemon, b64, wait_for
from tests.integration.small_disks import SmallDisks


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[Cluster, SmallDisks]]:
    disks = SmallDisks([tmp_path / "global", tmp_path / "zone-a"], size="16m")
    cluster = Cluster(tmp_path)
    cluster.prefix, cluster.view = disks.prefix, disks.view
    try:
        yield cluster, disks
    finally:
        cluster.close()
        disks.close()


def _value(d: Daemon, name: str) -> str | None:
    doc = d.secret("default", name)
    return None if doc is None else base64.b64decode(doc["data"]).decode()


def _put_until_refused(d: Daemon, prefix: str) -> tuple[dict[str, str], httpx.Response]:
    """Put new secrets until one is refused: what was acknowledged, and the refusal. (A full
    disk may still take a few writes: the store reuses space its files already hold.)"""
    acked: dict[str, str] = {}
    for i in range(500):
        name, value = f"{prefix}{i}", f"value-{prefix}-{i}-" + "x" * 2000
        r = d.put(f"/meshes/default/secrets/{name}", {"data": b64(value)})
        if r.status_code != 201:
            return acked, r
        acked[name] = value
    raise AssertionError("500 writes on a full disk all went through")


def test_a_full_global_disk_refuses_writes_with_507_and_loses_nothing(
    small: tuple[Cluster, SmallDisks], tmp_path: Path
) -> None:
    cluster, disks = small
    g = cluster.start_global()
    z = cluster.start_zone("zone-a")
    assert g.put("/meshes/default/secrets/before", {"data": b64("before")}).status_code == 201
    disks.fill(tmp_path / "global")
    acked, refused = _put_until_refused(g, "full")
    assert refused.status_code == 507, refused.text
    detail = refused.json()["detail"]
    assert (
        detail.startswith("global's disk is full: the write to store ") and "free space" in detail
    )
    # Reads go on, and the refused write was not made.
    assert _value(g, "before") == "before"
    assert g.get_json("/meshes/default/secrets")["total"] >= 1 + len(acked)
    assert g.get_json("/readyz")["revision"] >= 2
    assert _value(g, f"full{len(acked)}") is None
    # Space returns: writes work again; everything acknowledged is on global and the zone.
    disks.free(tmp_path / "global")
    assert g.put("/meshes/default/secrets/after", {"data": b64("after")}).status_code == 201
    for name, value in {**acked, "before": "before", "after": "after"}.items():
        assert _value(g, name) == value
        wait_for(lambda n=name, v=value: _value(z, n) == v, 20, f"{name} on zone-a")
    assert _value(z, f"full{len(acked)}") is None


def test_a_zone_local_write_refused_for_a_full_disk_is_the_zones_problem_on_global(
    small: tuple[Cluster, SmallDisks], tmp_path: Path
) -> None:
    cluster, disks = small
    g = cluster.start_global()
    z = cluster.start_zone("zone-a")
    wait_for(lambda: g.get_json("/zones/zone-a")["status"] == "Online", 20, "zone-a online")
    disks.fill(tmp_path / "zone-a")
    acked, refused = _put_until_refused(z, "local")
    assert refused.status_code == 507, refused.text
    assert refused.json()["detail"].startswith("the zone's disk is full: ")

    def problem() -> str | None:
        shown = g.get_json("/zones/zone-a")["problem"]
        return None if shown is None else str(shown["message"])

    shown = wait_for(problem, 20, "the zone's problem on global")
    assert shown.startswith("disk full: the zone's disk is full: ")
    assert z.get_json("/status")["problem"]["message"] == shown
    assert "value-local" not in g.http.get("/zones/zone-a/_overview").text  # never a value
    # Reads go on on the zone; space returns, a write goes through: the problem is over.
    assert all(_value(z, name) == value for name, value in acked.items())
    disks.free(tmp_path / "zone-a")
    assert z.put("/meshes/default/secrets/again", {"data": b64("again")}).status_code == 201
    wait_for(lambda: problem() is None, 20, "the problem cleared on global")
    assert z.get_json("/status")["problem"] is None
