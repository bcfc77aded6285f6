"""What a zone refused lately, and why: both sides keep it so that anti-entropy sending a
refused change again is not reported as a new refusal every time.

A zone refuses some of global's changes for reasons of its own (a Mesh it keeps because
zone-local secrets still live in it, say), and keeps its copy. Anti-entropy finds that copy
different from global's, and sends global's state again as a repair. Until the zone's reason
goes away (its secrets deleted), that repair is refused again for the same reason: the same
refusal going on, which each side logs once, not at every check. Once the reason is gone the
repair applies and the copy converges.

Pure: keys in, keys out. Bounded: the oldest entries are forgotten first, so a repeat of a
forgotten one is reported as new again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["REFUSALS_KEPT", "Refusals"]

# Refusals remembered per zone (a repair sends at most 1,000 keys per check).
REFUSALS_KEPT = 1_000

K = TypeVar("K", bound=Hashable)


class Refusals(Generic[K]):
    """The keys a zone refused, each with its reason, oldest first."""

    def __init__(self, limit: int = REFUSALS_KEPT):
        self._reasons: dict[K, str] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._reasons)

    def __bool__(self) -> bool:
        return bool(self._reasons)

    def latest(self, most: int) -> list[tuple[K, str]]:
        """The ``most`` newest refusals, each with its reason, newest last."""
        if most <= 0:
            return []
        return list(self._reasons.items())[-most:]

    def repeats(self, refused: Iterable[tuple[K, str]]) -> set[K]:
        """The keys of ``refused`` refused before for the same reason."""
        reasons = self._reasons
        return {k for k, reason in refused if reasons.get(k) == reason}

    def record(self, refused: Iterable[tuple[K, str]]) -> None:
        """Remember these refusals (newest last), forgetting the oldest past the limit."""
        reasons = self._reasons
        for k, reason in refused:
            reasons.pop(k, None)
            reasons[k] = reason
        while len(reasons) > self._limit:
            del reasons[next(iter(reasons))]

    def forget(self, applied: Iterable[K]) -> None:
        """These keys' changes were applied: whatever was refused of them is over."""
        reasons = self._reasons
        if reasons:
            for k in applied:
                reasons.pop(k, None)
