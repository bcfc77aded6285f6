"""compose/: the compose files against the Compose Specification that Compose v2 validates with
(the schema check-jsonschema ships), the rules that keep them working with Compose 1.29 too,
and the provision step's token bookkeeping. The project itself runs in tests/containers."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose"


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / name).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["docker-compose.yml", "zone-4.yml", "postgres.yml"])
def test_valid_against_the_compose_specification(name: str) -> None:
    exe = Path(sys.executable).parent / "check-jsonschema"
    r = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE / name)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_1_29_compatible_and_secure_defaults() -> None:
    doc = _load("docker-compose.yml")
    # Compose 1.29 refuses a top-level `name`; `version` is obsolete in v2.
    assert set(doc) <= {"services", "networks", "volumes"} | {k for k in doc if k.startswith("x-")}
    services = doc["services"]
    zones = sorted(s for s in services if s.startswith("zone-"))
    assert zones == ["zone-1", "zone-2", "zone-3"]
    images = {s["image"] for s in services.values()}
    assert images == {"${KDS_IMAGE:-kds-sync:latest}"}
    # Only global's API is published, and only on the host's loopback.
    for name, s in services.items():
        ports = s.get("ports", [])
        assert all(p.startswith("127.0.0.1:") for p in ports), (name, ports)
        assert bool(ports) == (name == "global")
    g = services["global"]["environment"]
    assert "GLOBALCP_KDS_INSECURE" not in g and "global" in g["GLOBALCP_TLS_NAMES"].split(",")
    provision = services["provision"]
    mounts = provision["volumes"]
    for z in zones:
        env = services[z]["environment"]
        assert env["ZONECP_ZONE"] == z and env["ZONECP_GLOBAL_ADDRESS"].startswith("grpcs://")
        assert "ZONECP_INSECURE" not in env
        assert env["ZONECP_TOKEN_FILE"] == "/credentials/token"
        # Each zone reads only its own credentials volume, which provision fills.
        assert f"{z}-credentials:/credentials:ro" in services[z]["volumes"]
        assert f"{z}-credentials:/credentials/{z}" in mounts
        assert z in provision["environment"]["KDS_ZONES"].split()
        assert services[z]["depends_on"]["provision"]["condition"] == (
            "service_completed_successfully"
        )
    assert provision["depends_on"]["global"]["condition"] == "service_healthy"
    assert "global-data:/global:ro" in mounts


def test_fourth_zone_file_follows_the_same_pattern() -> None:
    base, extra = _load("docker-compose.yml"), _load("zone-4.yml")
    z3, z4 = base["services"]["zone-3"], extra["services"]["zone-4"]
    shared = {k: v for k, v in z3["environment"].items() if k != "ZONECP_ZONE"}
    assert {k: v for k, v in z4["environment"].items() if k != "ZONECP_ZONE"} == shared
    assert z4["environment"]["ZONECP_ZONE"] == "zone-4"
    assert z4["command"] == z3["command"] and z4["depends_on"] == z3["depends_on"]
    assert extra["services"]["provision"]["environment"]["KDS_ZONES"].split() == [
        "zone-1",
        "zone-2",
        "zone-3",
        "zone-4",
    ]
    assert "zone-4-credentials:/credentials/zone-4" in extra["services"]["provision"]["volumes"]


def test_postgres_variant_two_globals_and_every_zone_instance_on_one_database() -> None:
    base, pg = _load("docker-compose.yml"), _load("postgres.yml")
    services = pg["services"]
    assert set(pg) <= {"services", "volumes"} | {k for k in pg if k.startswith("x-")}
    globals_ = ["global", "global-2"]
    zones = ["zone-1", "zone-2", "zone-3", "zone-1-b"]
    assert sorted(services) == sorted(["postgres", *globals_, *zones])
    # Only the override's own services are new; the others extend docker-compose.yml's.
    assert {"global", "zone-1", "zone-2", "zone-3"} <= set(base["services"])
    url = "postgresql://kds@postgres:5432/kds"
    for name in globals_:
        env = services[name]["environment"]
        assert env["GLOBALCP_STORE"] == "postgres" and env["GLOBALCP_POSTGRES_URL"] == url
        assert env["GLOBALCP_POSTGRES_PASSWORD_FILE"] == "/db/password"
        assert "postgres-password:/db:ro" in services[name]["volumes"]
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        # API and sync ports, on the host's loopback only.
        ports = services[name]["ports"]
        assert all(p.startswith("127.0.0.1:") for p in ports), (name, ports)
    assert {p.rsplit(":", 1)[1] for p in services["global-2"]["ports"]} == {"5681", "5685"}
    assert services["global"]["ports"][0].endswith(":5685")  # 5681: docker-compose.yml's
    assert "global-2" in services["global-2"]["environment"]["GLOBALCP_TLS_NAMES"].split(",")
    for name in zones:
        env = services[name]["environment"]
        assert env["ZONECP_GLOBAL_ADDRESS"].split(",") == [
            "grpcs://global:5685",
            "grpcs://global-2:5685",
        ]
        assert env["ZONECP_STORE"] == "postgres" and env["ZONECP_POSTGRES_URL"] == url
        assert env["ZONECP_POSTGRES_PASSWORD_FILE"] == "/db/password"
        assert "postgres-password:/db:ro" in services[name]["volumes"]
        # A dead global's name fails to resolve within 1 s, so the zone soon dials the next.
        assert services[name]["dns_opt"] == ["timeout:1", "attempts:1"]
    # zone-1's second instance: the same zone and credentials as zone-1, its own data dir.
    b, z1 = services["zone-1-b"], base["services"]["zone-1"]
    assert b["environment"]["ZONECP_ZONE"] == "zone-1"
    assert "zone-1-credentials:/credentials:ro" in b["volumes"]
    assert "zone-1-b-data:/var/lib/kds" in b["volumes"]
    assert b["depends_on"] == z1["depends_on"] and b["command"] == z1["command"]
    # PostgreSQL: not published; the password is made in its volume, never written here.
    db = services["postgres"]
    assert "ports" not in db and "environment" not in db
    assert "postgres-password:/db-password" in db["volumes"]
    # A password is only ever given as a file.
    for name, svc in services.items():
        for key in svc.get("environment", {}):
            assert "PASSWORD" not in key or key.endswith("_PASSWORD_FILE"), (name, key)


@pytest.fixture(scope="module")
def provision() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kds_provision", COMPOSE / "provision.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _jwt(claims: dict[str, Any]) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(claims)}.sig"


def test_provision_keeps_a_good_token_and_says_why_it_replaces_one(provision: ModuleType) -> None:
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=300)).isoformat()
    issued = {
        "t1": {"expiresAt": later, "revokedAt": None},
        "t2": {"expiresAt": later, "revokedAt": "2026-01-01T00:00:00Z"},
        "t3": {"expiresAt": soon, "revokedAt": None},
    }
    renew = dt.timedelta(days=30)

    def why(token: str, zone: str = "zone-1") -> str | None:
        return provision.stale_reason(token, zone, issued, renew)  # type: ignore[no-any-return]

    assert why(_jwt({"jti": "t1", "sub": "zone-1"})) is None
    assert "for zone 'zone-2'" in str(why(_jwt({"jti": "t1", "sub": "zone-2"})))
    assert "revoked" in str(why(_jwt({"jti": "t2", "sub": "zone-1"})))
    assert "expires" in str(why(_jwt({"jti": "t3", "sub": "zone-1"})))
    assert "does not know" in str(why(_jwt({"jti": "gone", "sub": "zone-1"})))
    assert why("") == "the file holds no token" and why("x.!!.y") == "the file holds no token"
