"""What a zone logs of a batch it applied: each resource it rejected, by key, bounded.

Names come from global: a line is cut and escaped (kds.text), and one batch logs at most
REJECTIONS_LOGGED of them, then one line with the count of the rest, so a global sending
100,000 changes this zone cannot take in one batch makes 21 lines, not 100,000.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

from kds import wire
from kds.model import Key
from kds.protocol.applier import DecodedBatch
from kds.protocol.zone_session import RawKey, Rejection
from kds.text import safe_text
from zonecp.sync_status import ZoneSyncStatus

__all__ = ["REJECTIONS_LOGGED", "REPAIRED_KEPT", "key_fields", "log_rejections", "log_repair"]

REJECTIONS_LOGGED = 20
# Keys of the last repair kept for /status and named in its log line.
REPAIRED_KEPT = 20
NAME_CHARS = 300  # a valid name is at most 253 characters


def _place(k: Key | RawKey) -> dict[str, str]:
    return {"mesh": safe_text(k.mesh, NAME_CHARS), "name": safe_text(k.name, NAME_CHARS)}


def _label(k: Key) -> str:
    return safe_text(str(k), 2 * NAME_CHARS)


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
    # Fields only for the lines logged: a batch may hold tens of thousands of rejections.
    shown = [(reason, key_fields(k)) for k, reason in rejected[:REJECTIONS_LOGGED]]
    shown += [(r.reason, _as_sent(r.key)) for r in undecodable[: REJECTIONS_LOGGED - len(shown)]]
    for reason, key in shown:
        log.warning("rejected a synced resource", reason=safe_text(reason), **key)
    if (count := len(rejected) + len(undecodable)) > REJECTIONS_LOGGED:
        log.warning(
            "rejected more synced resources in the same batch (not named)",
            count=count - REJECTIONS_LOGGED,
        )


def log_repair(
    log: Any,
    status: ZoneSyncStatus,
    batch: DecodedBatch,
    rejected: Sequence[tuple[Key, str]],
    already_gone: Sequence[Key],
) -> None:
    """A repair batch applied: log and count what it repaired, by key (never values). A
    refused change repaired nothing, nor did a delete of a key this zone held no synced copy
    of (the check and the repair are not one transaction: a range may have got there
    first)."""
    unchanged = {k for k, _ in rejected} | set(already_gone)
    changes = [c for c in batch.changes if c.key is not None and c.key not in unchanged]
    keys = [c.key for c in changes if c.key is not None]
    if not keys:
        log.info("anti-entropy repair changed nothing here", changes=len(batch.changes))
        return
    labels = [_label(k) for k in keys]
    status.repaired += len(keys)
    status.last_repair_at = time.time()
    status.last_repaired = labels[-REPAIRED_KEPT:]
    log.warning(
        "repaired synced resources from global (anti-entropy)",
        count=len(keys),
        keys=labels[:REPAIRED_KEPT],
        deleted=sum(1 for c in changes if c.deleted),
    )
