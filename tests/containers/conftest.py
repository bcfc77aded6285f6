"""The compose project (compose/docker-compose.yml) brought up for real: a global and three zones
in containers on their own network, built from compose/Dockerfile.

Needs a Docker engine and Compose (v2 ``docker compose`` or 1.29 ``docker-compose``); on a
machine without a registry, ``scripts/setup-containers`` provides both and a local base image
(``.ci/run`` calls it). Without them these tests skip, saying why; with CI set a skip fails.

One project per test session, under its own project name, with global's API published on a
free port of the host's loopback. Daemons log JSON (KDS_LOG_FORMAT=json) so tests can read
events from ``docker logs``. Traffic goes only to loopback and to these containers.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
ZONES = ("zone-1", "zone-2", "zone-3")
BASE_IMAGE = os.environ.get("KDS_BASE_IMAGE") or "local/python:3.11"
# The images a test run builds get tags of their own (so one run never removes another's),
# and are removed with the build cache when the run ends: Docker's vfs driver here copies
# every layer in full, and a day of runs filled 72 GB. The base images scripts/setup-containers
# made (local/*, minutes of debootstrap each) stay. KDS_IMAGE / KDS_POSTGRES_IMAGE given:
# those are kept, as is everything with KDS_KEEP_PROJECT set.
RUN_TAG = f"test-{uuid.uuid4().hex[:8]}"
IMAGE = os.environ.get("KDS_IMAGE") or f"kds-sync:{RUN_TAG}"
POSTGRES_IMAGE = os.environ.get("KDS_POSTGRES_IMAGE") or f"kds-sync-postgres:{RUN_TAG}"
BUILT_HERE = [
    tag
    for tag, given in ((IMAGE, "KDS_IMAGE"), (POSTGRES_IMAGE, "KDS_POSTGRES_IMAGE"))
    if not os.environ.get(given)
]


def _run(
    argv: list[str], timeout: float = 120, check: bool = False, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured; with ``check``, a failure names it and shows both."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def compose_command() -> list[str] | None:
    if os.environ.get("KDS_COMPOSE"):
        return shlex.split(os.environ["KDS_COMPOSE"])
    if shutil.which("docker") and _run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def why_no_containers() -> str | None:
    """None when containers can run here, else the reason (for the skip message)."""
    if not shutil.which("docker"):
        return "no docker command (scripts/setup-containers installs Docker)"
    info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    if info.returncode != 0:
        return f"no Docker engine answers: {info.stderr.strip()[:300]} (scripts/setup-containers)"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    if _run(["docker", "image", "inspect", BASE_IMAGE]).returncode != 0 and BASE_IMAGE.startswith(
        "local/"
    ):
        return f"no base image {BASE_IMAGE} (scripts/setup-containers makes it)"
    if (
        BASE_IMAGE.startswith("local/")
        and _run(["docker", "image", "inspect", "local/postgres:bookworm"]).returncode != 0
    ):
        return "no base image local/postgres:bookworm (scripts/setup-containers makes it)"
    return None


class Project:
    """One compose project: ``compose(...)``, and per service ``exec``, ``kdsctl``, ``logs``."""

    def __init__(self, name: str, files: list[str], env: dict[str, str]):
        cmd = compose_command()
        assert cmd is not None
        self.name = name
        self.files = files
        self.env = env
        self.base = [*cmd, "-p", name, *(a for f in files for a in ("-f", f))]
        self._ids: dict[str, str] = {}
        # Global's API as published on the host's loopback.
        self.api_url = f"http://127.0.0.1:{env.get('KDS_GLOBAL_API_PORT', '5681')}"

    def compose(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return _run([*self.base, *args], timeout, check, cwd=COMPOSE_DIR, env=self.env)

    def with_files(self, *extra: str) -> Project:
        return Project(self.name, [*self.files, *extra], self.env)

    def container(self, service: str) -> str:
        """The id of the service's container (stopped ones included)."""
        if service not in self._ids:
            r = self.compose("ps", "-a", "-q", service, check=False)
            if r.returncode != 0:  # Compose 1.29's ps has no -a: it lists stopped ones anyway
                r = self.compose("ps", "-q", service)
            ids = r.stdout.split()
            assert len(ids) == 1, f"{service}: containers {ids}"
            self._ids[service] = ids[0]
        return self._ids[service]

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _run(["docker", *args], timeout, check)

    def exec(
        self, service: str, *argv: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        flags = ["-i"] if input is not None else []
        container = self.container(service)
        return _run(["docker", "exec", *flags, container, *argv], check=check, input=input)

    def kdsctl(self, service: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """kdsctl inside the service's container, on its own API with its admin token."""
        return self.exec(service, "kdsctl", *args, **kw)

    def kdsctl_json(self, service: str, *args: str) -> Any:
        return json.loads(self.kdsctl(service, *args, "-o", "json").stdout)

    def secret(self, service: str, mesh: str, name: str) -> dict[str, Any] | None:
        """The secret as that control plane serves it; None only when it answers 404 (absent).
        Any other failure (refused token, 500, daemon down) fails the test with kdsctl's exit
        code and error (errors never carry secret data), so an "absent" check cannot pass on
        it."""
        r = self.kdsctl(service, "get", "secret", name, "--mesh", mesh, "-o", "json", check=False)
        if r.returncode == 0:
            return json.loads(r.stdout)
        if r.stderr.startswith("Error: No resources found"):  # kdsctl's (kumactl's) 404
            return None
        raise AssertionError(
            f"kdsctl get secret {name} --mesh {mesh} on {service} exited {r.returncode}: "
            f"{r.stderr.strip()[:500]}"
        )

    def sync_status(self, zone: str) -> dict[str, Any]:
        return self.kdsctl_json(zone, "inspect", "sync")  # type: ignore[no-any-return]

    def zones(self) -> dict[str, dict[str, Any]]:
        """Global's view of every zone, by name."""
        return {z["name"]: z for z in self.kdsctl_json("global", "inspect", "zones")["items"]}

    def logs(self, service: str) -> str:
        r = self.docker("logs", self.container(service), check=False)
        return r.stdout + r.stderr

    def events(self, service: str, event: str, **match: Any) -> list[dict[str, Any]]:
        out = []
        for line in self.logs(service).splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(e, dict)
                and e.get("event") == event
                and all(e.get(k) == v for k, v in match.items())
            ):
                out.append(e)
        return out

    def health(self, service: str) -> str:
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        return self.docker("inspect", "--format", fmt, self.container(service)).stdout.strip()

    def network(self) -> str:
        """The project network (Compose names it PROJECT_kds)."""
        fmt = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"
        nets = self.docker("inspect", "--format", fmt, self.container("global")).stdout.split()
        assert len(nets) == 1, nets
        return nets[0]


def remove_images(tags: list[str]) -> None:
    """Remove ``tags`` and the build cache their builds left (the cache of a build still
    running elsewhere is in use, and kept); keeps every other image."""
    if tags:
        _run(["docker", "rmi", "-f", *tags], timeout=300)
    _run(["docker", "builder", "prune", "-f"], timeout=300)


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    """Builds the image the way compose/README.md says to on a machine without a registry;
    removes it (and the PostgreSQL image) when the session ends."""
    reason = why_no_containers()
    if reason is not None:
        pytest.skip(f"containers cannot run here: {reason}")
    tag = IMAGE
    env = {
        **os.environ,
        "KDS_IMAGE": tag,
        "KDS_BASE_IMAGE": BASE_IMAGE,
        "KDS_POSTGRES_IMAGE": POSTGRES_IMAGE,
    }
    t0 = time.monotonic()
    # Also builds POSTGRES_IMAGE, for the PostgreSQL variant (compose/postgres.yml).
    try:
        _run([str(ROOT / "scripts" / "container-image")], 1200, check=True, env=env)
        print(f"images {tag} and {POSTGRES_IMAGE} built in {time.monotonic() - t0:.0f}s")
        yield tag
    finally:
        if os.environ.get("KDS_KEEP_PROJECT"):
            print(f"kept images {tag} and {POSTGRES_IMAGE} (KDS_KEEP_PROJECT)")
        else:
            remove_images(BUILT_HERE)


@pytest.fixture(scope="session")
def project(image: str) -> Iterator[Project]:
    port = free_port()
    env = {
        **os.environ,
        "KDS_IMAGE": image,
        "KDS_GLOBAL_API_PORT": str(port),
        "KDS_LOG_FORMAT": "json",
    }
    p = Project(f"kdstest{uuid.uuid4().hex[:8]}", ["docker-compose.yml"], env)
    try:
        t0 = time.monotonic()
        p.compose("up", "-d", "--no-build", timeout=600)
        for service in ("global", *ZONES):
            wait_for(lambda s=service: p.health(s) == "healthy", 120, f"{service} healthy")
        print(f"project {p.name} up and healthy in {time.monotonic() - t0:.0f}s")
        yield p
    finally:
        if os.environ.get("KDS_KEEP_PROJECT"):
            print(f"kept project {p.name} (KDS_KEEP_PROJECT)")
        else:
            p.with_files("zone-4.yml").compose(
                "down", "-v", "--remove-orphans", "--timeout", "5", check=False
            )


@pytest.fixture(scope="session")
def global_api(project: Project) -> httpx.Client:
    """Global's API as published on the host's loopback, with the admin token."""
    token = project.exec("global", "cat", "/var/lib/kds/global/admin-token").stdout.strip()
    return httpx.Client(
        base_url=project.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
