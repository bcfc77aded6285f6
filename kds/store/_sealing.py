"""Encryption at rest (kds.crypto): sealing values as they are written, opening them as they
are read, and re-sealing what is stored when the store opens; both backends alike.

A sealed value is bound to where it lives (its table and row, as associated data), so a
value copied to another row, or to the other backend's store, opens only at that place. The
``sealed`` column holds the id of the key a value is sealed with ('' for plaintext).

Reading a row checks its digest (kds.store._rows) first: a row that does not match, or
whose value does not decrypt, raises StoreDamaged naming its key, never wrong data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kds.crypto import DataCipher
from kds.errors import StoreDamaged, StoreError
from kds.model import Key, Kind, Resource
from kds.protocol.digest_tree import compact_json, leaf_digest_of
from kds.store._rows import (
    COLS,
    DIGEST,
    LOG_COLS,
    WIRE,
    Db,
    log_digest,
    row_digest,
    row_to_resource,
    row_values,
)

__all__ = ["Sealer", "aad", "reseal"]

_EMPTY = "{}"  # labels or spec stored empty (kds.store._rows.row_values)


def aad(table: str, kind: str, mesh: str, name: str, origin: str) -> bytes:
    """Where a sealed value lives: it opens only there."""
    return "\0".join((table, kind, mesh, name, origin)).encode()


class Sealer:
    """Seals and opens the values of one store with ``cipher`` (None: plaintext);
    ``location`` names the store in errors."""

    def __init__(self, location: object, cipher: DataCipher | None):
        self.path = location
        self.cipher = cipher

    def seal(self, plain: bytes, where: bytes) -> tuple[bytes, str]:
        """(stored bytes, key id) for ``plain`` living at ``where``."""
        if self.cipher is None:
            return plain, ""
        return self.cipher.seal(plain, where), self.cipher.current

    def open(self, stored: bytes, sealed: str, where: bytes) -> bytes:
        if not sealed:
            return stored
        if self.cipher is None:
            raise StoreError(
                f"store {self.path} holds encrypted values: give --encryption-key-file"
            )
        return self.cipher.open(stored, sealed, where)

    def resource(self, r: Sequence[Any]) -> Resource:
        """A resources row (selected as COLS) as a Resource, its data opened; StoreDamaged
        when its digest does not match or its data does not decrypt."""
        data = self._opened(r)
        try:
            return row_to_resource(r, data)
        except (ValueError, TypeError) as e:
            raise self._damaged(r, "its columns do not parse") from e

    def leaf(self, r: Sequence[Any]) -> tuple[Key, bytes]:
        """A resources row's key and anti-entropy leaf digest: ``leaf_digest`` of what
        ``resource`` gives, computed from the columns (a tree build reads every row; building
        a Resource each and decoding its labels and spec cost a third of it). StoreDamaged
        as for ``resource``."""
        data = self._opened(r)
        try:
            kind = Kind(r[0])
            labels = _EMPTY if r[5] == _EMPTY else compact_json(dict(json.loads(r[5])))
            spec = json.loads(r[6]) if r[6] != _EMPTY else None
            texts = (
                r[0],
                r[1],
                r[2],
                str(int(r[9])),
                r[7],
                r[8],
                labels,
                compact_json(spec) if spec else "",
            )
            return Key(kind, r[1], r[2]), leaf_digest_of(texts, data)
        except (ValueError, TypeError) as e:
            raise self._damaged(r, "its columns do not parse") from e

    def _opened(self, r: Sequence[Any]) -> bytes:
        """A row's data, opened, after its digest is checked."""
        if row_digest(r[:DIGEST]) != bytes(r[DIGEST]):
            raise self._damaged(r, "its stored bytes do not match their digest")
        where = aad("data", r[0], r[1], r[2], r[3])
        try:
            return self.open(bytes(r[4]), r[10], where)
        except StoreError as e:
            if self.cipher is None or r[10] not in self.cipher.key_ids:
                raise  # a missing key: the whole store's setup, not this row
            raise self._damaged(r, "its value does not decrypt") from e

    def resealed_row(self, r: Sequence[Any]) -> tuple[Any, ...] | None:
        """A resources row (selected as COLS) with its data and wire opened and sealed again
        with the current key: the values before the digest, or None when the row is damaged
        (its digest does not match, or a value does not open).

        Column by column, whatever the row's kind: an older instance sharing a store with a
        newer one re-seals the newer one's rows too (a Resource of a kind it does not know
        cannot be built), so retiring a key after one start holds for every row.
        """
        if row_digest(r[:DIGEST]) != bytes(r[DIGEST]):
            return None
        key = (r[0], r[1], r[2], r[3])
        try:
            data, sealed = self.seal(
                self.open(bytes(r[4]), r[10], aad("data", *key)), aad("data", *key)
            )
            wire = r[WIRE]
            if wire is not None:
                where = aad("wire", *key)
                wire, _ = self.seal(self.open(bytes(wire), r[10], where), where)
        except StoreError:
            return None
        return (*r[:4], data, *r[5:10], sealed, wire)

    def _damaged(self, r: Sequence[Any], why: str) -> StoreDamaged:
        key = f"{r[0]} {r[1] + '/' if r[1] else ''}{r[2]}"
        origin = "synced" if r[3] == "global" else "zone-local" if r[3] == "zone" else "?"
        return StoreDamaged(
            f"{key} ({origin}) is damaged in store {self.path}: {why}; it is not served",
            key=key,
        )

    def row_values(
        self, r: Resource, origin: str, wire_bytes: bytes | None, *extra: Any
    ) -> tuple[Any, ...]:
        """COLS and ``extra`` for one row, data and wire sealed with one key."""
        key = (str(r.kind), r.mesh, r.name, origin)
        data, sealed = self.seal(r.data, aad("data", *key))
        if wire_bytes is not None:
            wire_bytes, _ = self.seal(wire_bytes, aad("wire", *key))
        return (*row_values(r, origin, data, sealed, wire_bytes), *extra)


def reseal(db: Db, sealer: Sealer) -> None:
    """At open: check every sealed value has its key, and re-seal with the current key every
    value sealed with another key or stored in plaintext (so enabling encryption, or rotating
    to a new first key, covers what is already stored). One write transaction, so instances
    sharing a store that start at once do it once."""
    cipher = sealer.cipher
    with db.read() as conn:
        used = {
            row[0]
            for table in ("resources", "changelog", "internal_secrets")
            for row in conn.execute(f"SELECT DISTINCT sealed FROM {table}").fetchall()
        } - {""}
    if cipher is None:
        if used:
            raise StoreError(
                f"store {db.location} holds values encrypted with key(s) "
                f"{', '.join(sorted(used))}: give --encryption-key-file"
            )
        return
    missing = used - cipher.key_ids
    if missing:
        raise StoreError(
            f"store {db.location} holds values encrypted with key(s) "
            f"{', '.join(sorted(missing))} that --encryption-key-file does not hold"
        )
    current = cipher.current
    with db.write() as conn:
        rows = conn.execute(
            f"SELECT {COLS} FROM resources WHERE sealed != ?", (current,)
        ).fetchall()
        for r in rows:
            values = sealer.resealed_row(r)
            if values is None:
                continue  # left as it is: reported by the start-up check
            conn.execute(
                "UPDATE resources SET data=?, sealed=?, wire=?, digest=? "
                "WHERE kind=? AND mesh=? AND name=? AND origin=?",
                (values[4], values[10], values[WIRE], row_digest(values), *values[:4]),
            )
        changes = conn.execute(
            f"SELECT {LOG_COLS} FROM changelog WHERE sealed != ?", (current,)
        ).fetchall()
        for entry in changes:
            if entry[-1] is None or log_digest(entry[:-1]) != bytes(entry[-1]):
                continue  # left as it is: reported by the start-up check
            rev, change, sealed = entry[0], entry[5], entry[8]
            where = aad("changelog", str(rev), "", "", "")
            stored, kid = sealer.seal(sealer.open(bytes(change), sealed, where), where)
            digest = log_digest((*entry[:5], stored, entry[6], entry[7], kid))
            conn.execute(
                "UPDATE changelog SET change=?, sealed=?, digest=? WHERE revision=?",
                (stored, kid, digest, rev),
            )
        secrets = conn.execute(
            "SELECT name, data, sealed FROM internal_secrets WHERE sealed != ?", (current,)
        ).fetchall()
        for name, data, sealed in secrets:
            where = aad("internal", "", "", name, "")
            stored, kid = sealer.seal(sealer.open(bytes(data), sealed, where), where)
            conn.execute(
                "UPDATE internal_secrets SET data=?, sealed=? WHERE name=?", (stored, kid, name)
            )
    db.after_reseal()
