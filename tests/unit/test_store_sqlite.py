"""The SQLite backend's own rules (kds.store.sqlite), on its blocking engines and a temp file:
the file, its pragmas and fsyncs, its role, its schema. What every backend does is in
test_store_conformance.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kds.errors import NotFound, StoreError
from kds.model import Key, Kind
from kds.protocol.applier import DecodedBatch, Incoming
from kds.protocol.records import next_chain
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore, SqliteZoneStore, ZoneEngine
from kds.store.sqlite._checkpoint import CHECKPOINT_EVERY, PENDING_FRAMES
from kds.store.sqlite._db import BUSY_TIMEOUT_MS, ReaderBusy, WriterBusy, get_meta
from tests.unit.store_backends import G1, G2, GSID, MESH, S1, T0, T1, inc_put, mk


def dbatch(changes: Iterable[Incoming], revision: int, from_revision: int = 0) -> DecodedBatch:
    return DecodedBatch(
        seq=1,
        from_revision=from_revision,
        revision=revision,
        snapshot=False,
        final=True,
        head_revision=revision,
        changes=tuple(changes),
    )


@pytest.fixture
def gstore(tmp_path: Path) -> Iterator[GlobalEngine]:
    s = GlobalEngine(tmp_path / "global.db")
    yield s
    s.close()


@pytest.fixture
def zstore(tmp_path: Path) -> Iterator[ZoneEngine]:
    s = ZoneEngine(tmp_path / "zone.db")
    yield s
    s.close()


def _head_and_log(store: ZoneEngine) -> tuple[int, list[Any]]:
    """The head revision and change log a zone's file holds (a zone engine serves neither)."""
    conn = store.db.conn()
    return int(get_meta(conn, "head")), conn.execute("SELECT * FROM changelog").fetchall()


def test_global_store_opened_as_zone_fails(tmp_path: Path) -> None:
    """Opening a global store as a zone (or the reverse) raises StoreError."""
    GlobalEngine(tmp_path / "g.db").close()
    with pytest.raises(StoreError):
        ZoneEngine(tmp_path / "g.db")
    ZoneEngine(tmp_path / "z.db").close()
    with pytest.raises(StoreError):
        GlobalEngine(tmp_path / "z.db")


def test_the_wrong_role_is_named(tmp_path: Path) -> None:
    """The refusal says which control plane the file belongs to."""
    GlobalEngine(tmp_path / "g.db").close()
    with pytest.raises(StoreError, match="belongs to a global control plane, not a zone one"):
        ZoneEngine(tmp_path / "g.db")


def test_file_mode_0600(tmp_path: Path) -> None:
    """The store file and its WAL side files are readable by the owner only."""
    path = tmp_path / "g.db"
    s = GlobalEngine(path)
    try:
        s.put(mk(G1, b"secret"), T0)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if p.exists():
                assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    finally:
        s.close()


def test_not_a_database_is_store_error(tmp_path: Path) -> None:
    """A file that is not a SQLite database, or a path that cannot be opened, is StoreError."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a sqlite database, just some text " * 20)
    with pytest.raises(StoreError):
        GlobalEngine(bad)
    with pytest.raises(StoreError):
        GlobalEngine(tmp_path / "missing-dir" / "x.db")


def test_every_connection_is_wal_with_secure_delete(gstore: GlobalEngine) -> None:
    """Each thread's connection runs in WAL mode, zeroes freed pages and commits with FULL."""
    conn = gstore.db.conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_store_from_before_the_added_columns_opens(tmp_path: Path) -> None:
    """A file made before the sealed / committed_at columns existed gets them when opened
    and keeps its rows."""
    path = tmp_path / "g.db"
    GlobalEngine(path).close()
    conn = sqlite3.connect(path)
    for table, column in (
        ("changelog", "committed_at"),
        ("changelog", "sealed"),
        ("resources", "sealed"),
        ("internal_secrets", "sealed"),
    ):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.commit()
    conn.close()
    s = GlobalEngine(path)
    try:
        s.put(mk(G1, b"after"), T0)
        row = s.get(G1)
        assert row is not None and row.resource.data == b"after"
        assert s.commit_time(1) is not None
    finally:
        s.close()


def test_zone_puts_keep_no_change_log(zstore: ZoneEngine) -> None:
    """Zone-local puts leave the file's head at 0 and its change log empty."""
    zstore.put(mk(MESH), T0)
    zstore.put(mk(S1, b"a"), T0)
    zstore.put(mk(S1, b"b"), T1)
    assert _head_and_log(zstore) == (0, [])


def test_zone_writes_do_not_touch_global_meta(zstore: ZoneEngine) -> None:
    """Zone-local writes keep no change log and do not move the sync state."""
    zstore.put(mk(G1), T0)
    zstore.delete(G1)
    assert _head_and_log(zstore) == (0, [])
    assert zstore.sync_state().applied_revision == 0


def _synchronous(store: GlobalEngine | ZoneEngine) -> int:
    return int(store.db.conn().execute("PRAGMA synchronous").fetchone()[0])


def test_apply_batch_skips_the_fsync_but_api_writes_keep_it(zstore: ZoneEngine) -> None:
    """A synced batch commits with synchronous=NORMAL (global resends what a power loss
    takes, and the applied revision rolls back with it); a zone-local write from the API
    commits with FULL, also right after a batch. Global commits everything with FULL."""
    seen: list[int] = []
    view, check = zstore._zone_view, zstore._check_writable

    def spy(step: Callable[..., Any]) -> Callable[..., Any]:
        def spied(*args: Any) -> Any:  # a step inside the writing transaction
            seen.append(_synchronous(zstore))
            return step(*args)

        return spied

    zstore._zone_view = spy(view)  # type: ignore[method-assign]
    zstore._check_writable = spy(check)  # type: ignore[method-assign]
    zstore.apply_batch(dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    zstore.put(mk(G2, b"local"), T0)
    assert seen == [1, 2]  # NORMAL, FULL


def test_a_batch_applied_now_uses_its_own_connection_and_leaves_the_other_as_it_was(
    zstore: ZoneEngine,
) -> None:
    """apply_batch_now writes on a connection of its own that never waits for the lock and
    skips the fsync; the thread's other connection keeps FULL and its busy timeout for the
    zone-local writes that follow."""
    seen: list[tuple[int, int]] = []
    view = zstore._zone_view

    def spied(conn: Any, *args: Any) -> Any:
        pragma = [
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("synchronous", "busy_timeout")
        ]
        seen.append((pragma[0], pragma[1]))
        return view(conn, *args)

    zstore._zone_view = spied  # type: ignore[method-assign]
    zstore.apply_batch_now(dbatch([inc_put(mk(G1), 1)], 1), GSID, T0)
    zstore.apply_batch_now(dbatch([inc_put(mk(G1, b"two"), 2)], 2, 1), GSID, T0)
    assert seen == [(1, 0), (1, 0)]  # NORMAL, no wait
    zstore.put(mk(G2, b"local"), T0)
    conn = zstore.db.conn()
    assert _synchronous(zstore) == 2
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert len(zstore.db.thread_conns()) == 2
    assert zstore.sync_state().applied_revision == 2


def test_global_commits_with_fsync(gstore: GlobalEngine) -> None:
    gstore.put(mk(G1), T0)
    assert _synchronous(gstore) == 2


def test_change_log_tail_survives_a_rolled_back_apply(tmp_path: Path) -> None:
    """The head, chain and floor a writing transaction keeps in memory are dropped with a
    transaction that rolls back: the next write continues the committed log."""
    g = GlobalEngine(tmp_path / "global.db", log_size=3)
    try:
        g.put_many([mk(MESH), mk(S1), mk(G1)], T0)
        with pytest.raises(NotFound, match="does not exist"):
            # g2 is appended (revisions 4, 5) before the secret in a missing mesh fails
            g.put_many([mk(G2), mk(G1, b"w"), mk(Key(Kind.SECRET, "nowhere", "s"))], T0)
        assert g.head() == 3 and g.log_floor() == 0
        g.put_many([mk(G2), mk(G1, b"w")], T1)
        assert (g.head(), g.log_floor()) == (5, 2)
        records = g.changes_after(2, 5)
        assert [r.revision for r in records] == [3, 4, 5]
        chain = g.chain_at(2)
        assert chain is not None
        for r in records:
            chain = next_chain(chain, r.change)
            assert r.chain == chain
        assert g.chain_at(5) == chain
        # one transaction longer than the log: the floor and its chain follow its last write
        g.put_many([mk(Key(Kind.GLOBAL_SECRET, "", f"x{i}")) for i in range(5)], T1)
        assert (g.head(), g.log_floor()) == (10, 7)
        records = g.changes_after(7, 10)
        assert [r.revision for r in records] == [8, 9, 10]
        assert g.chain_at(7) is not None
        assert next_chain(
            next_chain(next_chain(g.chain_at(7), records[0].change), records[1].change),
            records[2].change,
        ) == g.chain_at(10)
        # a mesh found in one transaction is not taken as found in the next
        g.delete(S1)
        g.delete(MESH)
        with pytest.raises(NotFound, match="does not exist"):
            g.put_many([mk(S1)], T1)
    finally:
        g.close()


async def test_a_small_batch_is_applied_on_the_loop_unless_another_writer_holds_the_file(
    tmp_path: Path,
) -> None:
    """A small range batch is applied on the event loop's thread: it lands while the writer
    thread is busy with something else. If another connection holds the write lock, the
    attempt on the loop writes nothing and gives way to the writer thread, which waits for
    the lock and applies the batch once."""
    store = SqliteZoneStore(ZoneEngine(tmp_path / "zone.db"))
    gate = threading.Event()
    try:
        busy = asyncio.ensure_future(store._threads.write(gate.wait, 10))
        await store.apply_batch(dbatch([inc_put(mk(MESH), 1)], 1), GSID, T0)
        assert not busy.done()  # applied without the writer thread
        gate.set()
        await busy
        other = sqlite3.connect(tmp_path / "zone.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(WriterBusy):
            store._engine.apply_batch_now(dbatch([inc_put(mk(S1), 2)], 2, 1), GSID, T0)
        applying = asyncio.ensure_future(
            store.apply_batch(dbatch([inc_put(mk(S1), 2)], 2, 1), GSID, T0)
        )
        await asyncio.sleep(0.2)
        assert not applying.done()  # waiting for the lock on the writer thread
        other.execute("COMMIT")
        other.close()
        result = await applying
        assert result.applied_revision == 2
        assert (await store.sync_state()).applied_revision == 2
        assert await store.get(S1) is not None
    finally:
        gate.set()
        store.close()


def test_a_batch_reads_only_the_meshes_its_resources_live_in(zstore: ZoneEngine) -> None:
    """Applying a batch reads the rows of its own keys and of the Meshes they live in, not
    every Mesh the zone holds: a one-change batch costs the same with 1 mesh or 1,000. The
    plan still sees a mesh that only the zone holds (whose own row it reads too, as the
    Secret put in it may be one its mTLS uses), and refuses a Secret whose mesh the zone
    does not hold."""
    meshes = [Key(Kind.MESH, "", f"m{i}") for i in range(30)]
    zstore.apply_batch(dbatch([inc_put(mk(k), i + 1) for i, k in enumerate(meshes)], 30), GSID, T0)
    zstore.put(mk(Key(Kind.MESH, "", "local-only")), T0)
    conn = zstore.db._now_conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    in_m3, in_local = Key(Kind.SECRET, "m3", "a"), Key(Kind.SECRET, "local-only", "b")
    missing = Key(Kind.SECRET, "nowhere", "c")
    changes = [inc_put(mk(in_m3), 31), inc_put(mk(in_local), 32), inc_put(mk(missing), 33)]
    result = zstore.apply_batch_now(dbatch(changes, 33, 30), GSID, T1)
    conn.set_trace_callback(None)
    reads = [s for s in statements if s.startswith("SELECT") and "FROM resources" in s]
    assert reads and all(" name IN (" in s for s in reads), reads
    mesh_reads = [s for s in reads if "kind='Mesh'" in s]
    assert len(mesh_reads) == 2 and all("'m4'" not in s for s in mesh_reads)
    assert "'m3'" in mesh_reads[0]
    # Then the zone's own Mesh a Secret is put in, alone: its mTLS may use that Secret.
    assert "'local-only'" in mesh_reads[1] and "'m3'" not in mesh_reads[1]
    assert result.applied_revision == 33
    assert [(k, reason) for k, reason in result.rejected] == [
        (missing, "mesh 'nowhere' does not exist on this zone")
    ]
    assert zstore.get(in_m3) is not None and zstore.get(in_local) is not None


def test_a_one_change_batch_reads_its_rows_in_one_statement(zstore: ZoneEngine) -> None:
    """The Secret a batch brings and the Mesh it lives in are read in one statement (each
    statement is a round trip on PostgreSQL), and the batch runs no more statements than
    it did when a one-change batch was measured at its cheapest."""
    zstore.apply_batch(dbatch([inc_put(mk(MESH), 1)], 1), GSID, T0)
    conn = zstore.db._now_conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    result = zstore.apply_batch_now(dbatch([inc_put(mk(S1), 2)], 2, 1), GSID, T1)
    conn.set_trace_callback(None)
    assert result.applied_revision == 2 and result.rejected == []
    reads = [s for s in statements if s.startswith("SELECT") and "FROM resources" in s]
    assert len(reads) == 1, reads
    assert "kind='Mesh'" in reads[0] and "kind='Secret'" in reads[0], reads
    # BEGIN, the rows' read, applied_revision's read, the upsert, the meta upsert, COMMIT.
    assert len(statements) == 6, statements


class _LockedAgainstReaders:
    """A connection in the rare moment its file is locked against readers (a WAL reset or
    recovery by another connection): every statement fails with SQLITE_BUSY at once."""

    def execute(self, *args: object) -> None:
        busy = sqlite3.OperationalError("database is locked")
        busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
        raise busy


async def test_one_resource_is_read_on_the_loop_and_on_the_reader_thread_if_the_file_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GET of one resource reads on the event loop's thread: it answers while the reader
    thread is busy with something else. When the file is locked against readers, the read
    on the loop gives way to the reader thread, which answers once it is free."""
    store = SqliteZoneStore(ZoneEngine(tmp_path / "zone.db"))
    gate = threading.Event()
    try:
        await store.apply_batch(dbatch([inc_put(mk(MESH), 1), inc_put(mk(S1), 2)], 2), GSID, T0)
        busy = asyncio.ensure_future(store._threads.read(gate.wait, 10))
        row = await asyncio.wait_for(store.get(S1), 5)
        assert row is not None and row.resource.key == S1 and row.origin == "global"
        assert await store.get(G1) is None
        assert not busy.done()  # read without the reader thread
        monkeypatch.setattr(store._engine.db, "_now_conn", _LockedAgainstReaders)
        reading = asyncio.ensure_future(store.get(S1))
        await asyncio.sleep(0.2)
        assert not reading.done()  # waiting for the reader thread
        gate.set()
        await busy
        row = await reading
        assert row is not None and row.resource.data == b"v"
    finally:
        gate.set()
        store.close()


async def test_global_reads_one_resource_on_the_loop_too(tmp_path: Path) -> None:
    store = SqliteGlobalStore(GlobalEngine(tmp_path / "global.db"))
    gate = threading.Event()
    try:
        await store.put(mk(MESH), T0)
        await store.put(mk(S1, b"secret"), T0)
        busy = asyncio.ensure_future(store._threads.read(gate.wait, 10))
        row = await asyncio.wait_for(store.get(S1), 5)
        assert row is not None and row.resource.data == b"secret"
        assert not busy.done()
    finally:
        gate.set()
        store.close()


def test_read_now_turns_only_a_busy_file_into_reader_busy(gstore: GlobalEngine) -> None:
    with pytest.raises(ReaderBusy), gstore.db.read_now() as conn:
        _LockedAgainstReaders().execute("SELECT 1")
    with pytest.raises(sqlite3.OperationalError, match="no such table"), gstore.db.read_now() as c:
        c.execute("SELECT * FROM no_such_table")
    with gstore.db.read_now() as conn:  # the connection that answers is a working one
        assert conn.execute("SELECT count(*) FROM resources").fetchone() == (0,)


def _wal_frames(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of them already copied into the file), as a passive
    checkpoint of nothing new reports them."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        while True:  # busy while the store's own thread checkpoints
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy:
                return frames, copied
            time.sleep(0.01)
    finally:
        conn.close()


def test_checkpoints_are_made_on_a_thread_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writers' commits leave copying the WAL into the file to the store's checkpoint
    thread (SQLite's own checkpoint, run by the commit that fills the WAL, took up to 27 ms
    where a commit takes 0.2): with the writers' automatic checkpoint out of the way, the
    thread alone copies what they committed. Closing the store ends the thread."""
    import kds.store.sqlite._checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(checkpoint, "PENDING_FRAMES", 1)
    engine = ZoneEngine(tmp_path / "z.db")
    for c in engine.db.thread_conns():
        c.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(12):
        engine.put(mk(MESH if i == 0 else Key(Kind.SECRET, "default", f"s{i}")), T0)
    deadline = time.monotonic() + 10
    while engine.db.checkpointer.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.db.checkpointer.runs >= 2
    frames, copied = _wal_frames(tmp_path / "z.db")
    assert frames > 0 and copied > 0
    assert any(t.name == "sqlite-checkpoint" for t in threading.enumerate())
    engine.close()
    assert not any(t.name == "sqlite-checkpoint" for t in threading.enumerate())


def _steady_writes(engine: ZoneEngine, commits: int) -> None:
    """Commits of a page or more each, with the short pause between them that writes coming
    over a network have (a checkpoint waiting for the writer gets its turn then)."""
    value = "v" * 3000
    for i in range(commits):
        with engine.db.write(durable=False) as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"k{i % 50}", value))
        time.sleep(0.0002)


def _commit_rows(engine: ZoneEngine, commits: int, rows: int, value_bytes: int) -> None:
    value = "v" * value_bytes
    for i in range(commits):
        with engine.db.write(durable=False) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(f"k{(i * rows + j) % 50}", value) for j in range(rows)],
            )
        time.sleep(0.001)  # writes coming over a network, paced


def _settled(cp: Any) -> None:
    """Wait for the checkpoint thread to finish what it was woken for."""
    deadline = time.monotonic() + 10
    seen = -1
    while time.monotonic() < deadline:
        now = cp.runs + cp.skipped
        if now == seen and not cp.asked():
            return
        seen = now
        time.sleep(0.05)


def test_a_checkpoint_is_made_only_when_enough_pages_wait_to_be_copied(tmp_path: Path) -> None:
    """Each checkpoint syncs the database file. Transactions of a page or two (a zone's
    one-change batches) leave too little to copy at most of the thread's looks, every
    CHECKPOINT_EVERY transactions, so it skips them; transactions of many pages have one at
    each look, as before. What the thread reads from the WAL index agrees with SQLite's own
    count."""
    engine = ZoneEngine(tmp_path / "z.db")
    for c in engine.db.thread_conns():
        c.execute("PRAGMA wal_autocheckpoint=0")
    cp = engine.db.checkpointer
    _commit_rows(engine, 10 * CHECKPOINT_EVERY, rows=1, value_bytes=10)
    _settled(cp)
    looks = cp.runs + cp.skipped
    assert looks >= 8
    assert cp.runs <= looks // 2, (cp.runs, cp.skipped)
    pending = cp.pending()
    assert 0 < pending < PENDING_FRAMES + 3 * CHECKPOINT_EVERY
    check = sqlite3.connect(tmp_path / "z.db", isolation_level=None)
    _, frames, copied = check.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames - copied == 0 and cp.pending() == 0  # it copied what the index said waited
    check.close()
    runs, skipped = cp.runs, cp.skipped
    _commit_rows(engine, 4 * CHECKPOINT_EVERY, rows=12, value_bytes=3000)
    _settled(cp)
    assert cp.runs - runs >= 3 and cp.skipped == skipped, (cp.runs, cp.skipped)
    engine.close()


# Whether another process can lock byte 128 of a WAL index exclusively: SQLite's unix VFS
# "dead man switch", which every connection holds shared while it is open. A process that
# gets it takes itself for the store's first user and truncates and rebuilds the index.
_DMS_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
except OSError:
    print("held")
else:
    print("free")
"""


def _dms(shm: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-c", _DMS_PROBE, str(shm)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_reading_the_wal_index_leaves_sqlites_locks_in_place(tmp_path: Path) -> None:
    """The checkpoint thread reads the WAL index (the -shm file) to decide whether to make a
    checkpoint. Closing any descriptor of that file drops every POSIX lock the process holds
    on it, SQLite's included; another process opening the store then rebuilt the index under
    the daemon's connections, which died of SIGBUS. After many reads, another process still
    finds the store in use."""
    engine = ZoneEngine(tmp_path / "z.db")
    _commit_rows(engine, 3 * CHECKPOINT_EVERY, rows=1, value_bytes=10)
    cp = engine.db.checkpointer
    _settled(cp)
    assert cp.runs + cp.skipped >= 2  # the thread looked, reading the index each time
    for _ in range(5):
        assert cp.pending() >= 0
    shm = Path(f"{tmp_path / 'z.db'}-shm")
    assert _dms(shm) == "held"
    engine.close()
    assert not shm.exists()  # the last connection to close took the index with it
    unused = tmp_path / "unused-shm"
    unused.write_bytes(bytes(256))
    assert _dms(unused) == "free"  # the probe can tell


def test_the_wal_stays_bounded_under_steady_writes(tmp_path: Path) -> None:
    """A passive checkpoint under steady writes never lets the WAL start over; SQLite's own
    checkpoint, left on, still does (at about 1,000 pages; later when it meets the thread's
    checkpoint under way): 4,000 commits of a page or more each stay within a few MB."""
    engine = ZoneEngine(tmp_path / "z.db")
    _steady_writes(engine, 4000)
    assert (tmp_path / "z.db-wal").stat().st_size < 12 * 1024 * 1024
    assert engine.db.checkpointer.runs > 0
    engine.close()


def test_the_checkpoint_thread_alone_starts_the_wal_over(tmp_path: Path) -> None:
    """When every writer's own checkpoint finds the thread's under way (a loaded machine, a
    slow disk), the WAL would grow for as long as writes keep coming (78-141 MiB over 6,000
    such commits, the writers' checkpoint turned off): the thread then restarts it itself, so it stays
    near RESTART_FRAMES pages."""
    engine = ZoneEngine(tmp_path / "z.db")
    for c in engine.db.thread_conns():
        c.execute("PRAGMA wal_autocheckpoint=0")
    _steady_writes(engine, 4000)
    assert engine.db.checkpointer.restarts > 0
    assert (tmp_path / "z.db-wal").stat().st_size < 12 * 1024 * 1024
    engine.close()


def test_the_wal_is_cut_back_after_a_large_transaction(tmp_path: Path) -> None:
    """A transaction larger than the WAL's usual size (a big apply) grows the file; once the
    WAL starts over it is cut back to WAL_SIZE_LIMIT instead of keeping that disk."""
    from kds.store.sqlite._db import WAL_SIZE_LIMIT

    engine = ZoneEngine(tmp_path / "z.db")
    wal = tmp_path / "z.db-wal"
    value = "v" * 3000
    with engine.db.write(durable=False) as conn:
        for i in range(8000):
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"big{i}", value))
    grown = wal.stat().st_size
    assert grown > WAL_SIZE_LIMIT + 4 * 1024 * 1024
    for i in range(200):
        with engine.db.write(durable=False) as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"k{i % 5}", "x"))
    assert wal.stat().st_size <= WAL_SIZE_LIMIT, (grown, wal.stat().st_size)
    engine.close()


def test_emptying_the_wal_after_resealing_waits_out_the_checkpoint_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-sealing empties the WAL so that no plaintext page lingers there; a checkpoint the
    store's thread has under way makes SQLite answer busy, and the store asks again rather
    than leave the pages."""
    engine = ZoneEngine(tmp_path / "z.db")
    answers = iter([(1, -1, -1), (1, -1, -1), (0, 0, 0)])
    asked: list[str] = []

    class Conn:
        def execute(self, sql: str) -> Any:
            asked.append(sql)
            return type("Cursor", (), {"fetchone": lambda _self: next(answers)})()

    monkeypatch.setattr(engine.db, "conn", lambda: Conn())
    engine.db.after_reseal()
    assert asked == ["PRAGMA wal_checkpoint(TRUNCATE)"] * 3
    monkeypatch.undo()
    engine.close()


def test_the_wal_is_not_restarted_under_a_long_read(tmp_path: Path) -> None:
    """While a reader holds an older snapshot (a long read, such as a snapshot's), a restart
    would wait for it and hold every writer up with it: the thread does not try one then, and
    does once the reader is gone."""
    engine = ZoneEngine(tmp_path / "z.db")
    for c in engine.db.thread_conns():
        c.execute("PRAGMA wal_autocheckpoint=0")
    _steady_writes(engine, 10)
    reader = sqlite3.connect(tmp_path / "z.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM meta").fetchone()  # holds its snapshot from here
    _steady_writes(engine, 1500)
    assert engine.db.checkpointer.restarts_tried == 0
    reader.execute("COMMIT")
    reader.close()
    _steady_writes(engine, 1500)
    assert engine.db.checkpointer.restarts > 0
    engine.close()


async def test_closing_the_store_waits_for_a_read_in_progress(tmp_path: Path) -> None:
    """Closing closes every thread's connection: not under a query still running on the
    reader thread (a snapshot read for a stream that had just ended crashed the process)."""
    engine = GlobalEngine(tmp_path / "global.db")
    store = SqliteGlobalStore(engine)
    started = threading.Event()

    def slow_read() -> int:
        with engine.db.read() as conn:
            started.set()
            time.sleep(0.3)
            return int(conn.execute("SELECT 1").fetchone()[0])

    read = asyncio.ensure_future(store._threads.read(slow_read))
    await asyncio.to_thread(started.wait, 5)
    store.close()
    assert await read == 1
