"""The units in packaging/systemd under a real systemd: globalcp.service and zonecp@zone-1 in one
container whose PID 1 is systemd (image local/systemd:bookworm, made by scripts/setup-containers),
installed the way the README's "Run as a service" says.

The container has no network (``--network none``): every call is on its loopback. It needs
CAP_SYS_ADMIN (systemd sets up the units' mount namespaces) and CAP_SYS_PTRACE: with
``ProtectProc=invisible`` and ``PrivateUsers=yes`` systemd maps the user namespace through
``/proc/PID``, which a root without CAP_SYS_PTRACE cannot see there (on a host, PID 1 has every
capability). ``--privileged`` does not work on this Docker.

The tests share the container and run in file order. Secret values are unique per run and
searched for in the journal at the end.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.containers.conftest import ROOT
from tests.integration.conftest import wait_for

IMAGE = "local/systemd:bookworm"
ZONE = "zone-1"
GLOBAL_API = "http://127.0.0.1:5681"
ZONE_API = "http://127.0.0.1:5682"
GLOBAL_TOKEN = "/var/lib/kds/global/admin-token"
ZONE_TOKEN = f"/var/lib/kds/zone-{ZONE}/admin-token"
# systemd as PID 1, as the module's docstring says.
DOCKER_RUN = (
    *("--network", "none", "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE"),
    *("-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--tmpfs", "/run", "--tmpfs", "/run/lock"),
    *("-e", "container=docker"),
)
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check")
RUN = uuid.uuid4().hex[:8]
VALUES: list[str] = []  # every secret value written, searched for in the journal at the end


class Machine:
    """The container: ``sh`` runs a bash script in it as root."""

    def __init__(self, name: str):
        self.name = name

    def sh(
        self, script: str, timeout: float = 60, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "exec", *(["-i"] if input is not None else []), self.name]
        r = subprocess.run(
            [*argv, "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"in the container: {script.strip()}\nexited {r.returncode}:\n"
                f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            )
        return r

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` properties of the unit."""
        out = self.sh(f"systemctl show {unit} -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.sh(f"journalctl -u {unit} -o cat --no-pager", check=False).stdout

    def events(self, unit: str, event: str) -> list[dict[str, Any]]:
        """The unit's JSON log lines whose event starts with ``event``."""
        out = []
        for line in self.journal(unit).splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(e, dict) and str(e.get("event", "")).startswith(event):
                out.append(e)
        return out

    def kdsctl(self, api: str, token: str, *args: str, input: str | None = None) -> str:
        quoted = " ".join(f"'{a}'" for a in args)
        return self.sh(
            f"kdsctl --api-url {api} --token-file {token} {quoted}", input=input, timeout=30
        ).stdout

    def put_secret(self, name: str, label: str) -> str:
        v = f"{label}-value-{RUN}-{uuid.uuid4().hex[:6]}"
        VALUES.append(v)
        doc = f"type: Secret\nmesh: default\nname: {name}\ndata: {base64.b64encode(v.encode()).decode()}\n"
        self.kdsctl(GLOBAL_API, GLOBAL_TOKEN, "apply", "-f", "-", input=doc)
        return v

    def zone_secret(self, name: str) -> str | None:
        """The secret's value as the zone serves it; None while it does not have it."""
        r = self.sh(
            f"kdsctl --api-url {ZONE_API} --token-file {ZONE_TOKEN} "
            f"get secret {name} --mesh default -o json",
            check=False,
            timeout=30,
        )
        if r.returncode != 0:
            assert r.stderr.startswith("Error: No resources found"), r.stderr[:500]
            return None
        return base64.b64decode(json.loads(r.stdout)["data"]).decode()

    def wait_synced(self, name: str, value: str, timeout: float = 30) -> None:
        wait_for(lambda: self.zone_secret(name) == value, timeout, f"secret {name} on {ZONE}")

    def wait_active(self, unit: str, timeout: float = 30) -> dict[str, str]:
        props = ("ActiveState", "SubState", "MainPID", "NRestarts", "Result")
        return wait_for(
            lambda: (p := self.show(unit, *props))["ActiveState"] == "active" and p,
            timeout,
            f"{unit} active",
        )


def _why_not() -> str | None:
    if not shutil.which("docker"):
        return "no docker command (scripts/setup-containers installs Docker)"
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=30)
    if r.returncode != 0:
        return f"no image {IMAGE} or no Docker engine (scripts/setup-containers makes both)"
    return None


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    reason = _why_not()
    if reason is not None:
        pytest.skip(f"cannot run systemd in a container here: {reason}")
    t0 = time.monotonic()
    name = f"kds-systemd-{RUN}"
    with tempfile.TemporaryDirectory(prefix="kds-wheels-") as wheels:
        # kds-sync and its dependencies as wheels built here: the container has no network.
        r = subprocess.run(
            [*PIP_WHEEL, str(ROOT), "-w", wheels],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, f"pip wheel failed:\n{r.stderr[-3000:]}"
        try:
            subprocess.run(
                ["docker", "run", "-d", "--name", name, *DOCKER_RUN, IMAGE, "/lib/systemd/systemd"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            m = Machine(name)
            wait_for(
                lambda: m.sh("test -S /run/systemd/private", check=False).returncode == 0,
                60,
                "systemd's control socket in the container",
            )
            state = m.sh("systemctl is-system-running --wait", check=False, timeout=60)
            assert state.stdout.strip() in ("running", "degraded"), (
                f"systemd did not come up: {state.stdout}{state.stderr}\n"
                + m.sh("systemctl --failed --no-pager", check=False).stdout
            )
            for src, dst in ((wheels, "/wheels"), (ROOT / "packaging" / "systemd", "/pkg")):
                subprocess.run(["docker", "cp", str(src), f"{name}:{dst}"], check=True, timeout=60)
            # As the README says (with the README's eu-west as zone-1 and global on this host).
            m.sh(
                """set -e
python3 -m venv /opt/kds-sync
/opt/kds-sync/bin/pip install -q --disable-pip-version-check --no-index \
    --find-links /wheels kds-sync
ln -s /opt/kds-sync/bin/globalcp /opt/kds-sync/bin/zonecp /opt/kds-sync/bin/kdsctl \
    /usr/local/bin/
install -m 0644 /pkg/kds.sysusers /usr/lib/sysusers.d/kds.conf
systemd-sysusers
install -d -m 0750 -o root -g kds /etc/kds
install -m 0644 /pkg/globalcp.service /pkg/zonecp@.service /etc/systemd/system/
sed 's/^tls-names:.*/tls-names: localhost,127.0.0.1/' /pkg/globalcp.yaml >/tmp/globalcp.yaml
install -m 0640 -o root -g kds /tmp/globalcp.yaml /etc/kds/globalcp.yaml
sed -e 's/eu-west/zone-1/g' -e 's#^global-address:.*#global-address: grpcs://localhost:5685#' \
    /pkg/zonecp-example.yaml >/tmp/zonecp.yaml
install -m 0640 -o root -g kds /tmp/zonecp.yaml /etc/kds/zonecp-zone-1.yaml
systemctl daemon-reload
""",
                timeout=180,
            )
            print(f"container {name} set up in {time.monotonic() - t0:.0f}s")
            yield m
        finally:
            # -v: with its anonymous volumes, which would otherwise stay behind.
            subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, timeout=120)


def test_global_starts_once_ready(machine: Machine) -> None:
    props = machine.show("globalcp", "Type", "NotifyAccess")
    assert props == {"Type": "notify", "NotifyAccess": "main"}, props
    # `systemctl start` of a Type=notify unit returns once READY=1 came: the API answers at once.
    machine.sh(
        f"timeout 60 systemctl start globalcp && "
        f"kdsctl --api-url {GLOBAL_API} --token-file {GLOBAL_TOKEN} --timeout 2 get meshes",
        timeout=90,
    )
    p = machine.wait_active("globalcp", timeout=1)
    assert p["SubState"] == "running", p
    assert machine.sh("systemctl is-active globalcp").stdout.strip() == "active"
    status = machine.sh("systemctl status globalcp --no-pager", check=False).stdout
    assert 'Status: "serving 0 zones, revision' in status, status


def test_metrics_under_the_unit(machine: Machine) -> None:
    """/metrics answers with the process metrics (they need /proc/stat: no ProcSubset=pid)."""
    text = machine.sh(
        "python3 -c 'import urllib.request as u; t = open(\""
        + GLOBAL_TOKEN
        + '").read().strip(); print(u.urlopen(u.Request("'
        + GLOBAL_API
        + '/metrics", headers={"Authorization": "Bearer " + t}), timeout=10).read().decode())\''
    ).stdout
    assert "kds_global_revision" in text, text[:2000]
    assert "process_resident_memory_bytes" in text, "no process metrics:\n" + text[:2000]
    assert "process_cpu_seconds_total" in text, "no process metrics:\n" + text[:2000]


def test_zone_starts_and_syncs(machine: Machine) -> None:
    machine.sh(
        f"""set -e
export KDSCTL_API_URL={GLOBAL_API} KDSCTL_TOKEN_FILE={GLOBAL_TOKEN}
kdsctl generate zone-token --zone {ZONE} --valid-for 1d --output-file /root/{ZONE}.token
install -m 0640 -o root -g kds /root/{ZONE}.token /etc/kds/{ZONE}.token
rm /root/{ZONE}.token
install -m 0644 /var/lib/kds/global/ca.crt /etc/kds/ca.crt
timeout 120 systemctl start zonecp@{ZONE}
""",
        timeout=150,
    )
    machine.wait_active(f"zonecp@{ZONE}", timeout=1)
    status = machine.show(f"zonecp@{ZONE}", "StatusText")["StatusText"]
    assert status.startswith("synced to revision"), status
    v = machine.put_secret("first", "first")
    machine.wait_synced("first", v)


def test_global_killed_is_restarted_and_the_zone_reconnects(machine: Machine) -> None:
    before = machine.show("globalcp", "MainPID", "NRestarts")
    connects = len(machine.events(f"zonecp@{ZONE}", "connected to global"))
    machine.sh(f"kill -9 {before['MainPID']}")
    after = wait_for(
        lambda: (
            (p := machine.show("globalcp", "ActiveState", "MainPID", "NRestarts"))["ActiveState"]
            == "active"
            and p["MainPID"] not in ("0", before["MainPID"])
            and p
        ),
        30,
        "globalcp restarted after kill -9",
    )
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    wait_for(
        lambda: len(machine.events(f"zonecp@{ZONE}", "connected to global")) > connects,
        30,
        f"{ZONE} reconnected to the restarted global",
    )
    v = machine.put_secret("after-kill", "after-kill")
    machine.wait_synced("after-kill", v)
    assert machine.show(f"zonecp@{ZONE}", "ActiveState")["ActiveState"] == "active"


def test_reload_applies_log_level_and_keeps_the_stream(machine: Machine) -> None:
    before = machine.show("globalcp", "MainPID", "NRestarts")
    zones = json.loads(machine.kdsctl(GLOBAL_API, GLOBAL_TOKEN, "inspect", "zones", "-o", "json"))
    connected_at = zones["items"][0]["connectedAt"]
    machine.sh(
        "sed -i 's/^log-level: info/log-level: debug/' /etc/kds/globalcp.yaml && "
        "grep -q '^log-level: debug' /etc/kds/globalcp.yaml && "
        "timeout 30 systemctl reload globalcp"
    )
    wait_for(
        lambda: any(
            "log-level info -> debug" in e["event"] for e in machine.events("globalcp", "reloaded")
        ),
        15,
        "the reload line in globalcp's journal",
    )
    # A file the daemon would refuse: systemctl reload fails naming the problem (it reported
    # success while only the journal said "reload refused"), and the daemon runs on.
    refused = machine.sh(
        "cp /etc/kds/globalcp.yaml /tmp/globalcp.yaml && echo 'log-level: [' >> /etc/kds/globalcp.yaml"
        " && timeout 30 systemctl reload globalcp; echo rc=$?;"
        " cp /tmp/globalcp.yaml /etc/kds/globalcp.yaml",
    )
    assert "rc=0" not in refused.stdout, refused.stdout + refused.stderr
    after = machine.show("globalcp", "ActiveState", "MainPID", "NRestarts")
    assert after["ActiveState"] == "active", after
    assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"])
    v = machine.put_secret("after-reload", "after-reload")
    machine.wait_synced("after-reload", v)
    zones = json.loads(machine.kdsctl(GLOBAL_API, GLOBAL_TOKEN, "inspect", "zones", "-o", "json"))
    assert zones["items"][0]["status"] == "Online", zones
    assert zones["items"][0]["connectedAt"] == connected_at, "the reload dropped the zone's stream"


def test_watchdog_restarts_a_frozen_global(machine: Machine) -> None:
    """A short WatchdogSec (a drop-in), then SIGSTOP: systemd kills and restarts globalcp."""
    machine.sh(
        """set -e
mkdir -p /etc/systemd/system/globalcp.service.d
printf '[Service]\\nWatchdogSec=3s\\nTimeoutAbortSec=5s\\n' \
    >/etc/systemd/system/globalcp.service.d/watchdog.conf
systemctl daemon-reload
timeout 60 systemctl restart globalcp
"""
    )
    before = machine.wait_active("globalcp")
    time.sleep(4)  # pings keep it alive past one WatchdogSec
    assert machine.show("globalcp", "MainPID")["MainPID"] == before["MainPID"]
    machine.sh(f"kill -STOP {before['MainPID']}")
    wait_for(
        lambda: (
            (p := machine.show("globalcp", "ActiveState", "MainPID"))["ActiveState"] == "active"
            and p["MainPID"] not in ("0", before["MainPID"])
        ),
        30,
        "globalcp restarted by the watchdog",
    )
    assert "Watchdog timeout" in machine.journal("globalcp")
    after = machine.show("globalcp", "NRestarts")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    machine.sh("rm -r /etc/systemd/system/globalcp.service.d && systemctl daemon-reload")
    v = machine.put_secret("after-watchdog", "after-watchdog")
    machine.wait_synced("after-watchdog", v)


def test_stop_both(machine: Machine) -> None:
    for unit in (f"zonecp@{ZONE}", "globalcp"):
        machine.sh(f"timeout 60 systemctl stop {unit}", timeout=90)
        p = machine.show(unit, "ActiveState", "Result", "ExecMainStatus")
        assert p["ActiveState"] == "inactive", (unit, p)
        assert p["Result"] == "success", (unit, p)
    journal = machine.journal("globalcp") + machine.journal(f"zonecp@{ZONE}")
    leaked = [v for v in VALUES if v in journal]
    assert not leaked, "secret values in the journal"
    assert len(VALUES) == 4
