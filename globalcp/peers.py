"""Several global instances on one PostgreSQL store: each kept in step with what the others
commit.

Every instance accepts API writes and serves sync streams. Its own commits reach its hub
through the store's ``on_commit`` hook; the others' arrive here. The store notifies every
instance when a write commits (LISTEN/NOTIFY, kds.store.postgres._listen); on each wake-up,
and at least every ``fallback`` seconds in case a notification was lost, ``Peers`` reads the
change log past its hub's head, up to the store's head (always a transaction's end), and
publishes those records to its hub, which wakes the zones' streams. Records the hub has
already are ignored, and a range is published in one call, so the hub's head never stops
inside another instance's transaction.

Signing keys and token revocations live in the store; the instance that removes a key or
revokes a token ends its own streams at once, and the others, told by the same wake-ups,
re-read them and end the streams they hold that the key or token authenticated.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from globalcp.hub import Hub
from globalcp.tokens import ZoneTokens
from kds.errors import StoreError
from kds.store.postgres import PgGlobalStore

__all__ = ["Peers"]

log = structlog.get_logger("globalcp.peers")


class Peers:
    def __init__(
        self,
        store: PgGlobalStore,
        hub: Hub,
        tokens: ZoneTokens | None,
        end_streams: Callable[..., int],
        fallback: float = 1.0,
    ):
        self.store = store
        self.hub = hub
        self.tokens = tokens
        self.end_streams = end_streams
        self.fallback = fallback
        self.caught_up = 0  # records published from other instances' commits

    async def run(self) -> None:
        await self.store.follow(self.on_event, self.fallback)

    async def on_event(self, what: str) -> None:
        """``what`` changed (``""``: anything may have: re-read everything followed)."""
        try:
            if what in ("", "change"):
                await self.catch_up()
            if what in ("", "secrets") and self.tokens is not None:
                await self.reload_tokens(self.tokens)
        except StoreError as e:  # the store is away: the next wake-up or fallback retries
            log.warning("cannot follow the other global instances", error=str(e))

    async def catch_up(self) -> None:
        head = await self.store.head()
        if head <= self.hub.head:
            return
        floor = await self.store.log_floor()
        if floor > self.hub.head:
            log.warning(
                "the change log moved past this instance's head: zones behind it take a snapshot",
                head=head,
                log_floor=floor,
                was=self.hub.head,
            )
            self.hub.jump(head, floor)
            return
        records = await self.store.changes_after(self.hub.head, head)
        before = self.hub.head
        self.hub.publish_many(records)
        self.caught_up += max(0, self.hub.head - before)

    async def reload_tokens(self, tokens: ZoneTokens) -> None:
        removed, revoked = await tokens.reload()
        for name in sorted(removed):
            ended = self.end_streams(
                f"zone token signing key {name} was removed; generate a new token",
                key_name=name,
            )
            log.warning("signing key removed on another instance", key=name, streams_ended=ended)
        for token_id in sorted(revoked):
            ended = self.end_streams(f"zone token {token_id} has been revoked", token_id=token_id)
            if ended:
                log.warning(
                    "zone token revoked on another instance", token_id=token_id, streams_ended=ended
                )
