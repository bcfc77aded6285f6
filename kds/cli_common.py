"""What ``globalcp run`` and ``zonecp run`` share: config loading, logging, error exits."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from kds.config import load_config
from kds.errors import KdsError
from kds.logging import configure_logging
from kds.runtime import Service, run_daemon

C = TypeVar("C")


def run_with_config(
    ctx: click.Context,
    cls: type[Any],
    config_file: Path | None,
    given: dict[str, Any],
    main: Callable[[Any, Service], Awaitable[int]],
) -> int:
    sources = _sources(ctx, given)

    def load() -> Any:
        # At start and at every reload: the file read again, flags and environment as given.
        return load_config(cls, config_file, given, sources)

    try:
        cfg = load()
    except KdsError as e:
        raise click.UsageError(str(e)) from None
    configure_logging(cfg.log_level, cfg.log_format)
    try:
        return run_daemon(lambda service: main(cfg, service), load)
    except KdsError as e:
        structlog.get_logger("kds").error("cannot start", error=str(e))
        return 1


def _sources(ctx: click.Context, given: dict[str, Any]) -> dict[str, str]:
    env = click.core.ParameterSource.ENVIRONMENT
    return {n: "environment" if ctx.get_parameter_source(n) is env else "flag" for n in given}


def check_config(
    ctx: click.Context,
    cls: type[Any],
    config_file: Path | None,
    given: dict[str, Any],
    more: Callable[[Any], object] | None = None,
) -> int:
    """``check-config``: load the options as ``run`` (and a reload) would, with ``more``, the
    role's checks across options, say whether they are valid, and return the exit code. A
    service manager runs it before it signals a reload, so a reload the daemon would refuse
    fails where the operator sees it."""
    try:
        cfg = load_config(cls, config_file, given, _sources(ctx, given))
        if more is not None:
            more(cfg)
    except KdsError as e:
        click.echo(f"Error: {e}", err=True)
        return 1
    click.echo(f"configuration valid{f': {config_file}' if config_file else ''}")
    return 0


def quiet_grpc_core() -> None:
    """Keep gRPC's C core from printing its own lines (``I1130 ... ssl_transport_security.cc``)
    into zonecp's structured log: the zone logs every failed dial itself, with a hint at the
    fix. Called before grpc is imported; a GRPC_VERBOSITY the user set wins."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
