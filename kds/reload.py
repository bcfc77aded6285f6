"""Reload on SIGHUP: re-read the configuration and apply what can change while running.

The configuration is loaded again exactly as at start (the same ``--config`` file; the
flags and environment as they were at start, still winning over the file). The difference
to the running configuration splits in two: options the daemon can take live (its own list,
e.g. the log level, token files, the heartbeat interval for new streams) and options that
need a restart (addresses, the data dir, ...), which are logged and left as they run. A
file that does not parse or validate is refused, naming the option, and nothing changes.
A reload never ends a zone's stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from kds.errors import KdsError
from kds.logging import switch_logging
from kds.notify import Notifier

__all__ = ["Change", "ConfigDiff", "Reloader", "diff_configs"]

log = structlog.get_logger("kds.reload")

C = TypeVar("C")

# Every daemon takes these live: they only steer how it logs.
LOGGING = frozenset({"log_level", "log_format"})


def _show(value: Any) -> str:
    """An option's value as an operator would write it (values are never secrets: token and
    key options hold file names)."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}s"  # every float option is a duration
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return f"{value[0]}:{value[1]}"  # an address
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def flag_name(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class Change:
    name: str  # the config field
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{flag_name(self.name)} {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True)
class ConfigDiff:
    live: tuple[Change, ...]  # applied now
    restart: tuple[Change, ...]  # logged; the running value stays until a restart

    @property
    def restart_names(self) -> list[str]:
        return [flag_name(c.name) for c in self.restart]


def diff_configs(old: Any, new: Any, live: Iterable[str]) -> ConfigDiff:
    """What differs between two configurations of one daemon, split by whether it can
    change while running (``live``: field names) or needs a restart."""
    can = frozenset(live)
    changes = [
        Change(f.name, getattr(old, f.name), getattr(new, f.name))
        for f in dataclasses.fields(old)
        if getattr(old, f.name) != getattr(new, f.name)
    ]
    return ConfigDiff(
        live=tuple(c for c in changes if c.name in can),
        restart=tuple(c for c in changes if c.name not in can),
    )


class Reloader(Generic[C]):
    """Holds the running configuration and, on ``reload()``, applies a new one.

    ``apply(new)`` is the daemon's part: it takes the live options of ``new`` (and re-reads
    files such as token files, whose content may have changed under the same name), returns
    notes on what else it changed, and raises KdsError to refuse the reload before changing
    anything. Logging is applied here, after it."""

    def __init__(
        self,
        current: C,
        load: Callable[[], C],
        live: Iterable[str],
        apply: Callable[[C], list[str]],
        notifier: Notifier | None = None,
    ):
        self.current = current
        self.load = load
        self.live = LOGGING | frozenset(live)
        self.apply = apply
        self.notifier = notifier or Notifier(None)

    def reload(self) -> ConfigDiff | None:
        """Apply the configuration loaded now; None when it was refused."""
        self.notifier.reloading()
        try:
            return self._reload()
        finally:
            self.notifier.reloaded()

    def _reload(self) -> ConfigDiff | None:
        try:
            new = self.load()
            diff = diff_configs(self.current, new, self.live)
            # The running configuration with only the live options taken from the new one.
            current: Any = self.current
            running: C = dataclasses.replace(current, **{c.name: c.new for c in diff.live})
            notes = self.apply(running)
        except KdsError as e:
            log.error("reload refused: the running configuration is kept", error=str(e))
            return None
        self.current = running
        cfg: Any = running
        switch_logging(cfg.log_level, cfg.log_format)
        done = [str(c) for c in diff.live] + notes
        log.info(f"reloaded: {', '.join(done)}" if done else "reloaded: nothing changed")
        if diff.restart:
            log.warning(
                f"needs a restart: {', '.join(diff.restart_names)}",
                changes=[str(c) for c in diff.restart],
            )
        return diff
