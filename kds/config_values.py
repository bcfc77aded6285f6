"""Option values: the parsers behind kds.config's option table (durations, sizes, names,
levels, bounded numbers) and how a default is written back in --help. Each raises ValueError
saying what the value must be; kds.config adds the option and where the value came from."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from kds.errors import shown

__all__ = [
    "MAX_DURATION",
    "MIN_MESSAGE_BYTES",
    "ack_delay",
    "duration_from",
    "format_duration",
    "format_size",
    "message_bytes",
    "optional_path",
    "parse_bool",
    "parse_duration",
    "parse_log_format",
    "parse_log_level",
    "parse_names",
    "parse_path",
    "parse_size",
    "parse_zone_name",
    "positive_int",
]

# Used with fullmatch only ("$" would also match before a final newline); ASCII digits only.
_DURATION_RE = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)?\s*", re.ASCII)
_SIZE_RE = re.compile(r"\s*([0-9]{1,15})\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*", re.ASCII)
# The longest duration accepted anywhere (options, token lifetimes): 100 years.
MAX_DURATION = 100 * 365 * 86400.0
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}


def parse_duration(value: object) -> float:
    """'5s', '250ms', '2m', '1h', '30d' or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        n = float(value) if -MAX_DURATION <= value <= MAX_DURATION else math.inf
    else:
        m = _DURATION_RE.fullmatch(value) if isinstance(value, str) else None
        if not m:
            raise ValueError(f"{shown(value)} is not a duration like 5s, 250ms, 2m, 1h or 30d")
        n = float(m.group(1))
        n *= {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    if n < 0:
        raise ValueError("must not be negative")
    if not n <= MAX_DURATION:  # also NaN
        raise ValueError("must be at most 100 years (36500d)")
    return n


def parse_size(value: object) -> int:
    """'1MiB', '512KiB', '4MB' or a number of bytes -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    m = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{shown(value)} is not a size like 1048576, 512KiB or 4MiB")
    n = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if n <= 0:
        raise ValueError("must be positive")
    return n


def duration_from(least: float, why: str) -> Callable[[object], float]:
    """parse_duration, refusing less than ``least`` seconds (0 made a daemon spin or never
    stay connected)."""

    def parse(value: object) -> float:
        if (n := parse_duration(value)) < least:
            raise ValueError(f"must be at least {format_duration(least)} ({why})")
        return n

    return parse


# The smallest sync message limit: a Mesh with its CA secrets, or a zone's status with its
# conflicts, must fit in one message (1 byte made every zone fail its first batch forever).
MIN_MESSAGE_BYTES = 16 * 1024


def message_bytes(value: object) -> int:
    if (n := parse_size(value)) < MIN_MESSAGE_BYTES:
        raise ValueError(
            f"must be at least {format_size(MIN_MESSAGE_BYTES)} (a Mesh and its CA secrets, "
            "or a zone's status, must fit one message)"
        )
    return n


def ack_delay(value: object) -> float:
    if (n := parse_duration(value)) > 1.0:
        raise ValueError("must be at most 1s (global's view of each zone lags by this much)")
    return n


def optional_path(value: object) -> Path | None:
    return Path(str(value)) if str(value) else None


def parse_names(value: object) -> tuple[str, ...]:
    """'a,b,c' (or a YAML list) -> ('a', 'b', 'c')."""
    if isinstance(value, dict):
        raise ValueError("give the names as a list or comma-separated, not a map")
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    names = tuple(str(n).strip() for n in items if str(n).strip())
    if not names:
        raise ValueError("give at least one name")
    return names


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if (text := str(value).strip().lower()) in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{value!r} is not true or false")


def parse_path(value: object) -> Path:
    return Path(str(value))


def positive_int(value: object) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdecimal() or (n := int(text)) <= 0:
        raise ValueError(f"{shown(value)} is not a positive integer")
    return n


def parse_log_level(value: object) -> str:
    text = str(value).lower()
    if text not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be one of debug, info, warning, error")
    return text


def parse_log_format(value: object) -> str:
    text = str(value).lower()
    if text not in {"json", "console"}:
        raise ValueError("must be json or console")
    return text


def parse_zone_name(value: object) -> str:
    from kds.model import validate_name

    errs = validate_name(value, "zone")
    if errs:
        raise ValueError(errs[0].message)
    return str(value)


def format_duration(seconds: float) -> str:
    """A duration as an option takes it, in its largest whole unit: 2s, 15m, 1.5s, 250ms."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


def format_size(n: int) -> str:
    """A size as an option takes it, in its largest whole binary unit: 1MiB, 4MiB, 512B."""
    for unit in ("GiB", "MiB", "KiB"):
        if n >= _SIZE_UNITS[unit] and n % _SIZE_UNITS[unit] == 0:
            return f"{n // _SIZE_UNITS[unit]}{unit}"
    return f"{n}B"
