"""``globalcp``: the global control plane daemon."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kds.cli_common import check_config, run_with_config
from kds.config import GlobalConfig, click_options
from kds.version import __version__

# What migrate-store reads of run's options; it takes the others so that run's own config
# file and environment work as they are.
MIGRATE_SHOWN = frozenset({"data_dir", "postgres_url", "postgres_password_file", "postgres_schema"})


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Global control plane: holds Meshes, Secrets and GlobalSecrets and pushes "
    "them to every connected zone control plane.",
)
@click.version_option(__version__, prog_name="globalcp")
def cli() -> None:
    pass


@cli.command(
    help="Run the global control plane until SIGTERM or SIGINT; SIGHUP reloads the configuration (what can change live is applied, the rest logged as needing a restart). Under systemd (NOTIFY_SOCKET set) it reports readiness, status and watchdog pings. Options come from "
    "flags, then GLOBALCP_* environment variables, then the --config file."
)
@click_options(GlobalConfig, "GLOBALCP_")
@click.pass_context
def run(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    from globalcp.app import run_global

    sys.exit(run_with_config(ctx, GlobalConfig, config_file, given, run_global))


@cli.command(
    "migrate-store",
    help="Copy this global's SQLite store (DATA_DIR/global.db) into PostgreSQL "
    "(--postgres-url, --postgres-schema, --postgres-password-file), keeping its store id, "
    "revisions, change log, CA, signing keys and zone tokens, so zones resume instead of "
    "taking a snapshot. Stop globalcp first (its data dir is locked); the SQLite file is only "
    "read; the schema must not hold a store yet. Then run globalcp with --store postgres. "
    "Takes globalcp run's options (the others are ignored, and left out of this help).",
)
@click_options(GlobalConfig, "GLOBALCP_", MIGRATE_SHOWN)
@click.pass_context
def migrate_store(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    from globalcp.migrate import migrate_store

    sys.exit(migrate_store(ctx, config_file, given))


@cli.command(
    "check-config",
    help="Check the options as run (and a SIGHUP reload) would read them: flags, "
    "GLOBALCP_* environment variables, the --config file. Prints the first problem and exits "
    "1, or exits 0. The systemd unit runs it before it signals a reload, so a file the "
    "daemon would refuse makes systemctl reload fail.",
)
@click_options(GlobalConfig, "GLOBALCP_")
@click.pass_context
def check_config_command(ctx: click.Context, config_file: Path | None, **given: Any) -> None:
    from globalcp.security import check_options

    sys.exit(check_config(ctx, GlobalConfig, config_file, given, check_options))


def main() -> None:
    # gRPC's C core keeps its own lines here: a client's failed handshake on the sync port
    # (wrong CA, old TLS, plain HTTP) is logged by nothing else. A taken port is refused
    # before grpc binds it (check_ports_free), so its add_port.cc error never shows.
    cli()
