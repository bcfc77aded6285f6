"""Encryption at rest on PostgreSQL: at open, every stored value sealed with the current key.

The sealing itself is the SQLite backend's (kds.store.sqlite._sealing.Sealer): the same
AES-256-GCM keys, the same associated data binding a value to its row. As there, a store
holding values sealed with a key the key file lacks is refused, and values in plaintext or
under an older key are re-sealed with the current one (enabling encryption, or rotating, covers
what is stored). Runs as one write transaction, so instances starting at once do it once.
"""

from __future__ import annotations

from kds.errors import StoreDamaged, StoreError
from kds.store.postgres._db import Database
from kds.store.sqlite._db import COLS, DIGEST
from kds.store.sqlite._sealing import Sealer, aad

__all__ = ["reseal"]


def reseal(db: Database, sealer: Sealer) -> None:
    cipher = sealer.cipher
    with db.read() as conn:
        used = {
            row[0]
            for table in ("resources", "changelog", "internal_secrets")
            for row in conn.execute(f"SELECT DISTINCT sealed FROM {table}")
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
            f"SELECT {COLS}, wire FROM resources WHERE sealed != %s", (current,)
        ).fetchall()
        for r in rows:
            try:
                res = sealer.resource(r)
            except StoreDamaged:
                continue  # left as it is: reported by the start-up check
            key = (r[0], r[1], r[2], r[3])
            wire = r[DIGEST + 1]
            plain_wire = (
                None if wire is None else sealer.open(bytes(wire), r[10], aad("wire", *key))
            )
            values = sealer.row_values(res, r[3], plain_wire)
            conn.execute(
                "UPDATE resources SET data=%s, sealed=%s, digest=%s, wire=%s "
                "WHERE kind=%s AND mesh=%s AND name=%s AND origin=%s",
                (values[4], values[10], values[DIGEST], values[DIGEST + 1], *key),
            )
        changes = conn.execute(
            "SELECT revision, change, sealed FROM changelog WHERE sealed != %s", (current,)
        ).fetchall()
        for rev, change, sealed in changes:
            where = aad("changelog", str(rev), "", "", "")
            stored, kid = sealer.seal(sealer.open(bytes(change), sealed, where), where)
            conn.execute(
                "UPDATE changelog SET change=%s, sealed=%s WHERE revision=%s", (stored, kid, rev)
            )
        secrets = conn.execute(
            "SELECT name, data, sealed FROM internal_secrets WHERE sealed != %s", (current,)
        ).fetchall()
        for name, data, sealed in secrets:
            where = aad("internal", "", "", name, "")
            stored, kid = sealer.seal(sealer.open(bytes(data), sealed, where), where)
            conn.execute(
                "UPDATE internal_secrets SET data=%s, sealed=%s WHERE name=%s",
                (stored, kid, name),
            )
