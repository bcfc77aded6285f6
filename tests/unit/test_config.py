"""Daemon configuration: flags win over environment, environment over the file, file over
defaults; every bad value is refused naming the option and where it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from globalcp.cli import cli as globalcp_cli
from kds.config import (
    GlobalConfig,
    ZoneConfig,
    load_config,
    parse_address,
    parse_duration,
    parse_size,
)
from kds.errors import ConfigError
from zonecp.cli import cli as zonecp_cli


def test_defaults() -> None:
    """With no file and no flags, the documented defaults apply."""
    cfg = load_config(GlobalConfig, None, {}, {})
    assert cfg.api_address == ("127.0.0.1", 5681)
    assert cfg.kds_address == ("127.0.0.1", 5685)
    assert cfg.max_data_bytes == 1024 * 1024
    assert cfg.log_size == 10_000
    assert cfg.ack_delay == 0.5


def test_file_then_given_values_win(tmp_path: Path) -> None:
    """A value from flags or environment beats the file; the file beats the default."""
    f = tmp_path / "zone.yaml"
    f.write_text("zone: from-file\ndata-dir: /tmp/from-file\nmax-message-bytes: 8MiB\n")
    cfg = load_config(ZoneConfig, f, {"zone": "from-flag", "data_dir": None}, {"zone": "flag"})
    assert cfg.zone == "from-flag"
    assert cfg.data_dir == Path("/tmp/from-file")
    assert cfg.max_message_bytes == 8 * 1024 * 1024


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    """An unknown key in the file is refused, naming the key and the file."""
    f = tmp_path / "g.yaml"
    f.write_text("api-adress: 127.0.0.1:1\n")
    with pytest.raises(ConfigError, match=r"unknown option .api-adress.*known: .*api-address"):
        load_config(GlobalConfig, f, {}, {})


def test_bad_value_names_option_and_source(tmp_path: Path) -> None:
    """A bad value names the flag and whether it came from the file, env or a flag."""
    f = tmp_path / "g.yaml"
    f.write_text("kds-address: nowhere\n")
    with pytest.raises(ConfigError, match=r"--kds-address \(from config file .*g.yaml\)"):
        load_config(GlobalConfig, f, {}, {})
    with pytest.raises(ConfigError, match=r"--zone \(from environment\): must be an RFC 1123"):
        load_config(ZoneConfig, None, {"zone": "Bad_Zone"}, {"zone": "environment"})
    with pytest.raises(ConfigError, match=r"--global-address \(from flag\): .*grpcs://HOST:PORT"):
        load_config(ZoneConfig, None, {"global_address": "http://x:1"}, {})
    with pytest.raises(ConfigError, match=r"--ack-delay \(from flag\): must be at most 1s"):
        load_config(GlobalConfig, None, {"ack_delay": "2s"}, {})
    assert load_config(GlobalConfig, None, {"ack_delay": "0"}, {}).ack_delay == 0.0


@pytest.mark.parametrize(
    ("cls", "given", "message"),
    [
        # Each started before and left the daemon spinning or never in sync.
        (GlobalConfig, {"heartbeat_interval": "0"}, r"--heartbeat-interval .*at least 100ms"),
        (ZoneConfig, {"keepalive_interval": "0"}, r"--keepalive-interval .*at least 1s"),
        (GlobalConfig, {"keepalive_timeout": "0"}, r"--keepalive-timeout .*at least 100ms"),
        (ZoneConfig, {"max_message_bytes": "1"}, r"--max-message-bytes .*at least 16KiB"),
        # Said what a number must be, not Python's parse error.
        (GlobalConfig, {"log_size": "abc"}, r"--log-size \(from flag\): 'abc' is not a positive"),
        (GlobalConfig, {"log_size": 1.5}, r"--log-size .*1.5 is not a positive integer"),
        (GlobalConfig, {"max_unacked": True}, r"--max-unacked .*not a positive integer"),
        (GlobalConfig, {"tls_names": {"a": 1}}, r"--tls-names .*as a list or comma-separated"),
    ],
)
def test_values_that_leave_a_daemon_useless_are_refused(
    cls: type[GlobalConfig] | type[ZoneConfig], given: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(cls, None, given, {})  # type: ignore[type-var]


def test_the_smallest_values_allowed_are_taken() -> None:
    cfg = load_config(
        GlobalConfig,
        None,
        {"heartbeat_interval": "100ms", "keepalive_interval": "1s", "keepalive_timeout": "100ms",
         "max_message_bytes": "16KiB", "log_size": "1"},
        {},
    )  # fmt: skip
    assert (cfg.heartbeat_interval, cfg.keepalive_interval, cfg.keepalive_timeout) == (
        0.1,
        1.0,
        0.1,
    )
    assert (cfg.max_message_bytes, cfg.log_size) == (16 * 1024, 1)


def test_the_api_and_sync_ports_must_differ() -> None:
    """One port for both started the store and its CA, then failed to bind as if another
    process held the port."""
    same = {"api_address": "127.0.0.1:19681", "kds_address": "127.0.0.1:19681"}
    with pytest.raises(ConfigError, match=r"--api-address 127.0.0.1:19681 and --kds-address "):
        load_config(GlobalConfig, None, same, {})
    wild = {"api_address": "0.0.0.0:19681", "kds_address": "127.0.0.1:19681"}
    with pytest.raises(ConfigError, match="share a port"):
        load_config(GlobalConfig, None, wild, {})
    apart = {"api_address": "127.0.0.1:0", "kds_address": "127.0.0.1:0"}
    assert load_config(GlobalConfig, None, apart, {}).kds_address == ("127.0.0.1", 0)
    other_host = {"api_address": "127.0.0.1:19681", "kds_address": "127.0.0.2:19681"}
    assert load_config(GlobalConfig, None, other_host, {}).api_address[1] == 19681


def test_file_must_be_a_map(tmp_path: Path) -> None:
    """A file that is not a YAML map, or not YAML at all, is a clear error."""
    f = tmp_path / "g.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a map"):
        load_config(GlobalConfig, f, {}, {})
    f.write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(GlobalConfig, f, {}, {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(GlobalConfig, tmp_path / "missing.yaml", {}, {})


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5.0), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0), (3, 3.0)]
)
def test_durations(text: object, seconds: float) -> None:
    """Durations take ms, s, m, h or plain seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [("1MiB", 1 << 20), ("512KiB", 512 << 10), (10, 10)])
def test_sizes(text: object, size: int) -> None:
    """Sizes take B, KiB, MiB, GiB, KB, MB, GB or plain bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["-1", "0", "1 TB", "lots"])
def test_bad_sizes(bad: str) -> None:
    """Zero, negative and unknown units are refused."""
    with pytest.raises(ValueError):
        parse_size(bad)


def test_addresses() -> None:
    """HOST:PORT, including bracketed IPv6; a missing or bad port is refused."""
    assert parse_address("0.0.0.0:5685") == ("0.0.0.0", 5685)
    assert parse_address("[::1]:80") == ("::1", 80)
    for bad in ("localhost", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_cli_env_beats_file_and_flag_beats_env(tmp_path: Path) -> None:
    """Through the real CLI: a bad env value is reported as coming from the environment, and a
    flag overrides it (the run then fails later, at --zone, which proves the order)."""
    f = tmp_path / "z.yaml"
    f.write_text("zone: good-zone\n")
    runner = CliRunner()
    r = runner.invoke(
        zonecp_cli, ["run", "--config", str(f)], env={"ZONECP_KEEPALIVE_TIMEOUT": "soon"}
    )
    assert r.exit_code == 2
    assert "--keepalive-timeout (from environment)" in r.output
    r = runner.invoke(
        zonecp_cli,
        ["run", "--config", str(f), "--zone", "Bad_Zone"],
        env={"ZONECP_ZONE": "env-zone"},
    )
    assert r.exit_code == 2 and "--zone (from flag)" in r.output


def test_help_explains_every_option() -> None:
    """--help lists each option with its environment variable and default."""
    out = CliRunner().invoke(globalcp_cli, ["run", "--help"]).output
    for flag in ("--data-dir", "--api-address", "--kds-address", "--log-size", "--config"):
        assert flag in out
    assert "GLOBALCP_KDS_ADDRESS" in out and "default 127.0.0.1:5685" in out


@pytest.mark.parametrize(
    ("cli", "prefix", "flag", "field"),
    [(globalcp_cli, "GLOBALCP", "kds-insecure", "kds_insecure"), (zonecp_cli, "ZONECP", "insecure", "insecure")],
)  # fmt: skip
def test_an_on_off_option_can_be_turned_off_by_a_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: click.Group, prefix: str, flag: str,
    field: str,
) -> None:  # fmt: skip
    """On in the file or the environment, --no-X turns it off (flags win); --help says the
    default. There was no --no-X: only the environment could override the file."""
    import kds.cli_common

    seen: list[Any] = []

    def fake_run_daemon(main: Any, load: Any) -> int:
        seen.append(load())
        return 0

    monkeypatch.setattr(kds.cli_common, "run_daemon", fake_run_daemon)
    monkeypatch.setattr(kds.cli_common, "configure_logging", lambda *_: None)
    f = tmp_path / "c.yaml"
    f.write_text(f"{flag}: true\nzone: zone-a\n" if prefix == "ZONECP" else f"{flag}: true\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["run", "--config", str(f), f"--no-{flag}"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["run", "--config", str(f)])
    r = runner.invoke(
        cli, ["run", "--config", str(f), f"--no-{flag}"], env={f"{prefix}_{field.upper()}": "1"}
    )
    assert [getattr(c, field) for c in seen] == [False, True, False]
    assert "default off" in runner.invoke(cli, ["run", "--help"]).output


def test_check_config_says_what_a_start_or_reload_would_refuse(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    runner = CliRunner()
    f.write_text("log-level: debug\n")
    r = runner.invoke(globalcp_cli, ["check-config", "--config", str(f)])
    assert r.exit_code == 0 and f"configuration valid: {f}" in r.output
    f.write_text("log-level: [\n")
    r = runner.invoke(globalcp_cli, ["check-config", "--config", str(f)])
    assert r.exit_code == 1 and "is not valid YAML" in r.stderr
    f.write_text("heartbeat-interval: 0s\n")
    r = runner.invoke(globalcp_cli, ["check-config", "--config", str(f)])
    assert r.exit_code == 1 and "--heartbeat-interval (from config file" in r.stderr
    # A zone's options that must agree, as its start checks them.
    f.write_text("global-address: grpcs://global.example:5685\n")
    r = runner.invoke(zonecp_cli, ["check-config", "--config", str(f)])
    assert r.exit_code == 1 and "--zone is required" in r.stderr
    r = runner.invoke(zonecp_cli, ["check-config", "--config", str(f), "--zone", "eu-west"])
    assert r.exit_code == 1 and "--token-file is required" in r.stderr
    r = runner.invoke(
        zonecp_cli, ["check-config", "--config", str(f), "--zone", "eu-west", "--token-file", "t"]
    )
    assert r.exit_code == 0, r.output


def test_check_config_refuses_the_certificate_and_key_files_global_would(tmp_path: Path) -> None:
    """A start refused these only after it had opened (or made) the store; check-config, which
    a reload runs first, passed them."""
    from kds import tls

    ca = tls.make_ca("test CA")
    pair, other = tls.issue_server_cert(ca, ["localhost"]), tls.issue_server_cert(ca, ["x"])
    cert, key, wrong = tmp_path / "s.crt", tmp_path / "s.key", tmp_path / "o.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    wrong.write_bytes(other.key_pem)
    for p in (key, wrong):
        p.chmod(0o600)
    runner = CliRunner()

    def check(*args: str) -> Any:
        return runner.invoke(globalcp_cli, ["check-config", *args])

    r = check("--tls-cert-file", str(cert))
    assert r.exit_code == 1 and "--tls-cert-file and --tls-key-file go together" in r.stderr
    r = check("--api-tls-key-file", str(key))
    assert r.exit_code == 1 and "--api-tls-cert-file and --api-tls-key-file go" in r.stderr
    r = check("--tls-cert-file", str(cert), "--tls-key-file", str(wrong))
    assert r.exit_code == 1 and "the key does not match the certificate" in r.stderr
    assert f"--tls-key-file {wrong}" in r.stderr
    r = check("--api-tls-cert-file", str(tmp_path / "none.crt"), "--api-tls-key-file", str(key))
    assert r.exit_code == 1 and "--api-tls-cert-file" in r.stderr and "cannot read it" in r.stderr
    r = check("--encryption-key-file", str(tmp_path / "none.key"))
    assert r.exit_code == 1 and "--encryption-key-file" in r.stderr
    for args in (
        ("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
        ("--api-tls-cert-file", str(cert), "--api-tls-key-file", str(key)),
        # plaintext sync serves no certificate: the sync pair is not read
        ("--kds-insecure", "--tls-cert-file", str(cert)),
    ):
        r = check(*args)
        assert r.exit_code == 0, r.output
    zone = ("check-config", "--zone", "z", "--insecure", "--global-address", "grpc://h:1")
    r = runner.invoke(zonecp_cli, [*zone, "--api-tls-cert-file", str(cert)])
    assert r.exit_code == 1 and "--api-tls-cert-file and --api-tls-key-file go" in r.stderr
    r = runner.invoke(zonecp_cli, [*zone, "--encryption-key-file", str(wrong)])
    assert r.exit_code == 1 and "--encryption-key-file" in r.stderr
    r = runner.invoke(
        zonecp_cli, [*zone, "--api-tls-cert-file", str(cert), "--api-tls-key-file", str(key)]
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("cli", [globalcp_cli, zonecp_cli], ids=["globalcp", "zonecp"])
def test_check_config_refuses_the_api_token_files_a_start_would(tmp_path: Path, cli: Any) -> None:
    """An emptied DATA_DIR/admin-token (or a short given token file) is refused by a start and
    a reload; check-config, which the units run before a reload, passes it no more. A data
    dir without token files is fine: the start makes them (check-config makes nothing)."""
    data = tmp_path / "data"
    data.mkdir()
    base = ["check-config", "--data-dir", str(data)]
    if cli is zonecp_cli:
        base += ["--zone", "z", "--insecure", "--global-address", "grpc://h:1"]
    runner = CliRunner()
    r = runner.invoke(cli, base)
    assert r.exit_code == 0, r.output
    assert not list(data.iterdir())
    (data / "admin-token").write_text("\n")
    r = runner.invoke(cli, base)
    assert r.exit_code == 1 and "--admin-token-file" in r.stderr, r.output
    assert "the token must be at least 16 characters" in r.stderr
    (data / "admin-token").write_text("a" * 32)
    (data / "read-only-token").write_text("a" * 32)
    r = runner.invoke(cli, base)
    assert r.exit_code == 1 and "the admin and read-only tokens must differ" in r.stderr
    short = tmp_path / "ro"
    short.write_text("short")
    r = runner.invoke(cli, [*base, "--read-only-token-file", str(short)])
    assert r.exit_code == 1 and f"--read-only-token-file {short}" in r.stderr
    short.write_text("r" * 32)
    r = runner.invoke(cli, [*base, "--read-only-token-file", str(short)])
    assert r.exit_code == 0, r.output
    # Two lines: no Authorization header can carry the token, and no client could use it.
    short.write_text("r" * 16 + "\n" + "s" * 16 + "\n")
    r = runner.invoke(cli, [*base, "--read-only-token-file", str(short)])
    assert r.exit_code == 1 and "holds a line break" in r.stderr, r.output
    assert "s" * 16 not in r.stderr


@pytest.mark.parametrize("cli", [globalcp_cli, zonecp_cli], ids=["globalcp", "zonecp"])
def test_migrate_store_help_shows_what_it_reads_and_takes_every_run_option(cli: Any) -> None:
    """run's config file and environment must work for migrate-store as they are, so it takes
    every run option; its help listed all 30 of them, of which it reads four or five."""
    shown = CliRunner().invoke(cli, ["migrate-store", "--help"]).output
    assert "--postgres-url" in shown and "--data-dir" in shown
    assert "--keepalive-interval" not in shown and "--api-address" not in shown
    assert ("--zone" in shown) is (cli is zonecp_cli)
    # A hidden option is still taken: the command goes on to look for the SQLite store.
    r = CliRunner().invoke(
        cli,
        [
            "migrate-store",
            "--keepalive-interval",
            "3s",
            "--zone",
            "z",
            "--data-dir",
            "/nonexistent-kds",
        ]
        if cli is zonecp_cli
        else ["migrate-store", "--keepalive-interval", "3s", "--data-dir", "/nonexistent-kds"],
    )
    assert "no such option" not in (r.output + r.stderr).lower()
    assert r.exit_code == 1 and "migrate-store:" in r.stderr
