"""A per-key rate limit for log lines a peer can cause, with a count of what it held back.

A peer that repeats what a daemon logs (a refused token, a conflict report, a request the
HTTP server cannot parse) gets ``burst`` lines per key per interval; the next line let
through says how many were held back in between. The keys remembered are bounded too: when
``max_keys`` are in use within one interval, every further key shares one slot, so a peer
inventing keys gets no more lines than that.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["OVERFLOW_KEY", "Throttle"]

OVERFLOW_KEY = "*"


class Throttle:
    def __init__(
        self,
        interval: float,
        *,
        burst: int = 1,
        max_keys: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.interval = interval
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._last: dict[str, float] = {}  # key -> when its current interval started
        self._used: dict[str, int] = {}  # key -> lines let through in that interval
        self._held: dict[str, int] = {}  # key -> lines held back since then

    def allow(self, key: str) -> int | None:
        """None: hold this line back (it is counted). Otherwise let it through; the number
        is how many lines of this key were held back since the last one let through."""
        now = self.clock()
        if key not in self._last and len(self._last) >= self.max_keys:
            self._forget_before(now - self.interval)
            if len(self._last) >= self.max_keys:
                key = OVERFLOW_KEY
        start = self._last.get(key)
        if start is None or now - start >= self.interval:
            self._last[key] = now
            self._used[key] = 0
        if self._used[key] >= self.burst:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._used[key] += 1
        return self._held.pop(key, 0)

    def spent(self, key: str) -> bool:
        """Whether ``key`` has let its ``burst`` through in its current interval, so that
        ``allow`` would hold its next line back; counts nothing."""
        start = self._last.get(key)
        if start is None or self.clock() - start >= self.interval:
            return False
        return self._used.get(key, 0) >= self.burst

    def held(self, key: str) -> int:
        """Lines of ``key`` held back since the last one let through."""
        return self._held.get(key, 0)

    def _forget_before(self, cutoff: float) -> None:
        for k in [k for k, t in self._last.items() if t < cutoff and k != OVERFLOW_KEY]:
            del self._last[k]
            self._used.pop(k, None)
            self._held.pop(k, None)
