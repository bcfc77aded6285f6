"""Kuma's resources end to end: Kuma's documented shapes through kdsctl reach zones exactly,
and Kuma's system global secrets stay on global, whether a zone takes changes as they come
(zone-1, connected before the writes) or a snapshot (zone-2, started after them)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Cluster, wait_for

pytestmark = pytest.mark.integration

DATA = base64.b64encode(b"kuma-compat").decode()

MESH = {
    "type": "Mesh",
    "name": "observed",
    "mtls": {
        "enabledBackend": "ca-1",
        "backends": [
            {
                "name": "ca-1",
                "type": "builtin",
                "dpCert": {"rotation": {"expiration": "24h"}},
                "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}},
            }
        ],
    },
    "metrics": {
        "enabledBackend": "prometheus-1",
        "backends": [{"name": "prometheus-1", "type": "prometheus", "conf": {"port": 5670}}],
    },
    "logging": {"backends": [{"name": "file", "type": "file", "conf": {"path": "/tmp/a.log"}}]},
    "tracing": {
        "backends": [
            {
                "name": "z",
                "type": "zipkin",
                "sampling": 50.5,
                "conf": {"url": "http://zipkin:9411/api/v2/spans"},
            }
        ]
    },
    "networking": {"outbound": {"passthrough": False}},
    "routing": {"zoneEgress": True, "localityAwareLoadBalancing": True},
    "constraints": {"dataplaneProxy": {"requirements": [{"tags": {"kuma.io/zone": "east"}}]}},
    "skipCreatingInitialPolicies": ["*"],
    "meshServices": {"mode": "Exclusive"},
}
SYSTEM = ["admin-user-token", "inter-cp-ca", "user-token-signing-key-1", "zone-token-signing-key-1"]
MESH_FIELDS = [k for k in MESH if k not in ("type", "name")]


def _write_inputs(d: Path) -> None:
    d.mkdir()
    (d / "01-mesh.yaml").write_text(yaml.safe_dump(MESH))
    secret = f"type: Secret\nmesh: {{{{ mesh }}}}\nname: app\ndata: {DATA}\n"
    (d / "02-secret.yaml").write_text(secret)
    system = "---\n".join(f"type: GlobalSecret\nname: {n}\ndata: {DATA}\n" for n in SYSTEM)
    (d / "03-system.yml").write_text(system)
    (d / "04-global.json").write_text(
        f'{{"type": "GlobalSecret", "name": "shared", "data": "{DATA}"}}'
    )


def test_kuma_shapes_sync_exactly_and_system_global_secrets_stay(cluster: Cluster) -> None:
    g = cluster.start_global()
    z1 = cluster.start_zone("zone-1")
    inputs = cluster.tmp / "kuma"
    _write_inputs(inputs)
    r = cluster.kdsctl("apply", "-f", str(inputs), "-v", "mesh=observed")
    assert 'resource type="Mesh" mesh="" name="observed" Created' in r.stdout
    assert (
        'resource type="GlobalSecret" mesh="" name="user-token-signing-key-1" Created' in r.stdout
    )
    assert r.stderr.count("stays on global") == len(SYSTEM), r.stderr
    # The last write: once a zone has it, it has every write before it.
    g.put("/globalsecrets/last", {"data": DATA})
    z2 = cluster.start_zone("zone-2")  # takes a snapshot: it was not there for the changes

    on_global = g.get_json("/meshes/observed")
    assert {k: on_global[k] for k in MESH_FIELDS} == {k: MESH[k] for k in MESH_FIELDS}
    for z in (z1, z2):
        wait_for(lambda z=z: z.get_json("/globalsecrets/last"), what=f"{z.name} caught up")
        mesh = z.get_json("/meshes/observed")
        assert {k: mesh[k] for k in MESH_FIELDS} == {k: MESH[k] for k in MESH_FIELDS}
        assert z.secret("observed", "app")["data"] == DATA
        assert z.secret("observed", "observed.ca-builtin-cert-ca-1") is not None
        names = {i["name"] for i in z.get_json("/globalsecrets?size=1000")["items"]}
        assert names == {"shared", "last"}, f"{z.name} holds {names}"
        for name in SYSTEM:
            assert g.get_json(f"/globalsecrets/{name}")["data"] == DATA
            assert z.get_json(f"/globalsecrets/{name}") is None

    # Kuma's global accepts its own output back: GET, then PUT as it is.
    got = g.get_json("/meshes/observed")
    r2 = g.put("/meshes/observed", got)
    assert (r2.status_code, r2.json(), r2.headers["X-Kds-Result"]) == (200, {}, "unchanged")
