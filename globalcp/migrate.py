"""``globalcp migrate-store``: move a SQLite global store to PostgreSQL, so zones resume
(kds.migrate_store; kds.store.postgres._import says what is copied)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kds.config import GlobalConfig
from kds.migrate_store import Copied
from kds.migrate_store import migrate_store as copy_store

__all__ = ["migrate_store"]


def migrate_store(ctx: click.Context, config_file: Path | None, given: dict[str, Any]) -> int:
    return copy_store(ctx, GlobalConfig, config_file, given, _done)


def _done(c: Copied) -> str:
    return (
        f"copied store {c.store_id} from {c.source} to {c.schema}: revision "
        f"{c.counts['head']}, {c.counts['resources']} resources, {c.counts['changelog']} "
        f"change-log entries, {c.counts['internal_secrets']} internal secrets, "
        f"{c.counts['zone_tokens']} zone tokens, {c.counts['zone_status']} zone statuses.\n"
        "Start globalcp with --store postgres and the same --postgres-* options (and "
        "--encryption-key-file, if the store was encrypted): zones resume where they were."
    )
