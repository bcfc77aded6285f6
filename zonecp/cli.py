"""``zonecp``: the zone control plane daemon."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kds.cli_common import check_config, quiet_grpc_core, run_with_config
from kds.config import ZoneConfig, click_options
from kds.version import __version__

# What migrate-store reads of run's options; it takes the others so that run's own config
# file and environment work as they are.
MIGRATE_SHOWN = frozenset(
    {"zone", "data_dir", "postgres_url", "postgres_password_file", "postgres_schema"}
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Zone control plane: receives Meshes, Secrets and GlobalSecrets from the "
    "global control plane and serves them with the zone's own resources.",
)
@click.version_option(__version__, prog_name="zonecp")
def cli() -> None:
    pass


@cli.command(
    help="Run a zone control plane until SIGTERM or SIGINT; SIGHUP reloads the configuration (what can change live is applied, the rest logged as needing a restart). Under systemd (NOTIFY_SOCKET set) it reports readiness, status and watchdog pings. Options come from flags, "
    "then ZONECP_* environment variables, then the --config file."
)
@click_options(ZoneConfig, "ZONECP_")
@click.pass_context
def run(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    from zonecp.app import run_zone

    sys.exit(run_with_config(ctx, ZoneConfig, config_file, given, run_zone))


@cli.command(
    "migrate-store",
    help="Copy this zone's SQLite store (DATA_DIR/zone.db) into PostgreSQL "
    "(--postgres-url, --postgres-schema, --postgres-password-file), keeping its store id, "
    "the global store and revision it has applied, its zone-local resources and global's "
    "copies (name conflicts included), so the zone resumes instead of taking a snapshot. "
    "Stop zonecp first (its data dir is locked); the SQLite file is only read; the schema "
    "must not hold a store yet. Then run zonecp with --store postgres. Takes zonecp run's "
    "options (the others are ignored, and left out of this help).",
)
@click_options(ZoneConfig, "ZONECP_", MIGRATE_SHOWN)
@click.pass_context
def migrate_store(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    from zonecp.migrate import migrate_store

    sys.exit(migrate_store(ctx, config_file, given))


@cli.command(
    "check-config",
    help="Check the options as run (and a SIGHUP reload) would read them: flags, "
    "ZONECP_* environment variables, the --config file. Prints the first problem and exits "
    "1, or exits 0. The systemd unit runs it before it signals a reload, so a file the "
    "daemon would refuse makes systemctl reload fail.",
)
@click_options(ZoneConfig, "ZONECP_")
@click.pass_context
def check_config_command(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    from zonecp.app import check_options

    sys.exit(check_config(ctx, ZoneConfig, config_file, given, check_options))


def main() -> None:
    quiet_grpc_core()
    cli()
