"""Bearer tokens of the HTTP API: an admin token and a read-only token per daemon.

Each is read from a file: the one given by option, or ``DATA_DIR/admin-token`` and
``DATA_DIR/read-only-token``, created (mode 0600, 256 random bits) at first start. The admin
token may do anything; the read-only token may read and list metadata and status, and sees
resources without their secret data. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from kds.errors import ConfigError
from kds.secret_files import check_secret_file, create_secret_file

__all__ = ["ApiTokens", "Role", "check_api_token_files", "load_api_tokens", "token_changes"]

ADMIN_FILE = "admin-token"
READ_ONLY_FILE = "read-only-token"


class Role(Enum):
    ADMIN = "admin"
    READ_ONLY = "read-only"


@dataclass(frozen=True)
class ApiTokens:
    admin: str
    read_only: str
    admin_file: Path

    def role_of(self, token: str) -> Role | None:
        # A header's bytes that are not UTF-8 come as surrogates: compared as sent, never a 500.
        presented = token.encode("utf-8", "surrogatepass")
        if hmac.compare_digest(presented, self.admin.encode()):
            return Role.ADMIN
        if hmac.compare_digest(presented, self.read_only.encode()):
            return Role.READ_ONLY
        return None


def _token_file(given: Path | None, default: Path, option: str) -> tuple[str, Path]:
    """The token in ``given``, else in ``default`` (made first if missing). Either file is
    held to the same rules: a token of at least 16 characters, in a file other users cannot
    open (warned). An emptied or hand-written default file was taken as it was: an empty one
    left the API without that token, and a start or reload said nothing of it."""
    if given is None and not default.exists():
        create_secret_file(default, secrets.token_urlsafe(32) + "\n")
    path = given if given is not None else default
    token = _read_token(path, option, made=given is None)
    check_secret_file(path, option)
    return token, path


def _read_token(path: Path, option: str, made: bool) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot read it: {e.strerror}") from None
    if len(token) < 16:
        hint = " (remove the file to have a new token made)" if made else ""
        raise ConfigError(f"{option} {path}: the token must be at least 16 characters{hint}")
    # No client can send such a token in its Authorization header: the API would be left
    # without it, as with an empty file.
    if any(c < " " or c == "\x7f" for c in token):
        raise ConfigError(
            f"{option} {path}: the token holds a line break or another control character, "
            "which no HTTP header can carry: the file is one line, the token"
        )
    return token


def load_api_tokens(
    data_dir: Path, admin_file: Path | None, read_only_file: Path | None
) -> ApiTokens:
    admin, admin_path = _token_file(admin_file, data_dir / ADMIN_FILE, "--admin-token-file")
    read_only, _ = _token_file(read_only_file, data_dir / READ_ONLY_FILE, "--read-only-token-file")
    _check_differ(admin, read_only)
    return ApiTokens(admin, read_only, admin_path)


def check_api_token_files(
    data_dir: Path, admin_file: Path | None, read_only_file: Path | None
) -> None:
    """What load_api_tokens would refuse, without making a file (for check-config): a token
    file that cannot be read or holds under 16 characters, or one token in both."""
    found = []
    for given, default, option in (
        (admin_file, data_dir / ADMIN_FILE, "--admin-token-file"),
        (read_only_file, data_dir / READ_ONLY_FILE, "--read-only-token-file"),
    ):
        if given is None and not default.exists():
            continue  # made at the start
        found.append(_read_token(given or default, option, made=given is None))
    if len(found) == 2:
        _check_differ(*found)


def _check_differ(admin: str, read_only: str) -> None:
    if hmac.compare_digest(admin.encode(), read_only.encode()):
        raise ConfigError("the admin and read-only tokens must differ")


def token_changes(old: ApiTokens | None, new: ApiTokens) -> list[str]:
    """What re-reading the token files changed, for a log line: which token, never its value."""
    notes = []
    if old is None or not hmac.compare_digest(old.admin.encode(), new.admin.encode()):
        notes.append("admin token replaced")
    if old is None or not hmac.compare_digest(old.read_only.encode(), new.read_only.encode()):
        notes.append("read-only token replaced")
    return notes
