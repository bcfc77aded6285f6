"""Unknown fields, refused with the nearest known one ("did you mean conf?"). Pure.

Kuma drops a field its Mesh does not define without a word, which is how a misspelt key
(``config`` for ``conf``, ``mtlss`` for ``mtls``) ends up silently ignored. Here such a key
is refused, naming it and, when one is close, the field that was probably meant.

A body can hold hundreds of thousands of bad members (unknown keys, bad labels, bad list
items) for a few bytes each, and naming each costs far more than reading it: only the first
MAX_LISTED of a map or list are named (unknown keys counted past that, the rest of a list
or of labels not checked, ``not_checked``), so the work and the answer stay small whatever
the body holds.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from kds.errors import FieldViolation, shown

__all__ = [
    "GUESS_KEY_CHARS",
    "MAX_LISTED",
    "UNKNOWN_FIELD",
    "member_problems",
    "nearest",
    "not_checked",
    "unknown_field",
    "unknown_fields",
]

T = TypeVar("T")

# How every message about an unknown field begins (the count of those not listed too: a
# zone drops a synced Mesh's unknown-field problems by this prefix).
UNKNOWN_FIELD = "unknown field"
# The most members of one map or list named with their problems.
MAX_LISTED = 20
# Keys longer than this get no guess: no known field is a close match for one (difflib's
# ratio needs the two lengths within a factor of about 2.3), and the guess costs time in
# proportion to the key's length.
GUESS_KEY_CHARS = 100


def nearest(key: str, known: Iterable[str]) -> str | None:
    """The known field closest to ``key`` (case-insensitive), if one is close enough."""
    if len(key) > GUESS_KEY_CHARS:
        return None
    by_lower = {k.lower(): k for k in known}
    match = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def unknown_field(path: str, key: object, known: Iterable[str]) -> FieldViolation:
    """``path`` names the field itself (``mtls.backends[0].config``)."""
    known = sorted(known)
    guess = nearest(key, known) if isinstance(key, str) else None
    if guess is not None:
        return FieldViolation(path, f"{UNKNOWN_FIELD}: did you mean {guess}?")
    return FieldViolation(path, f"{UNKNOWN_FIELD} {shown(key)}: expected one of {', '.join(known)}")


def unknown_fields(
    prefix: str, given: Iterable[object], known: Iterable[str]
) -> list[FieldViolation]:
    """One violation per key of ``given`` not in ``known`` (the first MAX_LISTED of
    them in sorted order), fields named ``{prefix}{key}``; then, if there are more, one
    violation on the map itself counting them."""
    known = frozenset(known)
    unknown = [k for k in given if k not in known]
    if not unknown:
        return []
    listed = heapq.nsmallest(MAX_LISTED, unknown, key=str)
    errs = [unknown_field(f"{prefix}{k}", k, known) for k in listed]
    if len(unknown) > len(listed):
        errs.append(
            FieldViolation(
                prefix.removesuffix("."),
                f"{UNKNOWN_FIELD}s: {len(unknown) - len(listed)} more besides the "
                f"{len(listed)} listed",
            )
        )
    return errs


def member_problems(
    members: Sequence[T],
    check: Callable[[int, T], list[FieldViolation]],
    field: str,
    what: str,
    listed: int | None = MAX_LISTED,
) -> tuple[list[FieldViolation], bool]:
    """The problems ``check(i, member)`` finds in ``members`` (of the map or list
    ``field``), stopping once ``listed`` members had any (None: never), with one more
    problem saying the rest of the ``what`` were not checked; and whether it stopped."""
    errs: list[FieldViolation] = []
    bad = 0
    for i, member in enumerate(members):
        found = check(i, member)
        if found:
            errs += found
            bad += 1
            if bad == listed and i + 1 < len(members):
                return [*errs, not_checked(field, what)], True
    return errs, False


def not_checked(field: str, members: str) -> FieldViolation:
    """Said of the map or list ``field`` once MAX_LISTED of its ``members`` ("items",
    "labels") had problems and the rest were left unchecked: the input is refused anyway."""
    return FieldViolation(
        field, f"{members} after the first {MAX_LISTED} with problems were not checked"
    )
