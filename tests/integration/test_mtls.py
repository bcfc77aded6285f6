"""Meshes with mTLS end to end: the seed's example through kdsctl, builtin CAs, two zones,
and a zone whose link is cut again and again while meshes and their CA secrets change."""

from __future__ import annotations

import base64
import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import certs
from tests.integration.conftest import Cluster, Daemon, wait_for
from tests.integration.proxy import Proxy

pytestmark = pytest.mark.integration

# The user documentation's mTLS examples, exactly as it writes them (provided CA, "Example").
SEED_UNIVERSAL = """\
type: Mesh
name: default
mtls:
  backends:
    - name: ca-1
      type: provided
      config:
        cert:
          secret: my-cert # name of the {{site.mesh_product_name}} secret
        key:
          secret: my-key # name of the {{site.mesh_product_name}} secret
"""
SEED_KUBERNETES = """\
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    backends:
      - name: ca-1
        type: provided
        config:
          cert:
            secret: my-cert # name of the Kubernetes secret
          key:
            secret: my-key # name of the Kubernetes secret
"""
BUILTIN = """\
type: Mesh
name: payments
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      config:
        caCert:
          keyType: ECDSA
          expiration: 1y
"""


def _secrets_yaml(mesh: str, cert: str, key: str, pair: certs.Pair) -> str:
    return (
        f"type: Secret\nmesh: {mesh}\nname: {cert}\ndata: {pair.cert_b64}\n---\n"
        f"type: Secret\nmesh: {mesh}\nname: {key}\ndata: {pair.key_b64}\n"
    )


def _state(d: Daemon) -> dict[tuple[str, str, str], Any]:
    out: dict[tuple[str, str, str], Any] = {}
    for m in d.get_json("/meshes")["items"]:
        out[("Mesh", "", m["name"])] = m.get("mtls")
        for s in d.get_json(f"/meshes/{m['name']}/secrets")["items"]:
            out[("Secret", m["name"], s["name"])] = s["data"]
    return out


def test_seed_example_and_builtin_ca_reach_two_zones(cluster: Cluster) -> None:
    """The seed's mTLS example (both forms) and a builtin CA, applied with kdsctl, reach both
    zones; secrets in use refuse deletion; zone copies are read-only; deleting the builtin mesh
    removes its CA everywhere; no private key reaches any log."""
    g = cluster.start_global()
    zones = [cluster.start_zone("zone-1"), cluster.start_zone("zone-2")]
    ca = certs.ca()
    # Mesh and secrets in one file, mesh first: one transaction, in any order.
    out = cluster.kdsctl(
        "apply",
        "-f",
        "-",
        input=SEED_UNIVERSAL + "---\n" + _secrets_yaml("default", "my-cert", "my-key", ca),
    ).stdout
    assert 'resource type="Mesh" mesh="" name="default" Updated' in out
    out = cluster.kdsctl("apply", "-f", "-", input=SEED_KUBERNETES).stdout
    assert out.strip() == 'resource type="Mesh" mesh="" name="default" Unchanged'
    out = cluster.kdsctl("apply", "-f", "-", input=BUILTIN).stdout
    assert 'mesh="payments" name="payments.ca-builtin-key-ca-1" Created' in out
    key_data = g.secret("payments", "payments.ca-builtin-key-ca-1")["data"]
    for z in zones:
        wait_for(
            lambda z=z: z.secret("payments", "payments.ca-builtin-key-ca-1"), what=f"CA on {z.name}"
        )
        assert z.secret("payments", "payments.ca-builtin-key-ca-1")["data"] == key_data
        assert z.get_json("/meshes/default")["mtls"]["backends"][0]["conf"]["cert"] == {
            "secret": "my-cert"
        }
        assert z.secret("default", "my-key")["data"] == ca.key_b64
        assert "builtin/ca-1" in cluster.kdsctl("get", "meshes", api=z.api_url).stdout
        # read-only on the zone, like every synced copy
        r = z.http.delete("/meshes/payments/secrets/payments.ca-builtin-key-ca-1")
        assert r.status_code == 409 and "global" in r.json()["detail"]

    r = cluster.kdsctl("delete", "secret", "my-key", "--mesh", "default", check=False)
    assert r.returncode == 1 and "used by mesh 'default' mTLS backend 'ca-1'" in r.stderr
    r = cluster.kdsctl(
        "apply",
        "-f",
        "-",
        input=_secrets_yaml("default", "my-cert", "x", certs.leaf()),
        check=False,
    )
    assert r.returncode == 1  # replacing the CA with a leaf certificate is refused
    assert "mtls.backends[0].conf.cert.secret" in r.stderr

    cluster.kdsctl("delete", "mesh", "payments")
    for z in zones:
        wait_for(lambda z=z: z.get_json("/meshes/payments") is None, what=f"mesh gone on {z.name}")
        assert z.secret("payments", "payments.ca-builtin-cert-ca-1") is None
    logs = cluster.all_logs()
    assert key_data not in logs and ca.key_b64 not in logs and "PRIVATE KEY" not in logs
    assert not g.events("zone rejected a resource")


def _violations(db: Path) -> list[str]:
    """Read a zone's store in one transaction: Meshes naming a backend Secret the zone lacks,
    and Secrets without their Mesh."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("BEGIN")
        meshes = {
            n: json.loads(s)
            for n, s in conn.execute("SELECT name, spec FROM resources WHERE kind='Mesh'")
        }
        secrets = set(conn.execute("SELECT mesh, name FROM resources WHERE kind='Secret'"))
        conn.execute("COMMIT")
    finally:
        conn.close()
    bad = []
    for name, spec in meshes.items():
        for b in (spec.get("mtls") or {}).get("backends") or []:
            if b["type"] == "provided":
                refs = [b["conf"]["cert"]["secret"], b["conf"]["key"]["secret"]]
            else:
                refs = [f"{name}.ca-builtin-cert-{b['name']}", f"{name}.ca-builtin-key-{b['name']}"]
            bad += [f"mesh {name} lacks {r}" for r in refs if (name, r) not in secrets]
    bad += [f"secret {m}/{n} without its mesh" for m, n in secrets if m not in meshes]
    return bad


def _mtls_mesh(mesh: str, cert: str, key: str) -> dict[str, Any]:
    backend = {
        "name": "ca-1",
        "type": "provided",
        "config": {"cert": {"secret": cert}, "key": {"secret": key}},
    }
    return {"type": "Mesh", "name": mesh, "mtls": {"enabledBackend": "ca-1", "backends": [backend]}}


def _secret(mesh: str, name: str, data: bytes) -> dict[str, Any]:
    return {"type": "Secret", "mesh": mesh, "name": name, "data": base64.b64encode(data).decode()}


def test_zone_reconnecting_mid_change_never_holds_a_mesh_without_its_secrets(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Meshes are created with their CA secrets, rotated to new ones, switched to builtin CAs
    and deleted, while a zone's link is cut every few hundred milliseconds and small messages
    split every range. Sampling the zone's store (one read transaction each) never finds a
    Mesh whose backend secrets it lacks; the zone ends equal to global, with no rejection."""
    rng = random.Random(20261129)  # the writes: the same history on every run
    cut_rng = random.Random(7)  # the cutting thread's own, so the history does not depend on it
    mtls_writes = 0
    g = cluster.start_global(
        "--max-message-bytes", "16KiB", "--log-size", "30", "--max-unacked", "2"
    )
    proxy = Proxy(cluster.kds_port)
    stop = threading.Event()
    found: list[str] = []
    samples = {"read": 0, "busy": 0}  # store reads that completed, and those that did not
    try:
        z = cluster.start_zone("zone-cut", "--global-address", f"grpcs://127.0.0.1:{proxy.port}")
        steady = cluster.start_zone("zone-steady")
        db = tmp_path / "zone-cut" / "zone.db"

        def sample() -> None:
            while not stop.is_set():
                try:
                    found.extend(_violations(db))
                except sqlite3.Error:  # busy: the next sample reads again
                    samples["busy"] += 1
                else:
                    samples["read"] += 1
                time.sleep(0.01)

        def cut() -> None:
            while not stop.is_set():
                time.sleep(cut_rng.uniform(0.05, 0.4))
                proxy.cut()

        threads = [threading.Thread(target=f, daemon=True) for f in (sample, cut)]
        for t in threads:
            t.start()
        meshes = [f"m{i}" for i in range(4)]
        pairs = [certs.ca(f"rot-{i}") for i in range(3)]
        for op in range(60):
            mesh = rng.choice(meshes)
            roll = rng.random()
            if roll < 0.45:  # a new mesh (or a rotation): new secrets and the mesh in one apply
                pair = rng.choice(pairs)
                items = [
                    _secret(mesh, f"cert-{op}", pair.cert),
                    _secret(mesh, f"key-{op}", pair.key),
                    _mtls_mesh(mesh, f"cert-{op}", f"key-{op}"),
                ]
                # bulk the range up so it splits into parts between the units
                items += [_secret(mesh, f"pad-{k}", rng.randbytes(3000)) for k in range(4)]
                rng.shuffle(items)
                r = g.http.post("/_apply", json={"items": items})
                assert r.status_code == 200, r.text
                mtls_writes += 1
            elif roll < 0.6:  # switch to a builtin CA
                b = {
                    "name": f"b{op}",
                    "type": "builtin",
                    "config": {"caCert": {"keyType": "ECDSA"}},
                }
                body = {
                    "type": "Mesh",
                    "name": mesh,
                    "mtls": {"enabledBackend": b["name"], "backends": [b]},
                }
                assert g.put(f"/meshes/{mesh}", body).status_code in (200, 201)
                mtls_writes += 1
            elif roll < 0.85:  # delete what the mesh no longer uses (409 for what it does)
                for s in (g.get_json(f"/meshes/{mesh}/secrets") or {"items": []})["items"]:
                    g.http.delete(f"/meshes/{mesh}/secrets/{s['name']}")
            else:  # mtls off, delete every secret, delete the mesh (its builtin CAs go with it)
                if g.get_json(f"/meshes/{mesh}") is not None:
                    assert (
                        g.put(f"/meshes/{mesh}", {"type": "Mesh", "name": mesh}).status_code == 200
                    )
                    for s in g.get_json(f"/meshes/{mesh}/secrets")["items"]:
                        if ".ca-builtin-" not in s["name"]:
                            assert (
                                g.http.delete(f"/meshes/{mesh}/secrets/{s['name']}").status_code
                                == 200
                            )
                    assert g.http.delete(f"/meshes/{mesh}").status_code == 200
            time.sleep(rng.uniform(0, 0.05))
        stop.set()
        for t in threads:
            t.join(5)
        proxy.up()
        want = _state(g)
        assert mtls_writes >= 20 and want
        for zone in (z, steady):
            wait_for(
                lambda zone=zone: _state(zone) == want, timeout=60, what=f"{zone.name} converged"
            )
        assert found == [], found[:5]
        # The sampler really read the store, many times while the link was being cut.
        assert samples["read"] >= 50, samples
        assert _violations(db) == []
        # Cuts really killed live links (one landing between reconnect attempts kills nothing),
        # and the zone came back through the proxy after the last of them.
        assert proxy.resets >= 2, proxy.resets
        wait_for(lambda: proxy.live > 0, what="zone reconnected through the proxy")
        assert not g.events("zone rejected a resource")
        assert not z.events("rejected a synced resource")
    finally:
        stop.set()
        proxy.close()


def test_synced_mtls_mesh_data_never_logged(cluster: Cluster) -> None:
    """A zone logs the mesh and secret names it applies, never CA material."""
    g = cluster.start_global()
    z = cluster.start_zone("zone-1")
    cluster.kdsctl("apply", "-f", "-", input=BUILTIN)
    wait_for(lambda: z.secret("payments", "payments.ca-builtin-key-ca-1"), what="CA on zone")
    key = g.secret("payments", "payments.ca-builtin-key-ca-1")["data"]
    assert key not in z.log_text() and key not in g.log_text()
    assert base64.b64decode(key).decode()[40:80] not in cluster.all_logs()
