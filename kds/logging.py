"""structlog configuration shared by the daemons: JSON lines or console, to stderr.

Log lines name types, meshes, names, zones and revisions; they never carry secret data.
Per-stream context (zone, stream) is bound with structlog.contextvars.

Level and format can change while a daemon runs (a reload on SIGHUP): loggers are cached on
first use, so instead of reconfiguring structlog the first processor filters by the current
level and the last one renders with the current renderer (every configuration shares them,
so loggers cached under an earlier one follow too).

Logging never raises: a line that cannot be written (stderr is a closed pipe, a full disk) is
dropped and counted (``lost_log_lines``), so a daemon whose log reader went away still stops on
SIGTERM, syncs and serves instead of failing in whatever code path logged.

Every string in a line has its control and other non-printable characters escaped (kds.text)
before it is rendered, so text a peer sent can neither break a line nor reach a terminal as
an escape.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Literal

import structlog

from kds.text import escape
from kds.throttle import Throttle

__all__ = [
    "HttpServerErrors",
    "configure_logging",
    "debug_enabled",
    "escape_control_characters",
    "lost_log_lines",
    "switch_logging",
]

LogFormat = Literal["json", "console"]


_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _Switch:
    """The level and renderer in force; read by the processors at every log call."""

    def __init__(self) -> None:
        self.level = logging.INFO
        self.renderer: structlog.typing.Processor = structlog.dev.ConsoleRenderer(colors=False)

    def filter(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if _METHOD_LEVELS.get(method, logging.INFO) < self.level:
            raise structlog.DropEvent
        return event

    def render(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        return self.renderer(logger, method, event)


_switch = _Switch()


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


def switch_logging(level: str, fmt: LogFormat | str) -> int:
    """Change the level and format of the logging configure_logging set up (a reload)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    _switch.level = numeric
    _switch.renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # grpc and aiohttp log through the standard library; keep them at warning and above.
    logging.getLogger().setLevel(max(numeric, logging.WARNING))
    return numeric


class _LossTolerantLogger(structlog.PrintLogger):
    """structlog's PrintLogger, except that a line it cannot write is dropped and counted."""

    lost = 0

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):  # a broken pipe, a full disk, a closed file
            _LossTolerantLogger.lost += 1

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def debug_enabled() -> bool:
    """Whether debug lines are written now (the level may change on a reload): a path taken
    per message asks before making one, which costs a filtered call's processing."""
    return _switch.level <= logging.DEBUG


def lost_log_lines() -> int:
    """Log lines dropped since start because stderr could not take them."""
    return _LossTolerantLogger.lost


def configure_logging(level: str = "info", fmt: LogFormat = "console") -> None:
    """Set up logging for a daemon (structlog and the standard library, to stderr)."""
    numeric = switch_logging(level, fmt)
    structlog.configure(
        processors=[
            _switch.filter,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            escape_control_characters,
            _switch.render,
        ],
        # Debug calls reach the filter above, so a reload can turn them on.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=lambda *_: _LossTolerantLogger(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, HttpServerErrors) for f in server.filters):
        server.addFilter(HttpServerErrors())


class HttpServerErrors(logging.Filter):
    """aiohttp answers a request it cannot parse (400) itself, and logs the error with a
    traceback whose message quotes the raw request line or header: a token file with a
    Windows line ending put the API's admin token in the log, in clear, from a client with
    no valid token. Each such record is replaced by one structlog line naming the error's
    type and status and the client's address, never its text; at most one a minute, the
    others counted in the next (kds.throttle)."""

    INTERVAL = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._throttle = Throttle(self.INTERVAL, clock=clock)

    @property
    def held_back(self) -> int:
        return self._throttle.held(_HTTP_SERVER)

    def filter(self, record: logging.LogRecord) -> bool:
        not_logged = self._throttle.allow(_HTTP_SERVER)
        if not_logged is None:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        args = record.args if isinstance(record.args, tuple) else ()
        peer = args[0] if args and "%s" in str(record.msg) else None
        structlog.get_logger("kds.api").warning(
            "API request refused by the HTTP server: malformed or failed",
            error=type(exc).__name__ if exc is not None else None,
            status=getattr(exc, "code", None),
            client=str(peer)[:64] if peer is not None else None,
            not_logged=not_logged,
        )
        return False


_HTTP_SERVER = "aiohttp.server"  # the throttle's one key
