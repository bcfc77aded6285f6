"""The one rule for files that hold secrets a daemon reads: only their owner (and the
daemon's own group, read only) may open them.

A file other users may read (or write) is named, with its mode and the fix, by
``check_secret_file``. The encryption key refuses such a file (``strict``): it has since it
was added, and a key file is made by hand for this daemon alone. Token files and TLS private
keys get a loud warning at every start instead: a token written by shell redirection under
the usual umask 022 is 0644, and Kubernetes mounts Secret volumes 0644 by default, so
refusing them would stop daemons that run today.

The files a daemon or kdsctl writes (API tokens, the store marker, the sync CA and server
certificate, a zone token) are written whole or not at all, crash or power cut
(``write_secret_file``, ``create_secret_file``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

import structlog

from kds.errors import ConfigError

__all__ = [
    "check_secret_file",
    "check_secret_files",
    "create_secret_file",
    "open_mode",
    "sync_dir",
    "write_secret_file",
]

log = structlog.get_logger("kds.secret_files")


def open_mode(path: Path) -> int | None:
    """The file's permission bits when other users may read or write it, else None (also
    when it cannot be stat'ed: reading it will say why). A file only its owner and the
    daemon's own group may read (``root:kds 0640`` for a service running as ``kds``, the
    layout of packaging/systemd) is not open: nobody outside the service's group reads it."""
    try:
        st = path.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return None
    own_group = st.st_gid == os.getegid() or st.st_gid in os.getgroups()
    if mode & 0o037 == 0 and own_group and st.st_uid in (0, os.geteuid()):
        return None
    return mode


def check_secret_file(path: Path, option: str, *, strict: bool = False) -> None:
    """Refuse (``strict``) or warn about a secret file other users may open."""
    mode = open_mode(path)
    if mode is None:
        return
    if strict:
        raise ConfigError(
            f"{option} {path} is readable by other users (mode {mode:04o}): chmod 600 {path}"
        )
    log.warning(
        "a file holding a secret is readable by other users: run chmod 600 on it",
        option=option,
        file=str(path),
        mode=f"{mode:04o}",
        fix=f"chmod 600 {path}",
    )


def check_secret_files(files: dict[str, Path | None]) -> None:
    """Warn about each given secret file (option -> path) other users may open."""
    for option, path in files.items():
        if path is not None:
            check_secret_file(path, option)


def sync_dir(directory: Path) -> None:
    """Flush ``directory``'s entries to disk: a file renamed or linked into it is there after
    a power cut only once its directory is synced. A file system that cannot sync a
    directory (EINVAL) has nothing to flush."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _written_beside(path: Path, data: bytes) -> str:
    """A new file beside ``path`` (O_EXCL, 0600 from the first byte) holding ``data``,
    flushed to disk: its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _bytes(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


def write_secret_file(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path``, mode 0600 from the first byte: a new file is made beside it,
    flushed, and renamed over ``path``, then the directory is synced. A reader, or a start
    after a crash or a power cut, sees the old file or the new one whole, never a part."""
    tmp = _written_beside(path, _bytes(text))
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_dir(path.parent)


def create_secret_file(path: Path, text: str | bytes) -> bool:
    """Make ``path`` holding ``text`` (0600) unless it exists: False, and nothing written,
    if it does. As write_secret_file, the name appears only once the file is whole and on
    disk (a file created in place, then written, was left empty by a crash in between)."""
    tmp = _written_beside(path, _bytes(text))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        # A file system without hard links: renamed instead. The data dir's lock keeps any
        # other daemon from making the same file meanwhile.
        if path.exists():
            return False
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    sync_dir(path.parent)
    return True
