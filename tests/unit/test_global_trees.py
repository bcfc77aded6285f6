"""Global's anti-entropy tree is read and built once per head revision and shared by every
zone stream checked at it (globalcp.checks.GlobalTrees)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from globalcp.checks import GlobalTrees
from kds.model import Kind, Resource
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

T0 = "2026-11-30T00:00:00.000Z"


async def test_streams_checked_at_one_revision_share_one_read(tmp_path: Path) -> None:
    engine = GlobalEngine(tmp_path / "g.db")
    engine.put(Resource(Kind.MESH, "default"), T0)
    engine.put(Resource(Kind.GLOBAL_SECRET, "admin-user-token", data=b"x"), T0)  # stays
    store = SqliteGlobalStore(engine)
    reads: list[int] = []
    real = store.sync_leaves_into

    async def counting(take):  # type: ignore[no-untyped-def]
        reads.append(1)
        return await real(take)

    store.sync_leaves_into = counting  # type: ignore[method-assign]
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
        assert reads == [1, 1, 1]
    finally:
        store.close()
