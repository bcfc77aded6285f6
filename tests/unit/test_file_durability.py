"""Files a daemon writes beside its store (API tokens, the store marker, the sync CA and
server certificate, kdsctl's token file) survive a crash: a name never points at a file
not fully written, and a rename is made durable by syncing its directory."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from globalcp.security import server_credentials
from kds import tls
from kds.api.auth import load_api_tokens
from kds.config import GlobalConfig
from kds.runtime import ensure_private_dir
from kds.secret_files import write_secret_file
from kds.store._marker import write_marker

# A child process that makes the API token files and is SIGKILLed while the first one's
# bytes are written: what a crash (or a power cut before the data reached the disk) leaves.
_KILLED_WHILE_WRITING = """
import os, signal, sys
from pathlib import Path

real = os.fdopen

class Dies:
    def __init__(self, f): self.f = f
    def __enter__(self): return self
    def __exit__(self, *a): return self.f.__exit__(*a)
    def write(self, _): os.kill(os.getpid(), signal.SIGKILL)
    def __getattr__(self, name): return getattr(self.f, name)

os.fdopen = lambda fd, *a, **k: Dies(real(fd, *a, **k))
from kds.api.auth import load_api_tokens
load_api_tokens(Path(sys.argv[1]), None, None)
"""


def test_an_api_token_file_cut_off_by_a_crash_does_not_stop_the_next_start(
    tmp_path: Path,
) -> None:
    """Made in place (created, then written), a crash between the two left an empty
    admin-token, and every later start was refused ('the token must be at least 16
    characters'). The token is written to a file of its own and linked into place whole."""
    done = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING, str(tmp_path)])
    assert done.returncode == -9
    tokens = load_api_tokens(tmp_path, None, None)
    assert len(tokens.admin) >= 40
    assert (tmp_path / "admin-token").read_text().strip() == tokens.admin
    assert stat.S_IMODE((tmp_path / "admin-token").stat().st_mode) == 0o600


def test_an_api_token_file_made_at_start_is_never_replaced(tmp_path: Path) -> None:
    first = load_api_tokens(tmp_path, None, None)
    assert load_api_tokens(tmp_path, None, None) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin-token", "read-only-token"]


def test_an_api_token_file_is_made_where_the_file_system_has_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    tokens = load_api_tokens(tmp_path, None, None)
    assert (tmp_path / "admin-token").read_text().strip() == tokens.admin
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin-token", "read-only-token"]


def _synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What os.fsync is called on, from now on: 'dir NAME' or 'file NAME'."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        name = os.readlink(f"/proc/self/fd/{fd}")
        synced.append(f"{'dir' if stat.S_ISDIR(st.st_mode) else 'file'} {name}")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_each_file_written_beside_the_store_is_synced_with_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file fsynced and renamed into place but whose directory was not synced may be
    gone, or the old one back, after a power cut: the store marker, kdsctl's token file."""
    synced = _synced(monkeypatch)
    load_api_tokens(tmp_path, None, None)
    write_marker(tmp_path / "global.db.id", "a" * 32)
    write_secret_file(tmp_path / "zone.token", "token\n")
    names = ("admin-token", "read-only-token", "global.db.id", "zone.token")
    assert all((tmp_path / name).exists() for name in names)
    assert synced.count(f"dir {tmp_path}") == 4, synced
    assert len([s for s in synced if s.startswith("file ")]) == 4, synced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class _Store:
    """The internal secrets security.py reads and adds (the sync CA)."""

    def __init__(self) -> None:
        self.held: dict[str, bytes] = {}

    async def internal_secrets(self, prefix: str = "") -> dict[str, bytes]:
        return {k: v for k, v in self.held.items() if k.startswith(prefix)}

    async def add_internal_secrets(self, secrets: dict[str, bytes], now: str) -> dict[str, bytes]:
        for k, v in secrets.items():
            self.held.setdefault(k, v)
        return {k: self.held[k] for k in secrets}


def test_a_server_certificate_and_key_left_apart_by_a_crash_are_issued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key and the certificate are two files, each renamed into place: a crash between
    the two renames (a reissue for new names) left the new key beside the old certificate,
    and every later start was refused ('the key does not match the certificate', naming
    --tls-cert-file, which was never given). So was a certificate file that does not parse."""
    store = _Store()
    cfg = GlobalConfig(tls_names=("localhost",))
    asyncio.run(server_credentials(cfg, store, tmp_path))  # type: ignore[arg-type]
    cert, key = tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key"
    synced = _synced(monkeypatch)
    other = tls.issue_server_cert(tls.make_ca("another"), ["localhost"])
    key.write_bytes(other.key_pem)  # the new key in place, the certificate not yet
    creds = asyncio.run(server_credentials(cfg, store, tmp_path))  # type: ignore[arg-type]
    tls.check_pair(cert.read_bytes(), key.read_bytes(), "reissued")
    assert creds.pair.cert == cert.read_bytes()
    assert f"dir {tmp_path / 'tls'}" in synced
    cert.write_bytes(b"")
    asyncio.run(server_credentials(cfg, store, tmp_path))  # type: ignore[arg-type]
    tls.check_pair(cert.read_bytes(), key.read_bytes(), "reissued")


def test_a_data_dir_made_at_first_start_is_synced_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _synced(monkeypatch)
    ensure_private_dir(tmp_path / "var" / "kds")
    assert synced == [f"dir {tmp_path}", f"dir {tmp_path / 'var'}"]
