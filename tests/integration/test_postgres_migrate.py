"""globalcp and zonecp migrate-store: a SQLite store moved to PostgreSQL stays the same store,
so zones resume (no snapshot) when global, or the zone itself, comes back on PostgreSQL."""

from __future__ import annotations

import subprocess
import uuid

from tests.integration.conftest import BIN, Cluster, Daemon, b64, wait_for
from tests.pgserver import shared_server


def _migrate(command: str, d: Daemon) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """``command migrate-store`` on ``d``'s data dir: refused while ``d`` runs, then done once
    it is stopped. The --postgres-* options used, and the finished run."""
    pg = ["--postgres-url", shared_server().url, "--postgres-schema", "m" + uuid.uuid4().hex[:12]]
    migrate = [str(BIN / command), "migrate-store", "--data-dir", str(d.data_dir), *pg]
    refused = subprocess.run(migrate, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "in use by another process" in refused.stderr
    d.stop()
    done = subprocess.run(migrate, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return pg, done


def test_a_migrated_global_is_resumed_by_its_zone(cluster: Cluster) -> None:
    g = cluster.start_global()
    z = cluster.start_zone("zone-m")
    body = {"type": "Secret", "mesh": "default", "name": "before", "data": b64("1")}
    assert g.put("/meshes/default/secrets/before", body).status_code == 201
    wait_for(lambda: z.secret("default", "before"), what="the write before the move")
    snapshots = z.get_json("/status")["snapshots"]

    pg, done = _migrate("globalcp", g)
    assert "revision 2" in done.stdout and "zones resume" in done.stdout

    g.argv += ["--store", "postgres", *pg]
    g.start()
    assert "schema" in g.wait_event("global started")["store"]
    body = {"type": "Secret", "mesh": "default", "name": "after", "data": b64("2")}
    assert g.put("/meshes/default/secrets/after", body).status_code == 201
    wait_for(lambda: z.secret("default", "after"), 20, "the write after the move")
    st = z.get_json("/status")
    assert st["snapshots"] == snapshots and st["lastSync"]["mode"] == "resume", st


def test_a_migrated_zone_resumes_keeping_its_own_secrets_and_conflicts(cluster: Cluster) -> None:
    """zonecp migrate-store: the zone's store moved to PostgreSQL keeps its id, the revision
    it applied, its zone-local secrets and the copy a name conflict keeps aside; started on
    PostgreSQL, the zone resumes (no snapshot) and gets what global wrote meanwhile."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-mz")
    local = {"type": "Secret", "mesh": "default", "name": "mine", "data": b64("zone-own")}
    assert z.put("/meshes/default/secrets/mine", local).status_code == 201
    dup = {"type": "Secret", "mesh": "default", "name": "dup", "data": b64("zone-dup")}
    assert z.put("/meshes/default/secrets/dup", dup).status_code == 201
    dup_g = {"type": "Secret", "mesh": "default", "name": "dup", "data": b64("global-dup")}
    assert g.put("/meshes/default/secrets/dup", dup_g).status_code == 201
    body = {"type": "Secret", "mesh": "default", "name": "before", "data": b64("1")}
    assert g.put("/meshes/default/secrets/before", body).status_code == 201
    wait_for(lambda: z.secret("default", "before"), what="the write before the move")
    before = z.get_json("/status")
    store_id = (z.data_dir / "zone.db.id").read_text().strip()

    pg, done = _migrate("zonecp", z)
    assert f"copied store {store_id}" in done.stdout and "resumes" in done.stdout
    body = {"type": "Secret", "mesh": "default", "name": "meanwhile", "data": b64("2")}
    assert g.put("/meshes/default/secrets/meanwhile", body).status_code == 201

    z.argv += ["--store", "postgres", *pg]
    z.start()
    wait_for(lambda: z.secret("default", "meanwhile"), 20, "the write made during the move")
    st = z.get_json("/status")
    assert before["snapshots"] == 1  # its first connection
    assert st["snapshots"] == 0 and st["lastSync"]["mode"] == "resume", st  # since restarted
    assert z.secret("default", "mine")["data"] == b64("zone-own")
    assert z.secret("default", "dup")["data"] == b64("zone-dup")  # its own, still shadowing
    assert (postgres_store_id(z)) == store_id
    # Deleting the zone's own copy puts global's, kept aside through the move, in its place.
    assert z.http.delete("/meshes/default/secrets/dup").status_code == 200
    assert z.secret("default", "dup")["data"] == b64("global-dup")


def postgres_store_id(d: Daemon) -> str:
    """The store id the daemon's PostgreSQL marker records."""
    return (d.data_dir / "postgres-store.id").read_text().strip()
