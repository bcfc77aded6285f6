"""A zone refuses to serve another zone's store: a data dir copied from another zone (a cloned
host or volume) or a changed --zone served that zone's own secrets as this zone's, labelled
with this zone's name, and resumed its sync. The store records the zone at its first start."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from kds.store import open_zone_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_zone_refuses_the_store_of_another_zone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    store = open_zone_store(data / "zone.db")
    try:
        assert asyncio.run(store.bind_zone("zone-a")) == "zone-a"
    finally:
        store.close()
    args = [
        str(Path(sys.executable).parent / "zonecp"),
        "run",
        "--zone",
        "zone-b",
        "--insecure",
        "--global-address",
        "grpc://127.0.0.1:1",
        "--data-dir",
        str(data),
        "--api-address",
        f"127.0.0.1:{_free_port()}",
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "--zone zone-b: the store" in out, out
    assert "belongs to zone 'zone-a': start it with --zone zone-a" in out
