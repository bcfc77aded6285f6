"""globalcp migrate-store: a SQLite global moved to PostgreSQL stays the same store for its
zones, which resume (no snapshot) when global comes back on PostgreSQL."""

from __future__ import annotations

import subprocess
import uuid

from tests.integration.conftest import BIN, Cluster, b64, wait_for
from tests.pgserver import shared_server


def test_a_migrated_global_is_resumed_by_its_zone(cluster: Cluster) -> None:
    g = cluster.start_global()
    z = cluster.start_zone("zone-m")
    body = {"type": "Secret", "mesh": "default", "name": "before", "data": b64("1")}
    assert g.put("/meshes/default/secrets/before", body).status_code == 201
    wait_for(lambda: z.secret("default", "before"), what="the write before the move")
    snapshots = z.get_json("/status")["snapshots"]

    pg = ["--postgres-url", shared_server().url, "--postgres-schema", "m" + uuid.uuid4().hex[:12]]
    migrate = [str(BIN / "globalcp"), "migrate-store", "--data-dir", str(g.data_dir), *pg]
    refused = subprocess.run(migrate, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "in use by another process" in refused.stderr
    g.stop()
    done = subprocess.run(migrate, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "revision 2" in done.stdout and "zones resume" in done.stdout

    g.argv += ["--store", "postgres", *pg]
    g.start()
    assert "schema" in g.wait_event("global started")["store"]
    body = {"type": "Secret", "mesh": "default", "name": "after", "data": b64("2")}
    assert g.put("/meshes/default/secrets/after", body).status_code == 201
    wait_for(lambda: z.secret("default", "after"), 20, "the write after the move")
    st = z.get_json("/status")
    assert st["snapshots"] == snapshots and st["lastSync"]["mode"] == "resume", st
