"""kdsctl: the command line client of the control planes' HTTP API (entry point: kdsctl.cli)."""

from __future__ import annotations
