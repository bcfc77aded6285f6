"""The store marker: a file in the daemon's data dir holding the id of the store it used.

A store found missing or empty where the marker names one is refused (each backend says how
to recover), not silently replaced by a new empty store whose emptiness every zone would
then follow. Written atomically (a temporary file, fsynced, renamed over, its directory
synced), mode 0600.
"""

from __future__ import annotations

from pathlib import Path

from kds.errors import StoreError
from kds.secret_files import write_secret_file

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
        write_secret_file(marker, store_id + "\n")
    except OSError as e:
        raise StoreError(f"cannot write the store marker {marker}: {e.strerror}") from e
