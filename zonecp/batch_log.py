"""What a zone logs of a batch it applied: each resource it rejected, by key, bounded.

Names come from global: a line is cut and escaped (kds.text), and one batch logs at most
REJECTIONS_LOGGED of them, then one line with the count of the rest, so a global sending
100,000 changes this zone cannot take in one batch makes 21 lines, not 100,000.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from kds import wire
from kds.model import Key
from kds.protocol.zone_session import RawKey, Rejection
from kds.text import safe_text

__all__ = ["REJECTIONS_LOGGED", "key_fields", "log_rejections"]

REJECTIONS_LOGGED = 20
NAME_CHARS = 300  # a valid name is at most 253 characters


def _place(k: Key | RawKey) -> dict[str, str]:
    return {"mesh": safe_text(k.mesh, NAME_CHARS), "name": safe_text(k.name, NAME_CHARS)}


def _label(k: Key) -> str:
    return safe_text(f"{k.kind} {k.mesh + '/' if k.mesh else ''}{k.name}", 2 * NAME_CHARS)


def key_fields(k: Key) -> dict[str, str]:
    return {"type": str(k.kind), **_place(k)}


def _as_sent(k: Key | RawKey | None) -> dict[str, Any]:
    """Log fields of a change the zone could not decode, as global sent it: ``kind`` is the
    wire number (0 when the change named nothing)."""
    if k is None:
        return {"kind": 0, "mesh": "", "name": ""}
    kind = k.kind if isinstance(k, RawKey) else wire.KIND_TO_PB[k.kind]
    return {"kind": kind, **_place(k)}


def log_rejections(
    log: Any,
    rejected: Sequence[tuple[Key, str]],
    undecodable: Sequence[Rejection],
    repeated: Collection[Key] = (),
) -> None:
    """One warning per rejection, but those in ``repeated`` (a repair refused again for the
    reason logged before: kds.protocol.refusals), which make one info line with their count."""
    if repeated:
        again = [k for k, _ in rejected if k in repeated]
        rejected = [(k, reason) for k, reason in rejected if k not in repeated]
        log.info(
            "still refusing synced resources anti-entropy sent again, for the reasons logged "
            "before",
            count=len(again),
            first=[_label(k) for k in again[:REJECTIONS_LOGGED]],
        )
    lines = [(reason, key_fields(k)) for k, reason in rejected]
    lines += [(r.reason, _as_sent(r.key)) for r in undecodable]
    for reason, key in lines[:REJECTIONS_LOGGED]:
        log.warning("rejected a synced resource", reason=safe_text(reason), **key)
    if len(lines) > REJECTIONS_LOGGED:
        log.warning(
            "rejected more synced resources in the same batch (not named)",
            count=len(lines) - REJECTIONS_LOGGED,
        )
