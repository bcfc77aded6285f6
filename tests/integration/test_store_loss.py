"""A daemon whose store file is gone or emptied refuses to start instead of serving a new
empty store, and names the file and the fix; --new-store accepts a new one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.conftest import Cluster


def _lose(path: Path, how: str) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    if how == "emptied":
        path.write_bytes(b"")


def test_a_lost_store_is_refused_on_global_and_zone(cluster: Cluster) -> None:
    g = cluster.start_global()
    z = cluster.start_zone("zone-a")
    assert z.stop() == 0 and g.stop() == 0
    _lose(cluster.tmp / "global" / "global.db", "deleted")
    _lose(cluster.tmp / "zone-a" / "zone.db", "emptied")
    for d, what in ((g, "global.db is missing"), (z, "zone.db is empty")):
        r = subprocess.run(d.argv, capture_output=True, text=True, timeout=30)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert what in out and "--new-store" in out and ".db.id" in out, out
    g.argv.append("--new-store")
    g.start()
    z.argv.append("--new-store")
    z.start()
