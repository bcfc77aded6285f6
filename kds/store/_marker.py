"""The store marker: a file in the daemon's data dir holding the id of the store it used.

A store found missing or empty where the marker names one is refused (each backend says how
to recover), not silently replaced by a new empty store whose emptiness every zone would
then follow. Written atomically (a temporary file, fsynced, renamed over), mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

from kds.errors import StoreError

__all__ = ["held_store", "write_marker"]


def held_store(marker: Path) -> str:
    """The store id ``marker`` names (bounded; ``?`` when it cannot be read)."""
    try:
        return marker.read_text().strip()[:64]
    except OSError:
        return "?"


def write_marker(marker: Path, store_id: str) -> None:
    """Record ``store_id`` in ``marker`` (nothing to do when it says so already)."""
    try:
        if marker.exists() and marker.read_text().strip() == store_id:
            return
        tmp = marker.with_name(marker.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(store_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker)
    except OSError as e:
        raise StoreError(f"cannot write the store marker {marker}: {e.strerror}") from e
