"""``zonecp migrate-store``: move a SQLite zone store to PostgreSQL, so the zone resumes
its sync instead of taking a snapshot (kds.migrate_store; kds.store.postgres._import says
what is copied)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kds.config import ZoneConfig
from kds.migrate_store import Copied
from kds.migrate_store import migrate_store as copy_store

__all__ = ["migrate_store"]


def migrate_store(ctx: click.Context, config_file: Path | None, given: dict[str, Any]) -> int:
    return copy_store(ctx, ZoneConfig, config_file, given, _done)


def _done(c: Copied) -> str:
    return (
        f"copied store {c.store_id} from {c.source} to {c.schema}: applied revision "
        f"{c.counts['applied_revision']}, {c.counts['resources']} resources (zone-local ones "
        "and global's copies, name conflicts included).\n"
        "Start zonecp with --store postgres and the same --postgres-* options (and "
        "--encryption-key-file, if the store was encrypted): the zone resumes where it was."
    )
