"""Unknown fields, refused with the nearest known one ("did you mean conf?"). Pure.

Kuma drops a field its Mesh does not define without a word, which is how a misspelt key
(``config`` for ``conf``, ``mtlss`` for ``mtls``) ends up silently ignored. Here such a key
is refused, naming it and, when one is close, the field that was probably meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from kds.errors import FieldViolation, shown

__all__ = ["UNKNOWN_FIELD", "nearest", "unknown_field", "unknown_fields"]

# How every message about an unknown field begins.
UNKNOWN_FIELD = "unknown field"


def nearest(key: str, known: Iterable[str]) -> str | None:
    """The known field closest to ``key`` (case-insensitive), if one is close enough."""
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
    """One violation per key of ``given`` not in ``known``; fields named ``{prefix}{key}``."""
    known = frozenset(known)
    unknown = [k for k in given if k not in known]  # sorted only when there are any
    return [unknown_field(f"{prefix}{k}", k, known) for k in sorted(unknown, key=str)]
