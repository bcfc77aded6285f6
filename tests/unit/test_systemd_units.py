"""packaging/systemd: the unit files pass ``systemd-analyze verify`` and say what the README
promises (notify, watchdog, reload, hardening); the example configs load as they are."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kds.config import GlobalConfig, ZoneConfig, load_config

UNITS = Path(__file__).parents[2] / "packaging" / "systemd"
BIN = Path(sys.executable).parent
ANALYZE = shutil.which("systemd-analyze")


def _directives(unit: Path) -> dict[str, list[str]]:
    """Key -> values (a unit may repeat a key, so not configparser)."""
    out: dict[str, list[str]] = {}
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("name", ["globalcp.service", "zonecp@.service"])
def test_unit_says_what_the_readme_promises(name: str) -> None:
    d = _directives(UNITS / name)
    cmd = "globalcp" if name.startswith("globalcp") else "zonecp"
    config = "/etc/kds/globalcp.yaml" if cmd == "globalcp" else "/etc/kds/zonecp-%i.yaml"
    assert d["ExecStart"] == [f"/usr/local/bin/{cmd} run --config {config} --log-format json"]
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "User": "kds",
    }
    for key, value in expected.items():
        assert d[key] == [value], key
    # A file the daemon would refuse fails the reload before the signal is sent.
    assert d["ExecReload"] == [
        f"/usr/local/bin/{cmd} check-config --config {config}",
        "/bin/kill -HUP $MAINPID",
    ]
    assert "@system-service" in d["SystemCallFilter"]
    assert d["WatchdogSec"] and d["StateDirectory"][0].startswith("kds/")
    # The data dir in the example config is the unit's state directory.
    state = "/var/lib/" + d["StateDirectory"][0]
    example = UNITS / ("globalcp.yaml" if cmd == "globalcp" else "zonecp-example.yaml")
    cfg = load_config(GlobalConfig if cmd == "globalcp" else ZoneConfig, example, {}, {})
    assert str(cfg.data_dir) == state.replace("%i", "eu-west")


def test_example_configs_load() -> None:
    g = load_config(GlobalConfig, UNITS / "globalcp.yaml", {}, {})
    assert g.kds_address == ("0.0.0.0", 5685)
    z = load_config(ZoneConfig, UNITS / "zonecp-example.yaml", {}, {})
    assert z.zone == "eu-west" and z.global_address.startswith("grpcs://")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this venv's console scripts.
    for unit in ("globalcp.service", "zonecp@.service"):
        text = (UNITS / unit).read_text().replace("/usr/local/bin/", f"{BIN}/")
        (tmp_path / unit).write_text(text)
    names = ["globalcp.service", "zonecp@eu-west.service"]
    r = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on some warnings (an unknown key is only "ignoring"): none may appear.
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout
