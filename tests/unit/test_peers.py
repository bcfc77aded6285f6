"""globalcp.peers: an instance's hub follows what other instances sharing its PostgreSQL
store commit, whole transactions at a time, and jumps when the log no longer holds them."""

from __future__ import annotations

import uuid

from globalcp.hub import Hub
from globalcp.peers import Peers
from kds.model import Key, Kind
from kds.store import PgTarget, open_global_store
from kds.store.postgres import PgGlobalStore
from tests.pgserver import shared_server
from tests.unit.store_backends import MESH, T0, mk


async def test_the_hub_follows_the_other_instances_commits_and_jumps_past_a_pruned_log() -> None:
    target = PgTarget(shared_server().url, "p" + uuid.uuid4().hex[:12])
    writer = open_global_store(target, log_size=3)
    follower = open_global_store(target, log_size=3)
    assert isinstance(follower, PgGlobalStore)
    try:
        hub = Hub(await follower.head(), await follower.log_floor(), 3)
        peers = Peers(follower, hub, None, lambda *a, **k: 0)
        await writer.put_many([mk(MESH), mk(Key(Kind.GLOBAL_SECRET, "", "g"))], T0)
        woken = hub.subscribe()
        await peers.on_event("change")
        assert hub.head == 2 and woken.is_set()
        assert [r.revision for r in hub.cached_range(0, 2) or []] == [1, 2]
        for i in range(5):  # more than the log keeps while this instance is not following
            await writer.put(mk(Key(Kind.GLOBAL_SECRET, "", f"x{i}")), T0)
        await peers.on_event("")
        assert (hub.head, hub.log_floor) == (7, 4)
        assert hub.cached_range(4, 7) is None  # jumped: zones behind read the store or snapshot
    finally:
        writer.close()
        follower.close()
