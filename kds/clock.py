"""The one place that reads the wall clock, so the pure core never does."""

from __future__ import annotations

import datetime as dt

__all__ = ["rfc3339", "utcnow"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(t: dt.datetime | None = None) -> str:
    t = t or utcnow()
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
