"""Global's anti-entropy tree is read and built once per head revision and shared by every
zone stream checked at it (globalcp.checks.GlobalTrees)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from globalcp.checks import GlobalTrees
from kds.model import Key, Kind, Resource
from kds.protocol.digest_tree import DigestTree, NodeId
from kds.store._rows import LOG_COLS, log_digest, set_meta
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

T0 = "2026-11-30T00:00:00.000Z"


def _count_full_reads(store: SqliteGlobalStore) -> list[int]:
    """A list that grows by one each time every row of ``store`` is read for a tree."""
    reads: list[int] = []
    real = store.sync_leaves_into

    async def counting(take):  # type: ignore[no-untyped-def]
        reads.append(1)
        return await real(take)

    store.sync_leaves_into = counting  # type: ignore[method-assign]
    return reads


async def test_streams_checked_at_one_revision_share_one_read(tmp_path: Path) -> None:
    engine = GlobalEngine(tmp_path / "g.db")
    engine.put(Resource(Kind.MESH, "default"), T0)
    engine.put(Resource(Kind.GLOBAL_SECRET, "admin-user-token", data=b"x"), T0)  # stays
    store = SqliteGlobalStore(engine)
    reads = _count_full_reads(store)
    trees = GlobalTrees(store)
    try:
        head = await store.head()
        a, b, c = await asyncio.gather(*(trees.at(head) for _ in range(3)))
        assert a is b is c and a is not None and reads == [1]
        assert len(a) == 1  # the Mesh; the system GlobalSecret is never a leaf
        assert await trees.at(head) is a and reads == [1]
        await store.put(Resource(Kind.GLOBAL_SECRET, "g", data=b"y"), T0)
        assert await trees.at(head) is a  # still the tree at that revision
        fresh = await trees.at(head + 1)
        assert fresh is not None and len(fresh) == 2 and reads == [1, 1]
        assert await trees.at(head) is None  # no longer held, and the store is past it
        assert reads == [1, 1]  # nothing written since: the tree held still serves
    finally:
        store.close()


async def test_a_moved_head_reads_only_the_rows_written_since(tmp_path: Path) -> None:
    """Once built, the tree follows the head by the keys the change log names: puts, a new
    mesh, deletes and a system GlobalSecret (never a leaf) give the tree built from every
    row; past half the tree's leaves, or past the log's reach, every row is read again."""
    engine = GlobalEngine(tmp_path / "g.db", log_size=30)
    engine.put(Resource(Kind.MESH, "default"), T0)
    for i in range(40):
        engine.put(Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"v"), T0)
    store = SqliteGlobalStore(engine)
    full_reads = _count_full_reads(store)
    trees = GlobalTrees(store)

    async def fresh() -> DigestTree:
        built = GlobalTrees(store)
        tree = await built.at(await store.head())
        assert tree is not None
        return tree

    try:
        assert await trees.at(await store.head()) is not None and full_reads == [1]
        await store.put(Resource(Kind.SECRET, "s3", mesh="default", data=b"new"), T0)
        await store.put(Resource(Kind.MESH, "other"), T0)
        await store.put(Resource(Kind.SECRET, "o1", mesh="other", data=b"x"), T0)
        await store.delete(Key(Kind.SECRET, "default", "s5"))
        await store.put(Resource(Kind.GLOBAL_SECRET, "admin-user-token", data=b"x"), T0)
        tree = await trees.at(await store.head())
        assert tree is not None and full_reads == [1]
        expected = await fresh()
        assert full_reads == [1, 1]
        assert tree.groups() == expected.groups() and len(tree) == len(expected)
        other = NodeId(Kind.SECRET, "other")
        assert list(tree.leaves(other)) == list(expected.leaves(other)) != []
        for i in range(25):  # more than half of the tree's leaves
            await store.put(Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"w"), T0)
        tree = await trees.at(await store.head())
        assert tree is not None and full_reads == [1, 1, 1]
        head = await store.head()
        assert tree.groups() == (await fresh()).groups()
        assert await store.sync_leaves_since(head - 31, 1000) is None  # past the log
        since = await store.sync_leaves_since(head - 3, 1000)
        assert since is not None and since.revision == head
        assert sorted(k.name for k, _ in since.leaves) == ["s22", "s23", "s24"]
        assert await store.sync_leaves_since(head - 3, 2) is None  # more than asked for
    finally:
        store.close()


def test_a_type_this_version_does_not_know_in_the_log_means_a_full_read(tmp_path: Path) -> None:
    """An instance of a newer version sharing the store may log a type this one does not
    know: the keys since cannot all be named, so the whole tree is read instead."""
    engine = GlobalEngine(tmp_path / "g.db")
    engine.put(Resource(Kind.MESH, "default"), T0)
    start = engine.head()
    values = (start + 1, "MeshTrafficPermission", "default", "p", 0, b"x", b"c" * 32, 0.0, "")
    with engine.db.write() as conn:
        conn.execute(
            f"INSERT INTO changelog ({LOG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (*values, log_digest(values)),
        )
        set_meta(conn, "head", start + 1)
    assert engine.sync_leaves_since(start, 10) is None
    assert engine.sync_leaves_since(start + 1, 10) is not None
    engine.close()
