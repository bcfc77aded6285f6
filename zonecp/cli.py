"""``zonecp``: the zone control plane daemon."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kds.cli_common import quiet_grpc_core, run_with_config
from kds.config import ZoneConfig, click_options
from kds.version import __version__


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


def main() -> None:
    quiet_grpc_core()
    cli()
