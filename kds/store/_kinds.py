"""Rows and change-log entries of a resource kind this version does not know.

Instances of two versions may share one PostgreSQL store (during an upgrade, one instance at
a time), and the newer one may write a kind the older one does not know. The older one
skips such rows: it never sends them to zones (a snapshot leaves them out; a change-log
entry of such a kind is kept for its revision and history chain only, and a range drops it
as it drops the GlobalSecrets that stay on global), never serves or counts them through its
API, builds no anti-entropy leaf of them (a zone holds none either, so the trees still
agree), and leaves them as they are for the version that knows them. Anti-entropy's
incremental read already treats such an entry as a reason to read the whole tree instead
(kds.store._changelog.ChangeLog.keys_changed); the whole read then skips the rows.

Each kind skipped is logged once per process, as a warning, with its name cut and escaped
(kds.text): it is text another program wrote.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import structlog

from kds.model import Kind
from kds.store._rows import DIGEST, row_digest
from kds.text import safe_text

__all__ = ["KINDS", "foreign_row", "known_kind"]

log = structlog.get_logger("kds.store")

KINDS: dict[str, Kind] = {str(k): k for k in Kind}

# Kinds already logged: the set is bounded, so a store holding endless made-up kinds cannot
# grow it without end (past the bound, further kinds are skipped without a line).
MAX_REPORTED = 64
_reported: set[str] = set()
_lock = threading.Lock()  # the stores read on threads of their own


def known_kind(text: str, store: str) -> Kind | None:
    """The Kind named ``text``; None for a kind this version does not know, logged once."""
    kind = KINDS.get(text)
    if kind is None:
        _report(text, store)
    return kind


def foreign_row(r: Sequence[Any], store: str) -> bool:
    """Whether a resources row (selected as COLS) is sound but of a kind this version does not
    know (logged once): skip it. A row whose digest does not match is not one: it is damaged,
    and reported as such where it is read."""
    if r[0] in KINDS or row_digest(r[:DIGEST]) != bytes(r[DIGEST]):
        return False
    _report(r[0], store)
    return True


def _report(text: str, store: str) -> None:
    with _lock:
        if text in _reported or len(_reported) >= MAX_REPORTED:
            return
        _reported.add(text)
    log.warning(
        "resources of a kind this version does not know are skipped",
        kind=safe_text(text, 64),
        store=store,
        consequence="not sent to zones, not served or counted by the API, left in the store",
        fix="a newer kds-sync sharing the store wrote them: upgrade this instance",
    )
