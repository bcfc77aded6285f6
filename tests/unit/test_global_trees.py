"""Global's anti-entropy tree is read and built once per head revision and shared by every
zone stream checked at it (globalcp.checks.GlobalTrees)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from globalcp.checks import GlobalTrees
from kds import memory
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


async def test_the_tree_is_freed_once_no_check_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle global does not keep its tree between checks (minutes apart; 17 MB per
    100,000 secrets): freed when the last holder lets go, the memory given back, and read
    again for the next check."""
    engine = GlobalEngine(tmp_path / "g.db")
    engine.put(Resource(Kind.MESH, "default"), T0)
    store = SqliteGlobalStore(engine)
    released: list[int] = []
    monkeypatch.setattr(memory, "release", lambda: released.append(1) or True)
    trees = GlobalTrees(store)
    try:
        head = await store.head()
        tree = await trees.at(head)
        assert tree is not None and await trees.at(head) is tree
        after_build = len(released)  # the build gives back what it used
        gone = weakref.ref(tree)
        del tree
        await asyncio.sleep(0)  # the loop lets go of the futures that carried it
        gc.collect()
        assert gone() is None, "the tree outlived its last holder"
        await asyncio.sleep(0.1)  # the release runs on the executor
        assert len(released) == after_build + 1
        again = await trees.at(head)
        assert again is not None and len(again) == 1
    finally:
        store.close()
