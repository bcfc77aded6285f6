"""A zone token revoked, or its signing key removed, while its stream is being admitted
(verified, then waiting on the store before it is registered) still ends that stream:
a revocation in that gap found no stream to end, and the stream ran until the token expired."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest

from globalcp.gate import HELLOS_PER_ZONE
from globalcp.tokens import ZoneTokens
from kds.wire import ADMITTED_METADATA
from tests.unit.inprocess import CallAborted, FakeCall, resume_hello, running_pair


@pytest.mark.parametrize("withdraw", ["revoke the token", "remove its signing key"])
async def test_a_token_withdrawn_while_its_stream_is_admitted_ends_the_stream(
    tmp_path: Path, withdraw: str
) -> None:
    async with running_pair(tmp_path) as pair:
        tokens = ZoneTokens(pair.store, "kds-sync")
        await tokens.load()
        first_key = tokens.current_key
        token, info = await tokens.issue("zone-x", 3600, dt.datetime.now(dt.UTC))
        await tokens.rotate()  # a newer key, so the one that signed the token can go
        pair.servicer.tokens = tokens
        gate = asyncio.Event()
        chain_at = pair.store.chain_at

        async def held_chain_at(revision: int) -> Any:
            await gate.wait()  # the stream is verified, not yet registered
            return await chain_at(revision)

        pair.store.chain_at = held_chain_at  # type: ignore[method-assign]
        hello = resume_hello("zone-x", pair.store.store_id)
        context = FakeCall(token, hello)
        task = asyncio.create_task(pair.servicer.sync(None, context))
        for _ in range(100):
            if pair.store.chain_at is held_chain_at and not gate.is_set():
                await asyncio.sleep(0.01)
        if withdraw == "revoke the token":
            await tokens.revoke(info.token_id)
            assert pair.servicer.end_streams("revoked", token_id=info.token_id) == 0
        else:
            await tokens.remove_key(first_key)
            assert pair.servicer.end_streams("key removed", key_name=first_key) == 0
        gate.set()
        done, _ = await asyncio.wait([task], timeout=10)
        assert task in done, "the stream kept running"
        assert isinstance(task.exception(), CallAborted)  # retrieved: not logged when collected
        assert context.aborted is not None
        assert context.aborted[0] is grpc.StatusCode.PERMISSION_DENIED
        assert "zone-x" not in pair.servicer.links


class _Unread(FakeCall):
    """A call whose messages must not be read: a read fails the test."""

    async def read(self) -> Any:
        raise AssertionError("global read a message of a stream before checking its token")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
async def test_a_refused_token_ends_the_stream_before_a_message_is_read(
    tmp_path: Path, token: str
) -> None:
    """grpc holds the whole of a message a handler waits for: a hello read before the token
    let any client make global hold 4 MiB per stream (848 MB for 256 streams, from 76 MB)."""
    async with running_pair(tmp_path) as pair:
        tokens = ZoneTokens(pair.store, "kds-sync")
        await tokens.load()
        pair.servicer.tokens = tokens
        context = _Unread(token, b"")
        with pytest.raises(CallAborted):
            await pair.servicer.sync(None, context)
        assert context.aborted is not None
        assert context.aborted[0] is grpc.StatusCode.UNAUTHENTICATED
        assert context.headers is None  # refused with a status alone: no admitting headers


async def test_a_zone_s_token_has_at_most_its_streams_waiting_for_a_hello(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path) as pair:
        tokens = ZoneTokens(pair.store, "kds-sync")
        await tokens.load()
        token, _ = await tokens.issue("zone-x", 3600, dt.datetime.now(dt.UTC))
        pair.servicer.tokens = tokens
        waiting = [FakeCall(token, b"") for _ in range(HELLOS_PER_ZONE)]
        for c in waiting:
            c._messages.get_nowait()  # no hello: each waits for one
        tasks = [asyncio.create_task(pair.servicer.sync(None, c)) for c in waiting]
        await asyncio.sleep(0.1)
        # Admitted streams have their headers before their hello is read (the zone writes
        # its hello only after them); the one refused has none.
        assert all(c.headers == ((ADMITTED_METADATA, "1"),) for c in waiting)
        one_more = FakeCall(token, b"")
        with pytest.raises(CallAborted):
            await pair.servicer.sync(None, one_more)
        assert one_more.aborted == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"zone 'zone-x' has {HELLOS_PER_ZONE} streams waiting to send their hello",
        )
        assert one_more.headers is None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not pair.servicer.gate.awaiting_hello
