"""The compose project's PostgreSQL variant (compose/postgres.yml on top of docker-compose.yml):
two global instances, the three zones and a second instance of zone-1, all on one PostgreSQL
in a container of the project.

A project of its own, up for this module only; the tests run in file order. Values are unique
per run so that a leak into any log, the database password's included, is searched for at the
end.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.containers.conftest import POSTGRES_IMAGE, ZONES, Project
from tests.integration.conftest import b64, free_port, wait_for

GLOBALS = ("global", "global-2")
ZONE_SERVICES = (*ZONES, "zone-1-b")  # zone-1-b: zone-1's second instance
RUN = uuid.uuid4().hex[:8]
VALUES: list[str] = []


def value(label: str) -> str:
    v = f"{label}-value-{RUN}-{uuid.uuid4().hex[:6]}"
    VALUES.append(v)
    return v


@pytest.fixture(scope="module")
def pg_project(image: str) -> Iterator[Project]:
    ports = {
        k: str(free_port())
        for k in (
            "KDS_GLOBAL_API_PORT",
            "KDS_GLOBAL_KDS_PORT",
            "KDS_GLOBAL_2_API_PORT",
            "KDS_GLOBAL_2_KDS_PORT",
        )
    }
    env = {
        **os.environ,
        **ports,
        "KDS_IMAGE": image,
        "KDS_POSTGRES_IMAGE": POSTGRES_IMAGE,
        "KDS_LOG_FORMAT": "json",
    }
    p = Project(f"kdspg{uuid.uuid4().hex[:8]}", ["docker-compose.yml", "postgres.yml"], env)
    try:
        t0 = time.monotonic()
        p.compose("up", "-d", "--no-build", timeout=600)
        for service in ("postgres", *GLOBALS, *ZONE_SERVICES):
            wait_for(lambda s=service: p.health(s) == "healthy", 120, f"{service} healthy")
        print(f"project {p.name} up and healthy in {time.monotonic() - t0:.0f}s")
        yield p
    finally:
        if os.environ.get("KDS_KEEP_PROJECT"):
            print(f"kept project {p.name} (KDS_KEEP_PROJECT)")
        else:
            p.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


def _api(p: Project, service: str, port_var: str) -> httpx.Client:
    token = p.exec(service, "cat", "/var/lib/kds/global/admin-token").stdout.strip()
    return httpx.Client(
        base_url=f"http://127.0.0.1:{p.env[port_var]}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


@pytest.fixture(scope="module")
def apis(pg_project: Project) -> dict[str, httpx.Client]:
    """Each global instance's API as published on the host's loopback, with its admin token."""
    return {
        "global": _api(pg_project, "global", "KDS_GLOBAL_API_PORT"),
        "global-2": _api(pg_project, "global-2", "KDS_GLOBAL_2_API_PORT"),
    }


def put_secret(api: httpx.Client, name: str, data: str) -> None:
    r = api.put(
        f"/meshes/default/secrets/{name}",
        json={"type": "Secret", "mesh": "default", "name": name, "data": b64(data)},
    )
    assert r.status_code in (200, 201), r.text


def has_value(p: Project, service: str, name: str, data: str) -> bool:
    s = p.secret(service, "default", name)
    return s is not None and s["data"] == b64(data)


def zones_seen_by(api: httpx.Client) -> dict[str, dict[str, Any]]:
    r = api.get("/zones")
    r.raise_for_status()
    return {z["name"]: z for z in r.json()["items"]}


def instance_of(p: Project, service: str) -> str:
    """The instance id of a global service's current process (it logs it at start)."""
    return str(p.events(service, "global started")[-1]["instance"])


def leader_status(p: Project) -> tuple[str, dict[str, Any]]:
    """zone-1's instance holding the stream, and its /status."""
    for service in ("zone-1", "zone-1-b"):
        st = p.sync_status(service)
        if st["leader"] and st["leader"]["thisInstance"]:
            return service, st
    raise AssertionError("neither zone-1 instance leads")


def test_two_globals_and_every_zone_on_one_postgres(
    pg_project: Project, apis: dict[str, httpx.Client]
) -> None:
    p = pg_project
    for name, api in apis.items():
        # The sync ports are published too (both instances), on loopback only.
        assert api.get("/readyz").json()["status"] == "ready", name
        seen = zones_seen_by(api)
        assert sorted(seen) == list(ZONES), (name, seen)
        wait_for(
            lambda a=api: all(z["status"] == "Online" for z in zones_seen_by(a).values()),
            30,
            f"every zone Online on {name}",
        )
    # One CA for both instances (made once in the shared store), so a zone trusts either.
    cas = {g: p.exec(g, "cat", "/var/lib/kds/global/ca.crt").stdout for g in GLOBALS}
    assert cas["global"] and cas["global"] == cas["global-2"]
    for zone in ZONES:
        st = p.sync_status(zone if zone != "zone-1" else leader_status(p)[0])
        assert st["connected"] and st["ready"], (zone, st)
        assert st["global"]["instanceId"] in {instance_of(p, g) for g in GLOBALS}, st
    # zone-1: two instances, one leader, both serving the zone's API from the shared store.
    leader, st = leader_status(p)
    standby = "zone-1-b" if leader == "zone-1" else "zone-1"
    other = p.sync_status(standby)
    assert other["leader"]["instanceId"] == st["leader"]["instanceId"]
    assert not other["leader"]["thisInstance"] and p.health(standby) == "healthy"
    # Global's view names the leader's instance.
    assert zones_seen_by(apis["global-2"])["zone-1"]["instanceId"] == st["leader"]["instanceId"]
    # Each zone's store is a schema of its own in the one database.
    schemas = p.exec(
        "postgres",
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
        "psql",
        "-h",
        "/run/postgresql",
        "-d",
        "kds",
        "-At",
        "-c",
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kds_%' ORDER BY 1",
    ).stdout.split()
    assert schemas == ["kds_global", *(f"kds_zone_{z.replace('-', '_')}" for z in ZONES)], schemas


def test_no_database_password_in_the_process_list_or_container_settings(
    pg_project: Project,
) -> None:
    p = pg_project
    password = p.exec("global", "cat", "/db/password").stdout.strip()
    assert len(password) == 64
    # Readable by the daemons' user only, and made for them by the PostgreSQL container.
    mode = p.exec("global", "stat", "-c", "%a %u", "/db/password").stdout.split()
    assert mode == ["400", "10001"], mode
    for service in ("postgres", *GLOBALS, *ZONE_SERVICES):
        procs = p.docker("top", p.container(service), "-eo", "pid,args").stdout
        assert procs.strip() and password not in procs, service
        settings = p.docker("inspect", p.container(service)).stdout
        assert password not in settings, service
    assert password not in p.compose("config").stdout


def test_writes_through_both_globals_reach_every_zone_instance(
    pg_project: Project, apis: dict[str, httpx.Client]
) -> None:
    p = pg_project
    written = {}
    for g, api in apis.items():
        data = value(f"via-{g}")
        put_secret(api, f"via-{g}", data)
        written[f"via-{g}"] = data
    t0 = time.monotonic()
    for service in ZONE_SERVICES:
        for name, data in written.items():
            wait_for(
                lambda s=service, n=name, d=data: has_value(p, s, n, d), 30, f"{name} on {service}"
            )
    print(f"writes through both globals on every zone instance within {time.monotonic() - t0:.1f}s")
    # Both instances serve both writes (one store).
    for g in GLOBALS:
        for name, data in written.items():
            assert has_value(p, g, name, data), (g, name)


def test_global_killed_its_zone_resumes_on_the_other_instance(
    pg_project: Project, apis: dict[str, httpx.Client]
) -> None:
    p = pg_project
    # The instance zone-2 is on dies; zone-2 must move to the other.
    on = p.sync_status("zone-2")["global"]["instanceId"]
    victim = "global" if on == instance_of(p, "global") else "global-2"
    survivor = "global-2" if victim == "global" else "global"
    assert on == instance_of(p, victim)
    survivor_id = instance_of(p, survivor)
    snapshots = p.sync_status("zone-2")["snapshots"]
    last = value("last-before-kill")
    put_secret(apis[victim], "last-before-kill", last)  # acknowledged, then the instance dies
    t0 = time.monotonic()
    p.docker("kill", p.container(victim))

    def moved() -> bool:
        st = p.sync_status("zone-2")
        return bool(st["connected"] and st["global"]["instanceId"] == survivor_id)

    wait_for(moved, 60, f"zone-2 on {survivor}")
    moved_after = time.monotonic() - t0
    after = value("after-kill")
    put_secret(apis[survivor], "after-kill", after)
    for service in ZONE_SERVICES:
        wait_for(
            lambda s=service: has_value(p, s, "after-kill", after), 60, f"after-kill on {service}"
        )
        assert has_value(p, service, "last-before-kill", last), service
    st = p.sync_status("zone-2")
    assert st["lastSync"]["mode"] == "resume" and st["snapshots"] == snapshots, st
    # The survivor shows every zone, each Online on it once its claim lapsed on the dead one.
    wait_for(
        lambda: all(z["status"] == "Online" for z in zones_seen_by(apis[survivor]).values()),
        60,
        f"every zone Online on {survivor}",
    )
    print(f"{victim} killed: zone-2 resumed on {survivor} after {moved_after:.1f}s")
    # Back for the rest of the module (a killed container is not restarted by its policy).
    p.compose("start", victim)
    wait_for(lambda: p.health(victim) == "healthy", 60, f"{victim} healthy again")


def test_no_secret_value_or_password_in_any_log(pg_project: Project) -> None:
    p = pg_project
    password = p.exec("global", "cat", "/db/password").stdout.strip()
    for service in ("postgres", "provision", *GLOBALS, *ZONE_SERVICES):
        text = p.logs(service)
        assert text, f"{service} logged nothing"
        assert password not in text, f"the database password in {service}'s log"
        for v in VALUES:
            assert v not in text and b64(v) not in text, f"{v} in {service}'s log"
