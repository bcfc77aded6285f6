"""What the PostgreSQL backend adds to the store interface (the shared rules are the
conformance suite's): several store objects on one schema, as several instances share it;
wake-ups by LISTEN/NOTIFY; encryption at rest; the schema version; the data dir's marker."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from kds.crypto import DataCipher
from kds.errors import StoreError, StoreUnavailable
from kds.model import Key, Kind
from kds.protocol.applier import DecodedBatch, Incoming
from kds.protocol.records import next_chain
from kds.store import PgTarget, open_global_store, open_zone_store
from kds.store.postgres import (
    SCHEMA_VERSION,
    Leadership,
    NotLeader,
    PgGlobalStore,
    PgZoneEngine,
    import_sqlite_global,
    import_sqlite_store,
)
from kds.store.postgres._db import connection_lost
from tests.pgserver import PgServer, find_bindir, shared_server
from tests.unit.store_backends import MESH, T0, T1, inc_put, mk


def _target(**kw: object) -> PgTarget:
    return PgTarget(shared_server().url, "u" + uuid.uuid4().hex[:12], **kw)  # type: ignore[arg-type]


async def test_two_instances_writing_at_once_make_one_gap_free_sequence() -> None:
    """Writers on two store objects (two instances) interleave: every revision is taken
    once, none is skipped, and the change log holds them in revision order."""
    target = _target()
    a, b = open_global_store(target), open_global_store(target)
    try:

        async def writes(store: PgGlobalStore, who: str) -> None:
            for i in range(15):
                await store.put(mk(Key(Kind.GLOBAL_SECRET, "", f"{who}{i}")), T0)

        assert isinstance(a, PgGlobalStore) and isinstance(b, PgGlobalStore)
        await asyncio.gather(writes(a, "a"), writes(b, "b"))
        head = await a.head()
        assert head == await b.head() == 30
        records = await b.changes_after(0, head)
        assert [r.revision for r in records] == list(range(1, 31))
        chain = b""
        for r in records:  # one history chain over both instances' writes
            chain = next_chain(chain, r.change)
            assert r.chain == chain
    finally:
        a.close()
        b.close()


async def test_a_commit_wakes_the_other_instance() -> None:
    """A write on one instance notifies the other (LISTEN/NOTIFY) well before the fallback."""
    target = _target()
    a, b = open_global_store(target), open_global_store(target)
    assert isinstance(b, PgGlobalStore)
    got: asyncio.Queue[str] = asyncio.Queue()

    async def on_event(what: str) -> None:
        await got.put(what)

    follower = asyncio.create_task(b.follow(on_event, fallback=30))
    try:
        assert await asyncio.wait_for(got.get(), 10) == ""  # the catch-up after LISTEN
        await a.put(mk(MESH), T0)
        assert await asyncio.wait_for(got.get(), 5) == "change"
        await a.put_internal_secret("k", b"v", T0)
        assert await asyncio.wait_for(got.get(), 5) == "secrets"
    finally:
        follower.cancel()
        a.close()
        b.close()


async def test_zone_status_of_an_older_stream_never_replaces_a_newer_one() -> None:
    """An instance whose stream of a zone ended saves its view after another instance took
    the zone's new stream: the newer claim stays."""
    store = open_global_store(_target())
    try:
        await store.save_zone_statuses({"z": '{"connected_at": 20.0, "online": true}'})
        await store.save_zone_statuses({"z": '{"connected_at": 10.0, "online": false}'})
        assert await store.zone_statuses() == {"z": '{"connected_at": 20.0, "online": true}'}
        await store.save_zone_statuses({"z": '{"connected_at": 20.0, "online": false}'})
        assert await store.zone_statuses() == {"z": '{"connected_at": 20.0, "online": false}'}
    finally:
        store.close()


async def test_encrypted_at_rest_with_the_same_sealing(tmp_path: Path) -> None:
    """Secret data is stored sealed (never the plaintext in the table), opens with the key
    file's keys, and a store opened without them is refused naming the option."""
    target = _target()
    cipher = DataCipher([os.urandom(32)])
    store = open_global_store(target, cipher=cipher)
    await store.put(mk(MESH), T0)
    key = Key(Kind.SECRET, "default", "s")
    await store.put(mk(key, b"plain-secret-value"), T0)
    assert (await store.get(key)).resource.data == b"plain-secret-value"  # type: ignore[union-attr]
    store.close()
    with psycopg.connect(target.url) as conn:
        rows = conn.execute(
            f"SELECT data, wire FROM {target.schema}.resources WHERE name='s'"
        ).fetchall()
        log = conn.execute(f"SELECT change FROM {target.schema}.changelog").fetchall()
    assert all(b"plain-secret-value" not in bytes(v) for r in rows + log for v in r if v)
    with pytest.raises(StoreError, match="give --encryption-key-file"):
        open_global_store(target)


def test_roles_schema_versions_and_the_marker_are_checked(tmp_path: Path) -> None:
    marker = tmp_path / "postgres-store.id"
    target = _target(marker=marker)
    g = open_global_store(target)
    store_id = g.store_id
    g.close()
    assert marker.read_text().strip() == store_id
    with pytest.raises(StoreError, match="belongs to a global control plane, not a zone one"):
        open_zone_store(target)
    with psycopg.connect(target.url) as conn:
        conn.execute(
            f"UPDATE {target.schema}.meta SET value=%s WHERE key='schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(StoreError, match="made by a newer kds-sync"):
        open_global_store(target)
    # An empty schema where the marker says this instance used a store: refused.
    elsewhere = PgTarget(target.url, target.schema + "x", marker=marker)
    with pytest.raises(StoreError, match="--new-store"):
        open_global_store(elsewhere)
    open_global_store(elsewhere, new_store=True).close()


async def test_an_unreachable_server_is_store_unavailable() -> None:
    """No server at the URL: opening fails saying PostgreSQL is unreachable, no password."""
    with pytest.raises(StoreUnavailable, match=r"PostgreSQL at postgresql://127\.0\.0\.1:1/") as e:
        open_global_store(PgTarget("postgresql://u@127.0.0.1:1/db", "s", password="pw-x"))
    assert "pw-x" not in str(e.value)


def _batch(key: Key, revision: int) -> DecodedBatch:
    return _batch_of([inc_put(mk(key), revision)], revision)


def test_an_old_leader_cannot_apply_after_a_new_one_took_over() -> None:
    """Fencing: each leader takes the next epoch; a batch is applied only while the store
    is at the applying instance's epoch, checked inside the applying transaction."""
    target = _target()
    old, new = PgZoneEngine(target), PgZoneEngine(target)
    try:
        old.fencing = Leadership(old, "zone-old")._take_epoch()
        old.apply_batch(_batch(MESH, 1), "gsid", T0)
        new.fencing = Leadership(new, "zone-new")._take_epoch()
        with pytest.raises(NotLeader, match="another instance took over; batch not applied"):
            old.apply_batch(_batch(Key(Kind.GLOBAL_SECRET, "", "g"), 2), "gsid", T0)
        assert new.sync_state().applied_revision == 1
        assert Leadership(new, "").leader() == ("zone-new", new.fencing)
        new.apply_batch(_batch(Key(Kind.GLOBAL_SECRET, "", "g"), 2), "gsid", T0)
    finally:
        old.close()
        new.close()


async def test_a_paused_leader_loses_the_lock_to_a_standby() -> None:
    """A leader that stops sending heartbeats (paused) has its session ended by the server
    after idle_timeout, freeing the lock; the standby leads at the next epoch, and the old
    leader is told it lost."""
    target = _target()
    a_engine, b_engine = PgZoneEngine(target), PgZoneEngine(target)
    a = Leadership(a_engine, "zone-a", heartbeat=0.2, idle_timeout=1.0)
    b = Leadership(b_engine, "zone-b", heartbeat=0.2, idle_timeout=1.0)
    a_lost, b_leads = asyncio.Event(), asyncio.Event()

    async def a_leads(lost: asyncio.Event) -> None:
        await lost.wait()

    async def _paused(conn: object, lost: asyncio.Event) -> None:
        await asyncio.sleep(2.5)  # paused past idle_timeout; then it runs again
        try:
            await conn.execute("SELECT 1")  # type: ignore[attr-defined]
        except psycopg.Error:
            lost.set()
            a_lost.set()

    async def b_lead(lost: asyncio.Event) -> None:
        b_leads.set()
        await asyncio.sleep(3600)

    a._heartbeat = _paused  # type: ignore[method-assign]  # a pauses: no heartbeat
    ta = asyncio.create_task(a.run(a_leads))
    try:
        await asyncio.sleep(0.3)
        tb = asyncio.create_task(b.run(b_lead))
        await asyncio.wait_for(b_leads.wait(), 10)
        assert b_engine.fencing == (a_engine.fencing or 0) + 1
        await asyncio.wait_for(a_lost.wait(), 10)
        tb.cancel()
    finally:
        ta.cancel()
        a_engine.close()
        b_engine.close()


async def test_a_sqlite_global_moves_with_its_id_history_and_sealed_values(
    tmp_path: Path,
) -> None:
    """import_sqlite_global: the PostgreSQL store is the same store (id, head, change log,
    chains, snapshot), sealed values open with the same key, tokens and internal secrets
    came along; a schema that holds a store is refused."""
    cipher = DataCipher([os.urandom(32)])
    src = open_global_store(tmp_path / "global.db", cipher=cipher, log_size=3)
    await src.put(mk(MESH), T0)
    for i in range(5):
        await src.put(mk(Key(Kind.SECRET, "default", f"s{i}"), f"v{i}".encode()), T0)
    await src.delete(Key(Kind.SECRET, "default", "s0"))
    await src.put_internal_secret("sync-ca-key", b"ca", T0)
    await src.add_zone_token("t1", "zone-a", "k1", T0, T0)
    await src.save_zone_statuses({"zone-a": '{"connected_at": 1.0}'})
    before = (src.store_id, await src.head(), await src.log_floor(), await src.snapshot())
    log = await src.changes_after(before[2], before[1])
    src.close()

    target = _target()
    store_id, counts = import_sqlite_global(tmp_path / "global.db", target)
    assert store_id == before[0] and counts["head"] == before[1] == 7
    assert counts["resources"] == 5 and counts["changelog"] == 3
    pg = open_global_store(target, cipher=cipher, log_size=3)
    try:
        assert (pg.store_id, await pg.head(), await pg.log_floor()) == before[:3]
        assert await pg.changes_after(before[2], before[1]) == log
        assert await pg.chain_at(before[1]) == before[3].chain
        snap = await pg.snapshot()
        assert (snap.revision, snap.changes, snap.chain) == (
            before[3].revision, before[3].changes, before[3].chain,
        )  # fmt: skip
        got = await pg.get(Key(Kind.SECRET, "default", "s4"))
        assert got is not None and got.resource.data == b"v4"
        assert await pg.internal_secrets() == {"sync-ca-key": b"ca"}
        assert [t["id"] for t in await pg.zone_tokens()] == ["t1"]
        await pg.put(mk(Key(Kind.SECRET, "default", "new")), T1)  # the sequence goes on
        assert await pg.head() == 8
    finally:
        pg.close()
    with pytest.raises(StoreError, match="already holds a store"):
        import_sqlite_global(tmp_path / "global.db", target)


async def test_a_store_of_an_older_schema_version_is_migrated_at_open() -> None:
    """A store made at schema version 1 (before the zone history table) gets version 2's
    table, version 3's row digests and version 4's change-log digests when opened, its data
    untouched (the digests, already of the current format, are kept: test_store_wire_digest.py
    and test_store_log_digest.py migrate older ones)."""
    target = _target()
    store = open_global_store(target)
    await store.put(mk(MESH), T0)
    store.close()
    with psycopg.connect(target.url) as conn:
        conn.execute(f"DROP TABLE {target.schema}.zone_events")
        conn.execute(f"UPDATE {target.schema}.meta SET value='1' WHERE key='schema_version'")
    store = open_global_store(target)
    try:
        assert await store.zone_events("z", "event") == []
        assert await store.head() == 1 and await store.get(MESH) is not None
    finally:
        store.close()
    with psycopg.connect(target.url) as conn:
        row = conn.execute(
            f"SELECT value FROM {target.schema}.meta WHERE key='schema_version'"
        ).fetchone()
    assert row is not None and int(row[0]) == SCHEMA_VERSION == 4


async def test_a_sqlite_zone_moves_with_its_sync_state_and_conflicts(tmp_path: Path) -> None:
    """import_sqlite_store for a zone: the same store id and sync state (so the zone resumes),
    the zone it serves, its zone-local rows and the synced copy a name conflict keeps aside; a
    global's file is not taken for a zone's."""
    src = open_zone_store(tmp_path / "zone.db")
    assert await src.bind_zone("zone-a") == "zone-a"
    dup = Key(Kind.SECRET, "default", "dup")
    await src.apply_batch(_batch_of([inc_put(mk(MESH), 1)], 1), "global-1", T0)
    await src.put(mk(dup, b"zone-own"), T0)
    await src.apply_batch(_batch_of([inc_put(mk(dup, b"global-copy"), 2)], 2), "global-1", T0)
    before = (src.store_id, await src.sync_state(), await src.conflicts())
    src.close()
    assert before[2] == [dup]

    target = _target()
    store_id, counts = import_sqlite_store(tmp_path / "zone.db", target, "zone")
    assert store_id == before[0] and counts["applied_revision"] == 2 and counts["resources"] == 3
    pg = open_zone_store(target)
    try:
        assert (pg.store_id, await pg.sync_state(), await pg.conflicts()) == before
        got = await pg.get(dup)
        assert got is not None and got.resource.data == b"zone-own" and got.shadows_synced
        assert await pg.bind_zone("zone-b") == "zone-a"  # the zone it serves moves with it
    finally:
        pg.close()
    open_global_store(tmp_path / "global.db").close()
    with pytest.raises(StoreError, match="is not a zone store"):
        import_sqlite_store(tmp_path / "global.db", _target(), "zone")


def _batch_of(changes: list[Incoming], revision: int) -> DecodedBatch:
    return DecodedBatch(
        seq=1,
        from_revision=revision - 1,
        revision=revision,
        snapshot=False,
        final=True,
        head_revision=revision,
        changes=tuple(changes),
        chain=next_chain(b"", str(revision).encode()),
    )


async def test_a_leader_epoch_that_cannot_be_written_is_tried_again() -> None:
    """The server lost between taking the lock and writing the epoch (it restarted, a pooled
    connection died): the leadership tries again rather than ending (the zone's sync task
    would die with it)."""
    engine = PgZoneEngine(_target())
    leader = Leadership(engine, "zone-a", heartbeat=0.05, idle_timeout=1.0)
    take = leader._take_epoch
    calls = 0

    def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("PostgreSQL at test failed: server closed the connection")
        return take()

    leader._take_epoch = flaky  # type: ignore[method-assign]
    leads = asyncio.Event()

    async def lead(lost: asyncio.Event) -> None:
        leads.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(leader.run(lead))
    try:
        await asyncio.wait_for(leads.wait(), 10)
        assert calls == 2 and engine.fencing == 1 and leader.leading
    finally:
        task.cancel()
        engine.close()


async def test_a_store_failure_under_the_lead_lets_go_and_leads_again() -> None:
    """The sync under the lead fails on the store (the server went away as this instance
    began to lead): the lock is let go and taken again with the next epoch, instead of the
    failure ending the leadership loop and with it the zone's sync."""
    engine = PgZoneEngine(_target())
    leader = Leadership(engine, "zone-a", heartbeat=0.05, idle_timeout=1.0)
    epochs: list[int] = []
    second = asyncio.Event()

    async def lead(lost: asyncio.Event) -> None:
        epochs.append(engine.fencing)
        if len(epochs) == 1:
            raise StoreUnavailable("PostgreSQL at test failed: server closed the connection")
        second.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(leader.run(lead))
    try:
        await asyncio.wait_for(second.wait(), 10)
        assert epochs == [epochs[0], epochs[0] + 1] and leader.leading
        assert not task.done()
    finally:
        task.cancel()
        engine.close()


async def test_a_stopping_leader_lets_go_and_never_leads_again() -> None:
    """The daemon stops while leading: the leadership ends with the sync under it, lets go
    of the lock at once (a standby can take it) and takes no further epoch on its way out."""
    engine = PgZoneEngine(_target())
    other = PgZoneEngine(engine.db.target)
    leader = Leadership(engine, "zone-a", heartbeat=0.05, idle_timeout=1.0)
    stop = asyncio.Event()
    leads: list[int] = []
    leading = asyncio.Event()

    async def lead(lost: asyncio.Event) -> None:
        leads.append(engine.fencing)
        leading.set()
        await stop.wait()

    task = asyncio.create_task(leader.run(lead, stop))
    try:
        await asyncio.wait_for(leading.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)  # returns by itself: nobody cancels it
        assert leads == [1] and not leader.leading
        assert Leadership(other, "").leader() == ("zone-a", 1)  # no epoch taken on the way out
        standby = Leadership(other, "zone-b", heartbeat=0.05, idle_timeout=1.0)
        conn = await asyncio.wait_for(standby._acquire(), 5)  # the lock is free
        await conn.close()
    finally:
        task.cancel()
        engine.close()
        other.close()


async def test_calls_fail_fast_while_the_server_is_away_and_recover_when_it_is_back() -> None:
    """Once a call found the server away, the next ones each wait a short while for a
    connection, not the pool's full wait: writes queued on the store's one writer thread all
    get StoreUnavailable in about a second, not five seconds each in turn. A write succeeds
    again once the server is back."""
    bindir = find_bindir()
    assert bindir is not None, "run scripts/setup-postgres"
    server = PgServer(bindir)
    server.start()
    store = open_global_store(PgTarget(server.url, "s" + uuid.uuid4().hex[:12]))
    try:
        await store.put(mk(Key(Kind.GLOBAL_SECRET, "", "before")), T0)
        server.stop("immediate")
        start = time.monotonic()
        for i in range(6):
            with pytest.raises(StoreUnavailable, match="PostgreSQL at postgresql://127"):
                await store.put(mk(Key(Kind.GLOBAL_SECRET, "", f"away{i}")), T0)
        # Before: the first call failed at once and each next one waited the pool's 5 s (25 s).
        assert time.monotonic() - start < 4.5
        server.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                await store.put(mk(Key(Kind.GLOBAL_SECRET, "", "after")), T1)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "no write within 20 s of the server's return"
                await asyncio.sleep(0.2)
        assert await store.head() == 2
    finally:
        store.close()
        server.remove()


def test_only_a_lost_connection_counts_as_the_server_away() -> None:
    assert connection_lost(psycopg.OperationalError("server closed the connection"))
    assert connection_lost(psycopg.errors.AdminShutdown())
    assert connection_lost(psycopg.errors.ConnectionFailure())
    assert not connection_lost(psycopg.errors.SerializationFailure())
    assert not connection_lost(psycopg.errors.QueryCanceled())


def test_a_durable_write_waits_for_the_flush_even_where_the_server_turns_it_off() -> None:
    """A server, database or role set to synchronous_commit=off had every write global
    acknowledged committed without waiting for the WAL flush: a PostgreSQL crash lost it.
    Durable writes now run with it on; a zone's batches still skip the wait."""
    off = shared_server().url + "?options=-c%20synchronous_commit%3Doff"
    target = PgTarget(off, "u" + uuid.uuid4().hex[:12])
    engine = PgZoneEngine(target)
    try:
        with engine.db.write() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        with engine.db.write(durable=False) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
    finally:
        engine.close()
