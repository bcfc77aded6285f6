"""A zone's side of anti-entropy: its answers to global's digest queries (the protocol:
proto/kds/v1/sync.proto, "Anti-entropy"; the pure rules: kds.protocol.anti_entropy)."""

from __future__ import annotations

import asyncio
import time

from kds import memory
from kds.protocol.anti_entropy import Answer, Query, answer, last_round
from kds.protocol.digest_tree import DigestTree, TreeBuilder
from kds.store import ZoneStore
from zonecp.sync_status import ZoneSyncStatus

__all__ = ["CheckAnswers"]


class CheckAnswers:
    """The answers of one zone. Its tree is built when a check's first query arrives (every
    batch up to the check's revision was applied before it) and kept for the check's later
    rounds while batches keep being applied; after the last round it is let go, not kept
    until the next check minutes later (about 57 bytes per synced resource with a
    9-character name: 5.7 MB for 100,000 secrets), and the daemon's memory keeper gives it
    back."""

    def __init__(self, store: ZoneStore, status: ZoneSyncStatus):
        self.store = store
        self.status = status
        self.held: tuple[int, int, DigestTree] | None = None  # (check, revision, tree)

    async def answer(self, query: Query) -> Answer:
        st = self.status
        if self.held is None or self.held[0] != query.check:
            # Leaves go into the builder as the rows are read: no key or list per leaf.
            builder = TreeBuilder()
            revision = await self.store.sync_leaves_into(builder.add)
            tree = await asyncio.to_thread(builder.build)
            self.held = (query.check, revision, tree)
            st.checks += 1
            st.last_check_at = time.time()
            st.last_check_revision = revision
            st.last_check_differed = 0
        _, revision, tree = self.held
        ans = await asyncio.to_thread(answer, tree, query, revision)
        st.last_check_differed += sum(1 for d in ans.differ if d.listed)
        if last_round(ans):
            self.held = None  # nothing more will be asked of this check
            memory.freed()  # the keeper looks within seconds, long after this frame is gone
        return ans
