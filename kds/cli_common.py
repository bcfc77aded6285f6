"""What ``globalcp run`` and ``zonecp run`` share: config loading, logging, error exits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from kds.config import load_config
from kds.errors import KdsError
from kds.logging import configure_logging
from kds.runtime import run_daemon

C = TypeVar("C")


def run_with_config(
    ctx: click.Context,
    cls: type[Any],
    config_file: Path | None,
    given: dict[str, Any],
    main: Callable[[Any, asyncio.Event], Awaitable[int]],
) -> int:
    sources = {}
    for name in given:
        src = ctx.get_parameter_source(name)
        sources[name] = "environment" if src is click.core.ParameterSource.ENVIRONMENT else "flag"
    try:
        cfg = load_config(cls, config_file, given, sources)
    except KdsError as e:
        raise click.UsageError(str(e)) from None
    configure_logging(cfg.log_level, cfg.log_format)
    try:
        return run_daemon(lambda stop: main(cfg, stop))
    except KdsError as e:
        structlog.get_logger("kds").error("cannot start", error=str(e))
        return 1
