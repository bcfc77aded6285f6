"""A zone refuses to serve another zone's store: a data dir copied from another zone (a cloned
host or volume) or a changed --zone served that zone's own secrets as this zone's, labelled
with this zone's name, and resumed its sync. The store records the zone at its first start."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from kds.store import PgTarget, open_zone_store
from tests.pgserver import shared_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_zone_b(data: Path, *store: str) -> str:
    """zonecp run as zone-b on ``data`` (and the ``store`` options): its exit code 1 and
    output, or the test fails."""
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
        *store,
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "belongs to zone 'zone-a': start it with --zone zone-a" in out, out
    return out


def test_a_zone_refuses_the_store_of_another_zone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    store = open_zone_store(data / "zone.db")
    try:
        assert asyncio.run(store.bind_zone("zone-a")) == "zone-a"
    finally:
        store.close()
    out = _start_zone_b(data)
    assert f"--zone zone-b: the store {data / 'zone.db'} belongs" in out, out


def test_a_zone_refuses_another_zone_s_schema_naming_it_without_a_password(
    tmp_path: Path,
) -> None:
    url = shared_server().url
    schema = "kds_owner_test"
    store = open_zone_store(PgTarget(url, schema, password="pw-never-shown"))
    try:
        assert asyncio.run(store.bind_zone("zone-a")) == "zone-a"
    finally:
        store.close()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    password = tmp_path / "pg-password"
    password.write_text("pw-never-shown\n")
    password.chmod(0o600)
    out = _start_zone_b(
        data,
        *("--store", "postgres", "--postgres-url", url, "--postgres-schema", schema),
        *("--postgres-password-file", str(password)),
    )
    assert f"schema {schema} belongs to zone 'zone-a'" in out, out
    assert "PgTarget" not in out and "pw-never-shown" not in out


def test_a_store_target_s_repr_leaves_the_password_out() -> None:
    target = PgTarget("postgresql://kds@db:5432/kds", "kds_global", password="pw-never-shown")
    assert "pw-never-shown" not in repr(target) and "kds_global" in repr(target)
