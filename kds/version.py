"""The software version, reported in hellos, welcomes, the API and ``--version``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# The product line, as Kuma's index names its own ("Kuma", "Kong Mesh").
PRODUCT = "kds-sync"

try:
    __version__ = version("kds-sync")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
