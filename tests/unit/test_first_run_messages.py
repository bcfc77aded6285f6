"""Messages a new user meets first: help on -h, defaults shown in the README's units, and
kdsctl pointed at global's sync port instead of an API."""

from __future__ import annotations

import socket
import threading

import pytest
from click.testing import CliRunner

from globalcp.cli import cli as globalcp_cli
from kds.config import format_duration, format_size
from kdsctl.client import ApiClient, ApiUnreachable
from zonecp.cli import cli as zonecp_cli


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2.0, "2s"),
        (15.0, "15s"),
        (90.0, "90s"),
        (900.0, "15m"),
        (86400.0, "1d"),
        (1.5, "1.5s"),
        (0.25, "250ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("n", "text"), [(1024 * 1024, "1MiB"), (4 * 1024 * 1024, "4MiB"), (2048, "2KiB"), (500, "500B")]
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize("cli", [globalcp_cli, zonecp_cli])
def test_h_is_help_with_readme_units(cli: object) -> None:
    for args in (["-h"], ["run", "-h"]):
        result = CliRunner().invoke(cli, args, terminal_width=200)  # type: ignore[arg-type]
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
    text = " ".join(result.output.split())
    assert "default 4MiB]" in text and "default 3s]" in text
    assert "1048576" not in text and "default 2.0" not in text


def test_kdsctl_at_the_sync_port_says_where_the_api_is() -> None:
    # A server that closes every connection without an answer, as gRPC does to HTTP/1.1.
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    client = ApiClient(f"http://127.0.0.1:{port}", timeout=5)
    try:
        with pytest.raises(ApiUnreachable) as e:
            client.get("/meshes")
    finally:
        client.close()
        srv.close()
    assert "looks like global's sync port" in str(e.value)
    assert "5681 on global, 5682 on a zone" in str(e.value)


def test_zone_dial_errors_carry_a_hint() -> None:
    from zonecp.dial import hint as _hint

    tls = "UNAVAILABLE: ... SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get"
    assert "pass global's DATA_DIR/ca.crt with --ca-file" in _hint(tls)
    http = "UNAVAILABLE: ... SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid"
    assert "not the sync port (global's --kds-address, default 5685)" in _hint(http)
    assert _hint("UNAVAILABLE: failed to connect to all addresses; Connection refused") == ""
    name = (
        "UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:"
        "5685: Custom verification check failed with error: UNAUTHENTICATED: Hostname "
        "Verification Check failed."
    )
    assert "does not name the host dialled" in _hint(name) and "--tls-names" in _hint(name)
