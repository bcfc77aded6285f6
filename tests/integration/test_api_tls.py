"""The HTTP API over HTTPS (--api-tls-cert-file/--api-tls-key-file) on real daemons: kdsctl
verifies it with --ca-file, plain HTTP gets nowhere, a replaced certificate is served from the
next connection on, and the container health check speaks it."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kds import tls
from tests.integration.conftest import BIN, free_port, wait_for


def _write_pair(d: Path, label: str) -> tuple[Path, Path, Path]:
    ca = tls.make_ca(f"api test {label}")
    pair = tls.issue_server_cert(ca, ["127.0.0.1", "localhost"])
    d.mkdir(parents=True, exist_ok=True)
    cert, key, ca_file = d / "api.crt", d / "api.key", d / "ca.crt"
    for path, data in ((cert, pair.cert_pem), (key, pair.key_pem), (ca_file, ca.cert_pem)):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # whole files only, as a certificate manager would
    return cert, key, ca_file


def _verify(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.terminate()
        p.wait(10)


def test_api_over_https_on_both_daemons(tmp_path: Path, procs: list) -> None:  # type: ignore[type-arg]
    live = tmp_path / "live"
    cert, key, _ = _write_pair(live, "one")
    first_ca = tmp_path / "first-ca.crt"
    first_ca.write_bytes((live / "ca.crt").read_bytes())
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    tls_args = ["--api-tls-cert-file", str(cert), "--api-tls-key-file", str(key)]
    log = (tmp_path / "global.log").open("wb")
    procs.append(
        subprocess.Popen(
            [str(BIN / "globalcp"), "run", "--data-dir", str(tmp_path / "g"),
             "--api-address", f"127.0.0.1:{port}", "--kds-address", f"127.0.0.1:{free_port()}",
             "--log-format", "json", *tls_args],
            stdout=log, stderr=log,
        )
    )  # fmt: skip
    wait_for(
        lambda: httpx.get(f"{url}/readyz", verify=_verify(first_ca)).status_code == 200,
        15,
        "global's API over HTTPS",
    )
    assert '"api": "https://127.0.0.1:' in (tmp_path / "global.log").read_text()
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the HTTPS port gets no answer
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3)

    env = {
        **os.environ,
        "KDSCTL_API_URL": url,
        "KDSCTL_TOKEN_FILE": str(tmp_path / "g" / "admin-token"),
    }

    def kdsctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kdsctl"), *args], capture_output=True, text=True, env=env, timeout=30
        )

    r = kdsctl("--ca-file", str(first_ca), "get", "meshes")
    assert r.returncode == 0 and "default" in r.stdout, r.stderr
    r = kdsctl("get", "meshes")  # the system's CAs do not know this one
    assert r.returncode == 1 and "not trusted" in r.stderr and "--ca-file" in r.stderr
    r = kdsctl("--api-url", f"http://127.0.0.1:{port}", "get", "meshes")
    assert r.returncode == 1, r.stdout
    r = kdsctl("--ca-file", str(cert.with_name("nope")), "get", "meshes")
    assert r.returncode == 2 and "'--ca-file'" in r.stderr

    # A replaced certificate (another CA) is served from the next connection, no restart.
    _write_pair(live, "two")
    wait_for(
        lambda: httpx.get(f"{url}/readyz", verify=_verify(live / "ca.crt")).status_code == 200,
        10,
        "the replaced certificate",
    )
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/readyz", verify=_verify(first_ca))
    r = kdsctl("--ca-file", str(live / "ca.crt"), "get", "meshes")
    assert r.returncode == 0, r.stderr

    # A zone's API too; and the image's health check speaks HTTPS (unverified, loopback).
    zport = free_port()
    zlog = (tmp_path / "zone.log").open("wb")
    procs.append(
        subprocess.Popen(
            [str(BIN / "zonecp"), "run", "--zone", "z", "--data-dir", str(tmp_path / "z"),
             "--api-address", f"127.0.0.1:{zport}", "--global-address",
             f"grpc://127.0.0.1:{free_port()}", "--insecure", *tls_args],
            stdout=zlog, stderr=zlog,
        )
    )  # fmt: skip
    zurl = f"https://127.0.0.1:{zport}"
    wait_for(
        lambda: httpx.get(f"{zurl}/healthz", verify=_verify(live / "ca.crt")).status_code == 200,
        15,
        "the zone's API over HTTPS",
    )
    check = [sys.executable, "-m", "kds.healthcheck"]
    assert subprocess.run([*check, f"{url}/readyz"], capture_output=True).returncode == 0
    # The zone never reached a global: up, not ready; the check says so.
    r = subprocess.run([*check, f"{zurl}/readyz"], capture_output=True, text=True)
    assert r.returncode == 1 and "503" in r.stderr


def test_api_tls_options_go_together(tmp_path: Path) -> None:
    cert, _, _ = _write_pair(tmp_path, "one")
    r = subprocess.run(
        [str(BIN / "globalcp"), "run", "--data-dir", str(tmp_path / "g"),
         "--api-address", f"127.0.0.1:{free_port()}", "--kds-address",
         f"127.0.0.1:{free_port()}", "--api-tls-cert-file", str(cert)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode != 0
    assert "--api-tls-cert-file and --api-tls-key-file go together" in r.stdout + r.stderr
