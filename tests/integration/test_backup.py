"""Backing up a running global's SQLite store the way the README says (SQLite's online backup,
as ``sqlite3 global.db ".backup FILE"`` makes it, from another process while writes go on),
and restoring it into an empty data dir: the store file is the whole of global's state."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cluster, Daemon, b64, wait_for

pytestmark = pytest.mark.integration


def _secret(name: str) -> dict[str, Any]:
    return {"type": "Secret", "mesh": "default", "name": name, "data": b64(f"value of {name}")}


def _names(d: Daemon) -> set[str]:
    page = d.get_json("/meshes/default/secrets?size=1000")
    assert page["total"] <= 1000
    return {s["name"] for s in page["items"]}


def _online_backup(db: Path, out: Path) -> None:
    """What ``sqlite3 DB ".backup OUT"`` does: SQLite's backup API, one consistent copy."""
    src = sqlite3.connect(db)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def test_an_online_backup_restored_into_an_empty_data_dir_is_global_whole(
    cluster: Cluster,
) -> None:
    """Writes keep coming while the backup is taken. Restored alone into an empty data dir,
    it holds every write acknowledged before the backup began, passes the store's start-up
    checks, keeps its CA (the zone, still trusting the old ca.crt and holding a token from
    before, syncs from it) and its zone tokens; the zone ends equal to the restored global."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    later_token = cluster.zone_token("zone-2")  # issued before the backup, used after it
    for i in range(20):
        r = g.put(f"/meshes/default/secrets/before-{i}", _secret(f"before-{i}"))
        assert r.status_code == 201, r.text
    acked: list[str] = []
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            name = f"during-{i}"
            if g.put(f"/meshes/default/secrets/{name}", _secret(name)).status_code == 201:
                acked.append(name)
            i += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wait_for(lambda: len(acked) >= 10, what="writes under way")
    acked_before = set(acked)
    backup = cluster.tmp / "global-backup.db"
    _online_backup(g.data_dir / "global.db", backup)
    wait_for(lambda: len(acked) >= len(acked_before) + 10, what="writes after the backup")
    stop.set()
    writer.join(10)
    assert not writer.is_alive()

    g.stop()
    shutil.move(g.data_dir, cluster.tmp / "global-lost")  # the host's disk is gone
    g.data_dir.mkdir(mode=0o700)
    shutil.copyfile(backup, g.data_dir / "global.db")
    g.start()

    held = _names(g)
    assert {f"before-{i}" for i in range(20)} | acked_before <= held
    assert held <= {f"before-{i}" for i in range(20)} | set(acked)  # nothing made up
    damaged = [e for e in g.logs() if "damaged" in str(e.get("event"))]
    assert not damaged, damaged
    lost_ca = (cluster.tmp / "global-lost" / "ca.crt").read_bytes()
    assert (g.data_dir / "ca.crt").read_bytes() == lost_ca
    # The zone's history ran past the backup: it is sent a snapshot and ends equal to global.
    wait_for(lambda: _names(z) == held, timeout=30, what="zone equal to the restored global")
    assert g.put("/meshes/default/secrets/after", _secret("after")).status_code == 201
    wait_for(lambda: z.secret("default", "after"), what="a new write on the zone")
    # A token issued before the backup still admits a zone: the signing key is in the store.
    z2 = cluster.start_zone("zone-2", token_file=later_token)
    wait_for(lambda: "after" in _names(z2), what="zone-2 synced from the restored global")


def test_a_zones_online_backup_keeps_its_own_resources(cluster: Cluster) -> None:
    """The same backup of a running zone's store, restored alone into an empty data dir: the
    zone's own resources are back, and what it synced catches up with global (resumed from
    the backup's revision, or a snapshot)."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    assert z.put("/meshes/default/secrets/local-1", _secret("local-1")).status_code == 201
    for i in range(5):
        assert g.put(f"/meshes/default/secrets/g-{i}", _secret(f"g-{i}")).status_code == 201
    wait_for(lambda: z.secret("default", "g-4"), what="synced before the backup")
    backup = cluster.tmp / "zone-backup.db"
    _online_backup(z.data_dir / "zone.db", backup)
    for i in range(5, 10):
        assert g.put(f"/meshes/default/secrets/g-{i}", _secret(f"g-{i}")).status_code == 201
    wait_for(lambda: z.secret("default", "g-9"), what="synced after the backup")

    z.stop()
    shutil.move(z.data_dir, cluster.tmp / "zone-lost")
    z.data_dir.mkdir(mode=0o700)
    shutil.copyfile(backup, z.data_dir / "zone.db")
    z.start()
    assert z.secret("default", "local-1")["data"] == b64("value of local-1")
    wait_for(lambda: _names(z) == _names(g) | {"local-1"}, what="zone caught up with global")
