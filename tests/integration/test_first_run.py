"""What a new user meets when a daemon is set up wrong: a global whose port is taken leaves
nothing behind, a zone dialling the wrong port or lacking the CA says how to fix it, and
gRPC's C core prints none of its own lines into the zone's log, nor global's port error."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.integration.conftest import BIN, Cluster, free_port, wait_for

C_CORE_FILES = ("ssl_transport_security.cc", "add_port.cc", "chttp2_server.cc")


def _no_c_core_lines(text: str) -> None:
    for name in C_CORE_FILES:
        assert name not in text, text


def test_taken_port_leaves_no_data_dir(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "global"
        for option, api, kds in (
            ("--kds-address", free_port(), port),
            ("--api-address", port, free_port()),
        ):
            run = subprocess.run(
                [
                    str(BIN / "globalcp"),
                    "run",
                    "--data-dir",
                    str(data_dir),
                    "--api-address",
                    f"127.0.0.1:{api}",
                    "--kds-address",
                    f"127.0.0.1:{kds}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            out = run.stdout + run.stderr
            assert run.returncode == 1, out
            assert f"{option} 127.0.0.1:{port}: cannot listen" in out, out
            assert not data_dir.exists(), out
            _no_c_core_lines(out)


def test_a_zone_whose_api_port_is_taken_leaves_no_data_dir(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "zone"
        run = subprocess.run(
            [
                str(BIN / "zonecp"),
                "run",
                "--zone",
                "zone-a",
                "--insecure",
                "--global-address",
                f"grpc://127.0.0.1:{free_port()}",
                "--data-dir",
                str(data_dir),
                "--api-address",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        out = run.stdout + run.stderr
        assert run.returncode == 1, out
        assert f"--api-address 127.0.0.1:{port}: cannot listen" in out, out
        assert not data_dir.exists(), out


def test_zone_dial_errors_name_the_fix(cluster: Cluster) -> None:
    cluster.start_global()
    token = cluster.zone_token("zone-1")
    # No --ca-file: global's own CA is not among the system's.
    no_ca = cluster.start_zone("zone-1", synced=False, token_file=token)
    no_ca.argv.remove("--ca-file")
    no_ca.argv.remove(str(cluster.tmp / "global" / "ca.crt"))
    no_ca.stop()
    no_ca.start()
    hint = "pass global's DATA_DIR/ca.crt with --ca-file"
    wait_for(lambda: hint in no_ca.log_text(), what="the --ca-file hint")
    # Global's API port instead of its sync port.
    http_port = cluster.start_zone(
        "zone-2",
        "--global-address",
        f"grpcs://127.0.0.1:{cluster.global_api}",
        synced=False,
    )
    hint = "this looks like an HTTP port, not the sync port"
    wait_for(lambda: hint in http_port.log_text(), what="the sync port hint")
    for d in (no_ca, http_port):
        _no_c_core_lines(d.log_text())
