"""Reload on SIGHUP: what changed, what needs a restart, and a bad file keeps the running
configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from globalcp.app import LIVE_OPTIONS as GLOBAL_LIVE
from kds.config import GlobalConfig, ZoneConfig, load_config
from kds.errors import ConfigError
from kds.reload import Reloader, diff_configs
from zonecp.app import LIVE_OPTIONS as ZONE_LIVE


def test_diff_splits_live_changes_from_restarts() -> None:
    old = GlobalConfig()
    new = GlobalConfig(
        log_level="debug",
        heartbeat_interval=5.0,
        api_address=("127.0.0.1", 6000),
        tls_names=("a.example", "10.0.0.5"),
        admin_token_file=Path("/etc/kds/admin"),
    )
    diff = diff_configs(old, new, GLOBAL_LIVE | {"log_level"})
    assert [str(c) for c in diff.live] == [
        "log-level info -> debug",
        "admin-token-file none -> /etc/kds/admin",
        "heartbeat-interval 2s -> 5s",
    ]
    assert diff.restart_names == ["api-address", "tls-names"]
    assert [str(c) for c in diff.restart] == [
        "api-address 127.0.0.1:5681 -> 127.0.0.1:6000",
        "tls-names none -> a.example,10.0.0.5",
    ]


def test_same_config_is_no_change() -> None:
    diff = diff_configs(ZoneConfig(zone="z"), ZoneConfig(zone="z"), ZONE_LIVE)
    assert diff.live == () and diff.restart == ()


def test_what_each_daemon_takes_live() -> None:
    # Addresses, the data dir, the store's limits and transport security need a restart.
    for name in ("api_address", "data_dir", "log_size", "max_message_bytes", "encryption_key_file"):
        assert name not in GLOBAL_LIVE
    for name in ("kds_address", "tls_cert_file", "kds_insecure"):
        assert name not in GLOBAL_LIVE
    for name in ("zone", "global_address", "ca_file", "insecure", "api_address", "data_dir"):
        assert name not in ZONE_LIVE
    assert {"heartbeat_interval", "admin_token_file", "max_data_bytes"} <= GLOBAL_LIVE
    assert {"token_file", "keepalive_interval", "admin_token_file"} <= ZONE_LIVE


def _reloader(path: Path, applied: list[GlobalConfig]) -> Reloader[GlobalConfig]:
    def load() -> GlobalConfig:
        # As at start: the file read again, a flag (the api address) still winning over it.
        return load_config(GlobalConfig, path, {"api_address": "127.0.0.1:7000"}, {})

    def apply(cfg: GlobalConfig) -> list[str]:
        applied.append(cfg)
        return []

    return Reloader(load(), load, GLOBAL_LIVE, apply)


def test_reload_applies_live_options_and_keeps_restart_ones(tmp_path: Path) -> None:
    path = tmp_path / "globalcp.yaml"
    path.write_text("log-level: info\nheartbeat-interval: 2s\nkds-address: 127.0.0.1:5685\n")
    applied: list[GlobalConfig] = []
    r = _reloader(path, applied)
    path.write_text(
        "log-level: warning\nheartbeat-interval: 3s\nkds-address: 127.0.0.1:5999\n"
        "api-address: 127.0.0.1:1\n"
    )
    with capture_logs() as logs:
        diff = r.reload()
    assert diff is not None
    assert applied[-1].heartbeat_interval == 3.0
    assert applied[-1].log_level == "warning"
    # The restart-only option keeps its running value; the flag still wins over the file.
    assert r.current.kds_address == ("127.0.0.1", 5685)
    assert r.current.api_address == ("127.0.0.1", 7000)
    events = [e["event"] for e in logs]
    assert "reloaded: log-level info -> warning, heartbeat-interval 2s -> 3s" in events
    assert "needs a restart: kds-address" in events
    # Reloading again with nothing new in the file still reports the restart it needs.
    with capture_logs() as logs:
        r.reload()
    assert [e["event"] for e in logs] == [
        "reloaded: nothing changed",
        "needs a restart: kds-address",
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("log-level: loud\n", "--log-level"),
        ("heartbeat-interval: soon\n", "--heartbeat-interval"),
        ("no-such-option: 1\n", "no-such-option"),
        ("log-level: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_field(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "globalcp.yaml"
    path.write_text("log-level: info\n")
    applied: list[GlobalConfig] = []
    r = _reloader(path, applied)
    before = r.current
    path.write_text(text)
    with capture_logs() as logs:
        assert r.reload() is None
    assert applied == []
    assert r.current is before
    [err] = [e for e in logs if e["log_level"] == "error"]
    assert err["event"] == "reload refused: the running configuration is kept"
    assert named in err["error"]


def test_the_daemon_can_refuse_what_it_cannot_apply(tmp_path: Path) -> None:
    path = tmp_path / "globalcp.yaml"
    path.write_text("max-unacked: 8\n")

    def apply(cfg: GlobalConfig) -> list[str]:
        raise ConfigError("--admin-token-file /nope: cannot read it: No such file or directory")

    r = Reloader(
        load_config(GlobalConfig, path, {}, {}),
        lambda: GlobalConfig(max_unacked=9),
        GLOBAL_LIVE,
        apply,
    )
    with capture_logs() as logs:
        assert r.reload() is None
    assert r.current.max_unacked == 8
    assert "--admin-token-file" in logs[-1]["error"]
