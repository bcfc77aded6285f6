"""kdsctl starts fast because a simple command imports only what it needs: no HTTP library
beyond the standard library's, no YAML, crypto, gRPC, server or store code, and no
importlib.metadata (which only --version asks). Checked on the modules a fresh interpreter
has loaded after the command ran, not on a timing (bench/kdsctl_calls.py measures that)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Modules whose import costs tens of milliseconds, or that a client has no use for.
HEAVY = (
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "trio",
    "yaml",
    "cryptography",
    "jwt",
    "grpc",
    "google.protobuf",
    "aiohttp",
    "structlog",
    "prometheus_client",
    "importlib.metadata",
    "kds.store",
    "kds.api",
    "kds.protocol",
)

PROBE = """
import json, sys
from kdsctl.cli import cli
try:
    cli(sys.argv[1:], prog_name="kdsctl")
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"role": "global", "items": [], "total": 0, "next": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# What only writing commands need: a read loads none of it (kdsctl.cli's lazy commands).
WRITING = (
    "kdsctl.apply",
    "kdsctl.inputs",
    "kdsctl.tokens",
    "kdsctl.status",
    "kdsctl.wait",
    "kds.model",
    "kds.kubernetes",
    "kds.mtls",
    "kds.validation",
    "kds.safe_yaml",
)


def _loaded(*args: str, watch: tuple[str, ...] = HEAVY) -> tuple[int, list[str], str]:
    r = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {watch!r}\n{PROBE}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(r.stderr.strip().splitlines()[-1])
    return report["code"], report["heavy"], r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["get", "secrets"],
        ["get", "meshes", "-o", "json"],
        ["get", "global-secrets"],
        ["inspect", "zones"],
        ["-h"],
        ["get", "secrets", "--help"],
    ],
)
def test_a_simple_command_loads_no_heavy_module(api_url: str, args: list[str]) -> None:
    code, heavy, out = _loaded("--api-url", api_url, *args)
    assert code in (0, None), out
    assert heavy == []


def test_version_loads_only_the_package_metadata() -> None:
    code, heavy, out = _loaded("--version")
    assert code in (0, None) and out.startswith("kdsctl, version ")
    assert heavy and all(m.startswith("importlib.metadata") for m in heavy), heavy


def test_the_probe_sees_a_heavy_import(api_url: str) -> None:
    """Not blind: -o yaml needs yaml, and the probe reports it."""
    code, heavy, _ = _loaded("--api-url", api_url, "get", "meshes", "-o", "yaml")
    assert code in (0, None)
    assert "yaml" in heavy


@pytest.mark.parametrize(
    "args", [["get", "secrets"], ["get", "meshes", "-o", "json"], ["get", "secrets", "--help"]]
)
def test_a_read_loads_no_module_only_writes_need(api_url: str, args: list[str]) -> None:
    code, loaded, out = _loaded("--api-url", api_url, *args, watch=WRITING)
    assert code in (0, None), out
    assert loaded == []


def test_the_lazy_commands_load_when_used_or_listed(api_url: str) -> None:
    """Not blind either: --help lists every command, so loads their modules; apply's own
    --help loads apply."""
    _, loaded, out = _loaded("--help", watch=WRITING)
    assert "apply" in out and "rotate" in out and "kdsctl.tokens" in loaded, out
    _, loaded, _ = _loaded("apply", "--help", watch=WRITING)
    assert "kdsctl.apply" in loaded and "kdsctl.tokens" not in loaded
