"""Encryption at rest: the store file holds no plaintext, keys rotate, errors say what to do."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from kds.crypto import DataCipher, key_id, load_key_file
from kds.errors import ConfigError, StoreDamaged, StoreError
from kds.model import Key, Kind, Resource
from kds.protocol.digest_tree import leaf_digest
from kds.store.sqlite import GlobalEngine, ZoneEngine

NOW = "2026-11-29T00:00:00.000Z"
MARKER = b"plaintext-marker-5d2c"
K1, K2 = os.urandom(32), os.urandom(32)


def _files(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


def _fill(store: GlobalEngine, n: int = 20) -> None:
    store.put(Resource(Kind.MESH, "default"), NOW)
    for i in range(n):
        store.put(Resource(Kind.SECRET, f"s{i}", mesh="default", data=MARKER + bytes([i])), NOW)
    store.put(Resource(Kind.GLOBAL_SECRET, "g", data=MARKER), NOW)
    store.put_internal_secret("signing-key", MARKER + b"-internal", NOW)


def test_global_store_holds_no_plaintext_and_reads_it_back(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = GlobalEngine(db, cipher=DataCipher([K1]))
    _fill(store)
    row = store.get(Key(Kind.SECRET, "default", "s3"))
    assert row is not None and row.resource.data == MARKER + b"\x03"
    changes = store.changes_after(0, store.head())
    assert any(MARKER in c.change for c in changes)  # sync reads plaintext
    assert all(MARKER in c.change for c in store.snapshot().changes if c.key.kind is not Kind.MESH)
    assert store.internal_secrets("signing")["signing-key"] == MARKER + b"-internal"
    store.close()
    raw = _files(db)
    assert MARKER not in raw and base64.b64encode(MARKER)[:16] not in raw


def test_zone_store_holds_no_plaintext(tmp_path: Path) -> None:
    db = tmp_path / "z.db"
    store = ZoneEngine(db, cipher=DataCipher([K1]))
    store.put(Resource(Kind.MESH, "default"), NOW)
    store.put(Resource(Kind.SECRET, "local", mesh="default", data=MARKER), NOW)
    row = store.get(Key(Kind.SECRET, "default", "local"))
    assert row is not None and row.resource.data == MARKER
    store.close()
    assert MARKER not in _files(db)


def test_keys_rotate_without_losing_data(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = GlobalEngine(db, cipher=DataCipher([K1]))
    _fill(store)
    store.close()
    with pytest.raises(StoreError, match=rf"key\(s\) {key_id(K1)} that --encryption-key-file"):
        GlobalEngine(db, cipher=DataCipher([K2]))
    with pytest.raises(StoreError, match="give --encryption-key-file"):
        GlobalEngine(db)
    # New key first, old key kept: everything reads, and is re-sealed with the new key.
    store = GlobalEngine(db, cipher=DataCipher([K2, K1]))
    assert store.get(Key(Kind.GLOBAL_SECRET, "", "g")).resource.data == MARKER  # type: ignore[union-attr]
    store.close()
    store = GlobalEngine(db, cipher=DataCipher([K2]))  # the old key can go
    assert store.get(Key(Kind.SECRET, "default", "s0")).resource.data == MARKER + b"\x00"  # type: ignore[union-attr]
    assert len(store.changes_after(0, store.head())) == store.head()
    store.close()


def test_enabling_encryption_seals_what_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = GlobalEngine(db)
    _fill(store)
    store.close()
    assert MARKER in _files(db)
    store = GlobalEngine(db, cipher=DataCipher([K1]))
    assert store.internal_secrets()["signing-key"] == MARKER + b"-internal"
    store.close()
    assert MARKER not in _files(db)


def _move_value(db: Path, redigest: bool) -> None:
    """Copy s0's sealed value into s1's row (a digest recomputed when ``redigest``)."""
    import sqlite3

    from kds.store.sqlite._db import COLS, DIGEST
    from kds.store.sqlite._digest import row_digest

    conn = sqlite3.connect(db)
    data = conn.execute("SELECT data FROM resources WHERE name='s0'").fetchone()[0]
    conn.execute("UPDATE resources SET data=? WHERE name='s1'", (data,))
    if redigest:
        row = conn.execute(f"SELECT {COLS} FROM resources WHERE name='s1'").fetchone()
        conn.execute("UPDATE resources SET digest=? WHERE name='s1'", (row_digest(row[:DIGEST]),))
    conn.commit()
    conn.close()


def test_a_value_moved_to_another_row_does_not_open(tmp_path: Path) -> None:
    """Its digest no longer matches: the store opens (re-sealing what it can), and that row
    alone is refused, by name."""
    db = tmp_path / "g.db"
    store = GlobalEngine(db, cipher=DataCipher([K1]))
    _fill(store, 2)
    store.close()
    _move_value(db, redigest=False)
    store = GlobalEngine(db, cipher=DataCipher([K2, K1]))
    assert [d.key for d in store.damaged] == ["Secret default/s1"]
    with pytest.raises(StoreDamaged, match=r"Secret default/s1 .* damaged"):
        store.get(Key(Kind.SECRET, "default", "s1"))
    total, rows = store.page(Kind.SECRET)
    assert (total, [r.resource.name for r in rows]) == (1, ["s0"])
    store.close()


def test_a_value_that_does_not_decrypt_fails_its_own_row_only(tmp_path: Path) -> None:
    """A sealed value that matches its digest but does not open (moved by someone who
    recomputed the digest): a get of it names it as damaged, a list serves the others."""
    db = tmp_path / "z.db"
    store = GlobalEngine(db, cipher=DataCipher([K1]))
    _fill(store, 3)
    store.close()
    _move_value(db, redigest=True)
    store = GlobalEngine(db, cipher=DataCipher([K1]))
    with pytest.raises(StoreDamaged, match=r"Secret default/s1 .* does not decrypt"):
        store.get(Key(Kind.SECRET, "default", "s1"))
    total, rows = store.page(Kind.SECRET)
    assert (total, [r.resource.name for r in rows]) == (2, ["s0", "s2"])
    store.close()


def test_key_file_is_checked(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# current\n{base64.b64encode(K2).decode()}\n{base64.b64encode(K1).decode()}\n")
    f.chmod(0o600)
    cipher = load_key_file(f)
    assert cipher.current == key_id(K2) and cipher.key_ids == {key_id(K1), key_id(K2)}
    f.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by other users .* chmod 600"):
        load_key_file(f)
    f.chmod(0o600)
    f.write_text("c2hvcnQ=\n")
    with pytest.raises(ConfigError, match="line 1: not a base64 key of 32 bytes") as e:
        load_key_file(f)
    assert "c2hvcnQ" not in str(e.value)
    f.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no key in it"):
        load_key_file(f)


def test_builtin_ca_keys_are_sealed_too(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = GlobalEngine(db, cipher=DataCipher([K1]))
    mtls = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}
    store.put(Resource(Kind.MESH, "payments", spec={"mtls": mtls}), NOW)
    key = store.get(Key(Kind.SECRET, "payments", "payments.ca-builtin-key-ca-1"))
    assert key is not None and b"PRIVATE KEY" in key.resource.data
    store.close()
    assert b"PRIVATE KEY" not in _files(db)


@pytest.mark.parametrize("cipher", [None, DataCipher([K1])], ids=["plaintext", "encrypted"])
def test_anti_entropy_leaves_are_the_digests_of_the_rows_read_back(
    tmp_path: Path, cipher: DataCipher | None
) -> None:
    """A tree build computes each leaf from the row's columns, without a Resource: the same
    digest as the resource read back gives, sealed or not, labels and spec or none."""
    store = GlobalEngine(tmp_path / "g.db", cipher=cipher)
    spec = {"mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}
    store.put(Resource(Kind.MESH, "default", spec=spec), NOW)
    store.put(Resource(Kind.MESH, "bare"), NOW)
    store.put(Resource(Kind.SECRET, "s", mesh="default", data=b"\x00v"), NOW)
    store.put(
        Resource(Kind.SECRET, "n-\u00fc", mesh="bare", data=MARKER, labels={"b": "x y", "a": "1"}),
        NOW,
    )
    store.put(Resource(Kind.GLOBAL_SECRET, "g", data=b""), NOW)
    leaves = dict(store.sync_leaves().leaves)
    assert len(leaves) >= 5  # with what the meshes created
    for key, digest in leaves.items():
        row = store.get(key)
        assert row is not None and digest == leaf_digest(row.resource), key
    store.close()
