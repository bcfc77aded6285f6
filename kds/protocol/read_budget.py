"""How fast global reads what one zone sends on its stream: a byte budget. Pure (the caller
gives the time).

A zone's messages to global are its hello, acks (one per batch global sent at most), digest
answers (one per query global sent) and status reports (whenever its state changes). Only
the reports are the zone's to send as often as it likes, and every message costs global's
event loop to receive and decode before anything can tell what it is: one authenticated zone
sending 4 MiB reports non-stop (160,000 conflicts each) kept global at 77% CPU, most of it
decoding them, and 2-byte reports as fast as it could at 89%, most of it gRPC's receive.

So each stream reads against a token bucket: a message costs its bytes plus MESSAGE_COST
(what receiving any message costs, however small), the bucket refills at RATE bytes a second
up to BURST, and once a message leaves it below zero the reader waits until it is back at
zero before it reads the next. A zone over its budget is slowed, never cut off: gRPC's flow
control holds its writes meanwhile, and an honest zone that sends one large report (all its
conflicts, at the start of a stream) only has its next message read a few seconds later.
BURST lets a full-size message and thousands of acks through at once; RATE and MESSAGE_COST
bound a hostile zone to a few percent of one core.
"""

from __future__ import annotations

__all__ = ["BURST", "MESSAGE_COST", "RATE", "ReadBudget"]

# Bytes a second a zone's stream is read at, once its burst is spent.
RATE = 512 * 1024
# Bytes a stream may send at once: a message of the largest size global accepts (4 MiB), and
# a few kilobytes of acks beside it.
BURST = 4 * 1024 * 1024 + 64 * 1024
# What each message costs beyond its bytes: at RATE, at most 512 messages a second.
MESSAGE_COST = 1024


class ReadBudget:
    """One stream's budget. ``charge`` each message as it is read; it says how long to wait
    before reading the next."""

    def __init__(
        self,
        now: float,
        *,
        rate: float = RATE,
        burst: float = BURST,
        message_cost: int = MESSAGE_COST,
    ):
        if rate <= 0 or burst < 0 or message_cost < 0:
            raise ValueError("rate must be positive, burst and message_cost at least 0")
        self.rate = rate
        self.burst = burst
        self.message_cost = message_cost
        self._tokens = burst  # a new stream starts with its burst
        self._at = now

    def charge(self, size: int, now: float) -> float:
        """A message of ``size`` bytes was read at ``now``: the seconds to wait before the
        next read (0.0: at once)."""
        elapsed = max(0.0, now - self._at)  # a clock that steps back refills nothing
        self._at = max(self._at, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._tokens -= size + self.message_cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    @property
    def available(self) -> float:
        """Bytes the stream may still send without waiting, as of the last charge (negative:
        it owes that many)."""
        return self._tokens
