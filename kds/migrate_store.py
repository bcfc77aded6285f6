"""``globalcp migrate-store`` / ``zonecp migrate-store``: move a SQLite store to PostgreSQL.

The daemon must be stopped (its data dir's lock is taken, so a running one is refused). The
SQLite file is read, not changed: until the daemon is started with ``--store postgres``,
going back is starting it as before. See kds.store.postgres._import for what is copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from kds.config import GlobalConfig, ZoneConfig, load_config
from kds.errors import KdsError
from kds.runtime import ensure_private_dir
from kds.store.postgres import PgTarget, import_sqlite_store, require_sqlite_store
from kds.store.target import store_location

__all__ = ["Copied", "migrate_store"]

C = TypeVar("C", GlobalConfig, ZoneConfig)


@dataclass(frozen=True)
class Copied:
    """What was moved: the store id, rows per table (kds.store.postgres._import), where."""

    store_id: str
    counts: dict[str, int]
    source: Path
    schema: str


def migrate_store(
    ctx: click.Context,
    config_cls: type[C],
    config_file: Path | None,
    given: dict[str, Any],
    done: Callable[[Copied], str],
) -> int:
    """Copy the role's SQLite store into the PostgreSQL store the options name; print
    ``done(what was copied)`` and return 0, or print why not and return 1."""
    sources = {
        name: "environment"
        if ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT
        else "flag"
        for name in given
    }
    role = "global" if config_cls is GlobalConfig else "zone"
    try:
        cfg = load_config(config_cls, config_file, given, sources)
        cfg = dataclasses.replace(cfg, store="postgres")
        require_sqlite_store(cfg.data_dir / f"{role}.db", role)  # before the dir is made
        data_dir = ensure_private_dir(cfg.data_dir)
        target = store_location(cfg, data_dir)
        assert isinstance(target, PgTarget)
        source = data_dir / f"{role}.db"
        store_id, counts = import_sqlite_store(source, target, role)
    except KdsError as e:
        click.echo(f"migrate-store: {e}", err=True)
        return 1
    click.echo(done(Copied(store_id, counts, source, target.schema)))
    return 0
