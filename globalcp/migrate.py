"""``globalcp migrate-store``: move a SQLite global store to PostgreSQL, so zones resume.

The global must be stopped (its data dir's lock is taken, so a running global is refused).
The SQLite file is read, not changed: until globalcp is started with ``--store postgres``,
going back is starting it as before. See kds.store.postgres._import for what is copied.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from kds.config import GlobalConfig, load_config
from kds.errors import KdsError
from kds.runtime import ensure_private_dir
from kds.store.postgres import PgTarget, import_sqlite_global
from kds.store.target import store_location

__all__ = ["migrate_store"]


def migrate_store(ctx: click.Context, config_file: Path | None, given: dict[str, Any]) -> int:
    sources = {
        name: "environment"
        if ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT
        else "flag"
        for name in given
    }
    try:
        cfg = load_config(GlobalConfig, config_file, given, sources)
        cfg = dataclasses.replace(cfg, store="postgres")
        data_dir = ensure_private_dir(cfg.data_dir)
        target = store_location(cfg, data_dir)
        assert isinstance(target, PgTarget)
        source = data_dir / "global.db"
        store_id, counts = import_sqlite_global(source, target)
    except KdsError as e:
        click.echo(f"migrate-store: {e}", err=True)
        return 1
    click.echo(
        f"copied store {store_id} from {source} to {target.schema}: revision {counts['head']}, "
        f"{counts['resources']} resources, {counts['changelog']} change-log entries, "
        f"{counts['internal_secrets']} internal secrets, {counts['zone_tokens']} zone tokens, "
        f"{counts['zone_status']} zone statuses.\n"
        "Start globalcp with --store postgres and the same --postgres-* options (and "
        "--encryption-key-file, if the store was encrypted): zones resume where they were."
    )
    return 0
