"""Files holding secrets: one rule for every file a daemon reads, and kdsctl writes 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from kds.api.auth import load_api_tokens
from kds.crypto import load_key_file
from kds.errors import ConfigError
from kds.secret_files import check_secret_file, check_secret_files
from kdsctl.cli import cli
from kdsctl.client import ApiClient

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ6b25lLWEifQ.zone-token-value-that-must-not-leak-0123"


def _file(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _warnings(logs: list[Any]) -> list[Any]:
    return [e for e in logs if e["log_level"] == "warning"]


def test_a_secret_file_open_to_others_is_named_with_its_mode_and_fix(tmp_path: Path) -> None:
    f = _file(tmp_path / "zone.token", TOKEN, 0o644)
    with capture_logs() as logs:
        check_secret_file(f, "--token-file")
    [w] = _warnings(logs)
    assert w["option"] == "--token-file" and w["file"] == str(f) and w["mode"] == "0644"
    assert w["fix"] == f"chmod 600 {f}" and "chmod 600" in w["event"]
    assert TOKEN not in repr(logs)
    with pytest.raises(ConfigError, match=r"--token-file .* \(mode 0660\): chmod 600"):
        f.chmod(0o660)  # the group may write it
        check_secret_file(f, "--token-file", strict=True)
    f.chmod(0o600)
    with capture_logs() as logs:
        check_secret_file(f, "--token-file", strict=True)
        check_secret_files({"--token-file": f, "--tls-key-file": None})
    assert logs == []


def test_a_file_only_its_owner_and_the_daemon_s_group_read_is_not_open(tmp_path: Path) -> None:
    """root:kds 0640 for a service running as kds (packaging/systemd): nobody outside the
    service's own group reads it, so no warning, and the key file is taken too."""
    f = _file(tmp_path / "zone.token", TOKEN, 0o640)
    with capture_logs() as logs:
        check_secret_file(f, "--token-file", strict=True)
        check_secret_file(f, "--token-file")
    assert logs == []
    others = next(g for g in (65534, 65533, 12345) if g not in (os.getegid(), *os.getgroups()))
    if os.geteuid() != 0:
        pytest.skip("giving a file to another group needs root; the rest is checked")
    os.chown(f, -1, others)
    with pytest.raises(ConfigError, match=r"\(mode 0640\): chmod 600"):
        check_secret_file(f, "--token-file", strict=True)


def test_api_token_files_given_by_path_are_checked(tmp_path: Path) -> None:
    admin = _file(tmp_path / "admin", "a" * 32, 0o644)
    read_only = _file(tmp_path / "read-only", "r" * 32, 0o600)
    with capture_logs() as logs:
        load_api_tokens(tmp_path, admin, read_only)
    [w] = _warnings(logs)
    assert w["option"] == "--admin-token-file" and w["mode"] == "0644"
    assert "a" * 32 not in repr(logs)


def test_the_encryption_key_file_is_still_refused(tmp_path: Path) -> None:
    key = _file(tmp_path / "key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", 0o644)
    with pytest.raises(ConfigError, match=r"--encryption-key-file .*mode 0644.*chmod 600"):
        load_key_file(key)
    key.chmod(0o600)
    load_key_file(key)


@pytest.fixture
def issued(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"id": "t1", "zone": "zone-a", "expiresAt": "2027-01-01T00:00:00Z", "token": TOKEN}
    monkeypatch.setattr(ApiClient, "post", lambda self, path, body, **kw: answer)


def _generate(*args: str) -> Any:
    base = ["--api-url", "http://127.0.0.1:9", "--token", "x" * 20, "generate", "zone-token"]
    return CliRunner().invoke(cli, [*base, "--zone", "zone-a", *args])


@pytest.mark.usefixtures("issued")
def test_generate_zone_token_output_file_is_0600(tmp_path: Path) -> None:
    out = tmp_path / "zone-a.token"
    old = os.umask(0o022)
    try:
        res = _generate("--output-file", str(out))
        assert res.exit_code == 0, res.output
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert out.read_text() == TOKEN + "\n"
        assert TOKEN not in res.stdout and "zone token t1" in res.stderr
        # An existing file (here one left 0644 by shell redirection) is replaced, 0600.
        _file(out, "old\n", 0o644)
        res = _generate("--output-file", str(out))
        assert res.exit_code == 0, res.output
        assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_text() == TOKEN + "\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["zone-a.token"]
    finally:
        os.umask(old)
    res = _generate()
    assert res.exit_code == 0 and res.stdout == TOKEN + "\n"
    res = _generate("--output-file", str(tmp_path / "missing-dir" / "t"))
    assert res.exit_code == 1 and "cannot write it" in res.stderr and TOKEN not in res.output


@pytest.mark.parametrize("text", ["", "\n", "short"])
def test_a_default_api_token_file_is_held_to_the_given_file_s_rules(
    tmp_path: Path, text: str
) -> None:
    """DATA_DIR/admin-token, once it exists, is checked as --admin-token-file is: an emptied
    one left the API without an admin token (a reload said only 'admin token replaced')."""
    _file(tmp_path / "admin-token", text, 0o600)
    with pytest.raises(ConfigError, match=r"--admin-token-file .*admin-token: the token must be"):
        load_api_tokens(tmp_path, None, None)
    _file(tmp_path / "admin-token", "a" * 32, 0o600)
    _file(tmp_path / "read-only-token", text, 0o600)
    with pytest.raises(ConfigError, match=r"remove the file to have a new token made"):
        load_api_tokens(tmp_path, None, None)


def test_a_default_api_token_file_open_to_others_is_warned_of(tmp_path: Path) -> None:
    _file(tmp_path / "admin-token", "a" * 32, 0o644)
    with capture_logs() as logs:
        tokens = load_api_tokens(tmp_path, None, None)
    [w] = _warnings(logs)
    assert w["option"] == "--admin-token-file" and w["mode"] == "0644"
    assert tokens.admin == "a" * 32 and "a" * 32 not in repr(logs)
    assert len(tokens.read_only) >= 40  # made at first start
