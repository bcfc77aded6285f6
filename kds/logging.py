"""structlog configuration shared by the daemons: JSON lines or console, to stderr.

Log lines name types, meshes, names, zones and revisions; they never carry secret data.
Per-stream context (zone, stream) is bound with structlog.contextvars. Every string in a
line has its control and other non-printable characters escaped (kds.text) before it is
rendered, so text a peer sent can neither break a line nor reach a terminal as an escape.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from kds.text import escape

__all__ = ["configure_logging", "escape_control_characters"]

LogFormat = Literal["json", "console"]


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list | tuple):
        return [escape(v) if isinstance(v, str) else v for v in value]
    return value


def escape_control_characters(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Escape non-printable characters in every value (and in the strings of a list value);
    a traceback keeps its line breaks and tabs."""
    for key, value in event_dict.items():
        if key == "exception" and isinstance(value, str):
            event_dict[key] = "\n".join(
                "\t".join(escape(part) for part in line.split("\t")) for line in value.split("\n")
            )
        else:
            event_dict[key] = _escaped(value)
    return event_dict


def configure_logging(level: str = "info", fmt: LogFormat = "console") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            escape_control_characters,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # grpc and aiohttp log through the standard library; keep them at warning and above.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
