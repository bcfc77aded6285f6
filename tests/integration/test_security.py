"""Security with real processes: TLS on the sync stream, zone tokens and every refusal,
revocation of a live stream, signing key rotation, API tokens, insecure mode warnings."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import BIN, Cluster, Daemon, b64, wait_for


def _refusal(z: Daemon, needle: str) -> dict:  # type: ignore[type-arg]
    """The zone's logged retry whose error contains ``needle`` (logged at error level)."""
    found = wait_for(
        lambda: [e for e in z.events("cannot sync with global: retrying") if needle in e["error"]],
        15,
        f"{z.name} refused with {needle!r}",
    )
    return found[-1]  # type: ignore[no-any-return]


def test_every_bad_zone_token_is_refused_with_its_reason(cluster: Cluster, tmp_path: Path) -> None:
    g = cluster.start_global()
    good = cluster.start_zone("zone-good")
    short = cluster.zone_token("zone-expired", valid_for="1s")
    other = cluster.zone_token("zone-other")
    revoked = cluster.zone_token("zone-revoked")
    revoked_id = g.get_json("/zone-tokens")["items"][-1]["id"]
    cluster.kdsctl("revoke", "zone-token", revoked_id)
    (tmp_path / "empty.token").write_text("")
    (tmp_path / "garbage.token").write_text("not-a-jwt\n")
    time.sleep(1.5)  # the short token expires
    cases = {
        "zone-empty": (tmp_path / "empty.token", "UNAUTHENTICATED", "no zone token"),
        "zone-garbage": (tmp_path / "garbage.token", "UNAUTHENTICATED", "malformed zone token"),
        "zone-expired": (short, "UNAUTHENTICATED", "expired at"),
        "zone-revoked": (revoked, "PERMISSION_DENIED", "has been revoked"),
        "zone-thief": (
            other,
            "PERMISSION_DENIED",
            "issued for zone 'zone-other', not 'zone-thief'",
        ),
    }
    zones = {
        name: cluster.start_zone(name, synced=False, token_file=path)
        for name, (path, _, _) in cases.items()
    }
    for name, (_, code, reason) in cases.items():
        z = zones[name]
        e = _refusal(z, reason)
        assert e["level"] == "error" and e["error"].startswith(code), e
        g.wait_event("zone refused: bad token", zone=name, code=code)
        assert reason in z.get_json("/status")["lastError"]["message"]
        assert z.get_json("/meshes/default") is None  # nothing was synced
    # No refused zone reached the zone list (unknown names never fill it); the good one did.
    assert [z["name"] for z in g.get_json("/zones")["items"]] == ["zone-good"]
    assert good.get_json("/status")["connected"]
    # Tokens never appear in logs, even refused ones.
    logs = cluster.all_logs()
    for path, _, _ in cases.values():
        token = path.read_text().strip()
        if len(token) > 20:
            assert token not in logs


def test_revoking_a_token_ends_its_live_stream(cluster: Cluster) -> None:
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    other = cluster.start_zone("zone-2")
    token_id = next(t["id"] for t in g.get_json("/zone-tokens")["items"] if t["zone"] == "zone-1")
    out = cluster.kdsctl("revoke", "zone-token", token_id).stdout
    assert "1 live stream(s) ended" in out
    e = wait_for(lambda: z.events("sync stream ended"), 10, "zone-1's stream ended")[-1]
    assert "PERMISSION_DENIED" in e["error"] and "revoked" in e["error"]
    _refusal(z, "has been revoked")  # and every new attempt is refused
    wait_for(lambda: g.get_json("/zones/zone-1")["status"] == "Offline", what="zone-1 Offline")
    assert "revoked" in g.zone_sync("zone-1")["lastError"]["message"]
    listed = cluster.kdsctl("get", "zone-tokens").stdout
    assert token_id in listed and "zone-1" in listed
    g.put("/global-secrets/after", {"type": "GlobalSecret", "name": "after", "data": b64("x")})
    wait_for(lambda: other.get_json("/global-secrets/after"), what="zone-2 unaffected")
    assert z.get_json("/global-secrets/after") is None


def test_signing_keys_rotate_and_removed_keys_refuse_their_tokens(cluster: Cluster) -> None:
    g = cluster.start_global()
    old_token = cluster.zone_token("zone-1")
    out = cluster.kdsctl("rotate", "zone-token-signing-key").stdout
    assert "zone-token-signing-key-2 now signs new zone tokens" in out
    new_token = cluster.zone_token("zone-2")
    z1 = cluster.start_zone("zone-1", token_file=old_token)  # the old key still verifies
    z2 = cluster.start_zone("zone-2", token_file=new_token)
    keys = cluster.kdsctl("get", "zone-token-signing-keys").stdout
    assert "zone-token-signing-key-1" in keys and "zone-token-signing-key-2" in keys
    r = g.http.get("/zone-token-signing-keys")
    assert all(set(k) == {"name", "current"} for k in r.json()["items"])  # never a key
    out = cluster.kdsctl("delete", "zone-token-signing-key", "zone-token-signing-key-1").stdout
    assert "1 live stream(s) ended" in out
    # The live stream it authenticated ends at once; every new attempt is refused.
    e = wait_for(lambda: z1.events("sync stream ended"), 10, "zone-1's stream ended")[-1]
    assert "PERMISSION_DENIED" in e["error"] and "zone-token-signing-key-1" in e["error"]
    _refusal(z1, "signed by a key this global does not hold")
    g.wait_event("zone refused: bad token", detail="kid zone-token-signing-key-1")
    assert z2.get_json("/status")["connected"]
    assert not z2.events("sync stream ended")
    r = cluster.kdsctl("delete", "zone-token-signing-key", "zone-token-signing-key-2", check=False)
    assert r.returncode == 1 and "only signing key" in r.stderr


def test_a_token_expiring_during_a_stream_ends_it_and_a_new_file_brings_the_zone_back(
    cluster: Cluster,
) -> None:
    g = cluster.start_global()
    path = cluster.zone_token("zone-1", valid_for="6s")
    z = cluster.start_zone("zone-1", "--reconnect-max-delay", "1s", token_file=path)
    e = wait_for(lambda: z.events("sync stream ended"), 20, "the stream ended at expiry")[-1]
    assert e["error"].startswith("UNAUTHENTICATED") and "expired at" in e["error"], e
    ended = g.wait_event("ending the zone's stream", zone="zone-1")
    assert "expired at" in ended["reason"]
    _refusal(z, "expired at")  # redials are refused until the file holds a valid token
    wait_for(lambda: g.get_json("/zones/zone-1")["status"] == "Offline", what="zone-1 Offline")
    fresh = cluster.zone_token("zone-1")
    path.write_text(fresh.read_text())
    wait_for(lambda: z.get_json("/status")["connected"], 15, "zone-1 back with the new token")
    g.put("/global-secrets/after", {"type": "GlobalSecret", "name": "after", "data": b64("x")})
    wait_for(lambda: z.get_json("/global-secrets/after"), what="sync after the new token")


def test_api_needs_a_token_and_the_read_only_token_never_sees_data(cluster: Cluster) -> None:
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    g.put(
        "/meshes/default/secrets/s",
        {"type": "Secret", "mesh": "default", "name": "s", "data": b64("v")},
    )
    for d in (g, z):
        anon = httpx.get(f"{d.api_url}/meshes/default/secrets")
        assert anon.status_code == 401 and "needs a bearer token" in anon.json()["detail"]
        assert anon.headers["WWW-Authenticate"].startswith("Bearer")
        bad = httpx.get(f"{d.api_url}/meshes", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "not valid" in bad.json()["detail"]
        for path in ("/", "/healthz", "/readyz", "/openapi.json"):
            assert httpx.get(f"{d.api_url}{path}").status_code == 200, path
        ro = {"Authorization": f"Bearer {d.read_only_token}"}
        wait_for(lambda d=d: d.secret("default", "s"), what="secret everywhere")
        item = httpx.get(f"{d.api_url}/meshes/default/secrets/s", headers=ro).json()
        assert item["name"] == "s" and "data" not in item
        listed = httpx.get(f"{d.api_url}/meshes/default/secrets", headers=ro).json()
        assert listed["items"] and all("data" not in i for i in listed["items"])
        put = httpx.put(
            f"{d.api_url}/global-secrets/x",
            headers=ro,
            json={"type": "GlobalSecret", "name": "x", "data": b64("x")},
        )
        assert put.status_code == 403 and "read-only" in put.json()["detail"]
        assert httpx.get(f"{d.api_url}/metrics", headers=ro).status_code == 200
    assert (
        httpx.get(
            f"{g.api_url}/zones", headers={"Authorization": f"Bearer {g.read_only_token}"}
        ).status_code
        == 200
    )
    r = cluster.kdsctl("get", "secrets", token="", check=False)
    assert r.returncode == 1 and "needs a bearer token" in r.stderr and "KDSCTL_TOKEN" in r.stderr
    r = cluster.kdsctl("get", "secret", "s", "-o", "json", token=g.read_only_token)
    assert '"data"' not in r.stdout
    r = cluster.kdsctl(
        "generate", "zone-token", "--zone", "z", token=g.read_only_token, check=False
    )
    assert r.returncode == 1 and "Forbidden" in r.stderr


def test_transport_options_are_checked_and_insecure_mode_warns(cluster: Cluster) -> None:
    g = cluster.start_global()
    token = cluster.zone_token("zone-1")
    base = [str(BIN / "zonecp"), "run", "--zone", "zone-1", "--data-dir", str(cluster.tmp / "x")]
    r = subprocess.run(
        [*base, "--global-address", f"grpc://127.0.0.1:{cluster.kds_port}", "--token-file", str(token)],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 1 and "is plaintext: use grpcs://" in r.stderr
    r = subprocess.run(
        [*base, "--global-address", f"grpcs://127.0.0.1:{cluster.kds_port}"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 1 and "--token-file is required" in r.stderr
    # Without the CA that signed global's certificate, the handshake fails: never trusted blindly.
    blind = cluster.start_zone(
        "zone-1", "--ca-file", "/etc/ssl/certs/ca-certificates.crt", synced=False, token_file=token
    )
    _refusal(blind, "UNAVAILABLE")
    assert blind.get_json("/meshes/default") is None
    blind.stop()
    # Plaintext on both sides: both warn at start, and it works.
    g.stop()
    g.argv.append("--kds-insecure")
    g.start()
    assert g.events(
        "INSECURE: the sync stream is plaintext and zones are not authenticated (--kds-insecure); never use this beyond one trusted host"
    )
    z = cluster.start_zone(
        "zone-2",
        "--global-address",
        f"grpc://127.0.0.1:{cluster.kds_port}",
        "--insecure",
        token_file=token,
    )
    assert any(e["event"].startswith("INSECURE: dialling global in plaintext") for e in z.logs())
    # The probe test_sync_port_speaks_tls_1_2_or_newer_only relies on tells the two apart: a
    # plaintext global answers it with an HTTP/2 SETTINGS frame.
    answer = _plaintext_http2_probe(cluster.kds_port)
    assert answer is not None and len(answer) >= 9 and answer[3] == HTTP2_SETTINGS, answer


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cert_file: Path, key_file: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca[1], hashes.SHA256())
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_given_certificate_is_served_and_replaced_without_a_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    ca1, ca2 = _ca("test CA one"), _ca("test CA two")
    for i, ca in ((1, ca1), (2, ca2)):
        (tmp_path / f"ca{i}.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    _leaf(ca1, cert, key)
    g = cluster.start_global("--tls-cert-file", str(cert), "--tls-key-file", str(key))
    assert not (cluster.tmp / "global" / "ca.crt").exists()  # no own CA when one is given
    z1 = cluster.start_zone("zone-1", "--ca-file", str(tmp_path / "ca1.crt"))
    # Replace the files (as a certificate manager would): new connections get the new one.
    staged_cert, staged_key = tmp_path / "new.crt", tmp_path / "new.key"
    _leaf(ca2, staged_cert, staged_key)
    staged_key.replace(key)
    staged_cert.replace(cert)
    z2 = cluster.start_zone("zone-2", "--ca-file", str(tmp_path / "ca2.crt"))
    g.wait_event("TLS certificate reloaded")
    assert z1.get_json("/status")["connected"]  # the live stream keeps its session
    z1.stop()
    z1.start()  # trusts only the old CA: refused from now on
    _refusal(z1, "UNAVAILABLE")
    assert z2.get_json("/status")["connected"]


TLS_ALERT = 0x15  # the content type of a TLS alert record
HTTP2_SETTINGS = 0x04  # the type of an HTTP/2 SETTINGS frame (the fourth byte of its header)


def _plaintext_http2_probe(port: int) -> bytes | None:
    """Open the port as a plaintext HTTP/2 client would (preface and an empty SETTINGS frame)
    and return the first bytes the server answers, or None when it closes the connection.
    A server that says nothing within 5 s fails the test (silence proves nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            return plain.recv(100) or None
        except ConnectionResetError:
            return None


def _handshake(port: int, version: ssl.TLSVersion, ca: Path) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return str(tls.version())
        except ssl.SSLError as e:
            return f"refused: {e.reason}"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_sync_port_speaks_tls_1_2_or_newer_only(cluster: Cluster) -> None:
    g = cluster.start_global()
    ca = cluster.tmp / "global" / "ca.crt"
    assert _handshake(cluster.kds_port, ssl.TLSVersion.TLSv1_3, ca) == "TLSv1.3"
    assert _handshake(cluster.kds_port, ssl.TLSVersion.TLSv1_2, ca) == "TLSv1.2"
    old = _handshake(cluster.kds_port, ssl.TLSVersion.TLSv1_1, ca)
    assert old.startswith("refused"), old
    # Refused by the server (grpc logs why), not by this client: it offered TLS 1.1.
    wait_for(lambda: "UNSUPPORTED_PROTOCOL" in g.log_text(), 5, "global's handshake refusal")
    # A plaintext HTTP/2 client gets a TLS alert or a closed connection, never an HTTP/2 frame
    # (test_transport_options_are_checked_and_insecure_mode_warns shows a plaintext global
    # answers the same probe with one).
    answer = _plaintext_http2_probe(cluster.kds_port)
    assert answer is None or answer[0] == TLS_ALERT, answer


def test_no_secret_value_leaks_and_encrypted_stores_hold_no_plaintext(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Unique markers written through every path never show in a log, an API answer other
    than the secret's own GET, status (history, resources and latency too), metrics, the
    status page or kdsctl output; with --encryption-key-file no store file holds them."""
    keys = tmp_path / "keys"
    keys.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    keys.chmod(0o600)
    enc = ("--encryption-key-file", str(keys))
    markers = [f"leak-marker-{i}-c41d" for i in range(7)]
    g = cluster.start_global(*enc)
    z = cluster.start_zone("zone-1", *enc)
    outputs: list[str] = []

    def secret(name: str, value: str, mesh: str = "default", **labels: str) -> dict:  # type: ignore[type-arg]
        body = {"type": "Secret", "mesh": mesh, "name": name, "data": b64(value)}
        return {**body, "labels": labels} if labels else body

    g.put("/meshes/default/secrets/api", secret("api", markers[0]))  # the API
    r = cluster.kdsctl(  # kdsctl
        "apply", "-f", "-", input=f"type: GlobalSecret\nname: cli\ndata: {b64(markers[1])}\n"
    )
    outputs += [r.stdout, r.stderr]
    z.put("/meshes/default/secrets/dup", secret("dup", markers[2]))  # a conflict
    g.put("/meshes/default/secrets/dup", secret("dup", markers[3]))
    z.wait_event("name conflict: this zone keeps its own resource; global's copy is kept aside")
    bad = secret("bad", markers[4], **{"bad key!": "v"})  # refused input
    outputs.append(g.put("/meshes/default/secrets/bad", bad).text)
    r = cluster.kdsctl(
        "apply", "-f", "-", check=False,
        input=f"type: Secret\nmesh: nope\nname: x\ndata: {b64(markers[4])}\n",
    )  # fmt: skip
    outputs += [r.stdout, r.stderr]
    g.put("/meshes/team", {"type": "Mesh", "name": "team"})  # a resource the zone rejects
    wait_for(lambda: z.get_json("/meshes/team"), what="mesh team")
    z.put("/meshes/team/secrets/own", secret("own", markers[5], "team"))
    g.http.delete("/meshes/team")
    other = cluster.zone_token("zone-other")  # a zone refused for a bad token
    refused = cluster.start_zone("zone-2", *enc, synced=False, token_file=other)
    _refusal(refused, "not 'zone-2'")
    g.put("/global-secrets/late", {"type": "GlobalSecret", "name": "late", "data": b64(markers[6])})
    # Synced but for the Mesh the zone keeps: wait synced says so (exit 3) once it caught up.
    r = cluster.kdsctl("wait", "synced", "--timeout", "20s", check=False)
    assert r.returncode == 3 and "Mesh:team: mesh still holds" in r.stderr, r.stderr
    outputs += [r.stdout, r.stderr]

    ro = {"Authorization": f"Bearer {g.read_only_token}"}
    for path in (
        "/zones",
        "/zones/_overview",
        "/zones/zone-1/_overview",
        "/zones/zone-1/events",
        "/zones/_resources",
        "/zones/_propagation",
        "/metrics",
        "/gui",
    ):
        r = g.http.get(path)
        assert r.status_code == 200, (path, r.text)
        outputs.append(r.text)
    outputs.append(httpx.get(f"{g.api_url}/meshes/default/secrets", headers=ro).text)
    for path in ("/status", "/metrics"):
        outputs.append(z.http.get(path).text)
    for args, api in (
        (("inspect", "zones"), None),
        (("inspect", "zone", "zone-1"), None),
        (("inspect", "sync"), z.api_url),
        (("get", "secrets"), None),
        (("get", "secrets"), z.api_url),
        (("get", "global-secrets"), z.api_url),
        (("get", "zone-tokens"), None),
    ):
        outputs.append(cluster.kdsctl(*args, api=api).stdout)
    assert z.secret("default", "api")["data"] == b64(markers[0])  # it did sync
    cluster.close()  # every daemon stopped: logs complete, stores checkpointed
    text = cluster.all_logs() + "\n".join(outputs)
    stores = b"".join(
        p.read_bytes()
        for d in ("global", "zone-1", "zone-2")
        for p in (cluster.tmp / d).rglob("*")
        if p.is_file()
    )
    for m in markers:
        assert m not in text and b64(m) not in text, m
        assert m.encode() not in stores and b64(m).encode() not in stores, m


def test_a_zone_warns_about_a_token_file_others_can_read(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_global()
    token = cluster.zone_token("zone-1")
    token.chmod(0o644)  # as `kdsctl generate zone-token > file` leaves it under umask 022
    z = cluster.start_zone("zone-1", token_file=token)
    event = "a file holding a secret is readable by other users: run chmod 600 on it"
    [w] = z.events(event)
    assert w["level"] == "warning" and w["option"] == "--token-file", w
    assert w["file"] == str(token) and w["mode"] == "0644" and w["fix"] == f"chmod 600 {token}"
    assert token.read_text().strip() not in z.log_text()
    private = cluster.zone_token("zone-2")
    private.chmod(0o600)
    assert cluster.start_zone("zone-2", token_file=private).events(event) == []
