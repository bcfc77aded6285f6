"""Turns for a scarce thing, first come first served, as a plain object.

Global uses it to bound how many zone streams send a snapshot at once: each stream sending
one holds, besides the shared plan, its assembled batches and grpc's buffers for them (about
half a megabyte per stream, measured), so a fleet of new zones all taking a snapshot at once
(a global whose store was replaced) would otherwise grow global's memory with the fleet's
size. A stream asks for a turn, waits in line if every turn is taken, and gives its turn
back when done (or leaves the line when its stream ends); the next in line is granted it.

It never awaits or blocks: ``ask`` and ``leave`` return who was granted a turn, and the
driver (globalcp.admission) wakes them. Anything hashable may stand in line, once.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Turns"]

T = TypeVar("T", bound=Hashable)


class Turns(Generic[T]):
    """At most ``limit`` holders at once; the others wait in the order they asked."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._limit = limit
        self._holding: set[T] = set()
        self._waiting: dict[T, None] = {}  # insertion-ordered: the line

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def holding(self) -> int:
        return len(self._holding)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def holds(self, who: T) -> bool:
        return who in self._holding

    def ask(self, who: T) -> bool:
        """``who`` asks for a turn: True if it holds one now, False if it waits in line
        (behind everyone who asked before it). Asking twice is an error in the caller."""
        if who in self._holding or who in self._waiting:
            raise ValueError("asked for a turn twice")
        if not self._waiting and len(self._holding) < self._limit:
            self._holding.add(who)
            return True
        self._waiting[who] = None
        return False

    def leave(self, who: T) -> list[T]:
        """``who`` gives its turn back, or leaves the line (its stream ended); returns those
        granted a turn by it, in line order. Leaving without having asked does nothing."""
        if who in self._holding:
            self._holding.discard(who)
        else:
            self._waiting.pop(who, None)
        return self._grant()

    def set_limit(self, limit: int) -> list[T]:
        """A new limit (a reloaded setting); returns those granted a turn by a larger one.
        A smaller one takes no turn back: it applies as the holders leave."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._limit = limit
        return self._grant()

    def _grant(self) -> list[T]:
        granted: list[T] = []
        while self._waiting and len(self._holding) < self._limit:
            who = next(iter(self._waiting))
            del self._waiting[who]
            self._holding.add(who)
            granted.append(who)
        return granted
