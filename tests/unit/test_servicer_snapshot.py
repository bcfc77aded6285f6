"""Global shares one snapshot, and one plan per range, among the streams that need them."""

from __future__ import annotations

import asyncio
import gc
import os
from collections import Counter
from pathlib import Path

import pytest

from globalcp import snapshot_plan
from globalcp.hub import Hub
from globalcp.send_plans import RANGE_PLANS_KEPT
from globalcp.servicer import SyncServicer
from globalcp.zones import ZoneTracker
from kds import wire
from kds._pb import sync_pb2 as pb
from kds.model import Kind, Resource
from kds.protocol.session import SendRange
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore


def _servicer(tmp_path: Path) -> tuple[SyncServicer, SqliteGlobalStore, list[int]]:
    sync = GlobalEngine(tmp_path / "g.db")
    sync.put(Resource(Kind.MESH, "default"), "2026-11-29T00:00:00.000Z")
    calls: list[int] = []
    real = sync.snapshot_units

    def counting(take):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(take)

    sync.snapshot_units = counting  # type: ignore[method-assign]
    store = SqliteGlobalStore(sync)
    hub = Hub(sync.head(), sync.log_floor(), 100)
    servicer = SyncServicer(
        store,
        hub,
        ZoneTracker(store, hub),
        tokens=None,
        instance_id="g",
        software_version="test",
        max_unacked=2,
        max_message_bytes=1 << 20,
        heartbeat_interval=1.0,
    )
    return servicer, store, calls


async def test_concurrent_snapshot_requests_share_one_read(tmp_path: Path) -> None:
    """Three streams asking at once get the same object from a single store read."""
    servicer, store, calls = _servicer(tmp_path)
    try:
        snaps = await asyncio.gather(*(servicer.plans.snapshot() for _ in range(3)))
        assert calls == [1]
        assert snaps[0] is snaps[1] is snaps[2]
        again = await servicer.plans.snapshot()  # still held by a stream: reused
        assert again is snaps[0] and calls == [1]
    finally:
        store.close()


async def test_snapshot_is_read_again_when_stale_or_released(tmp_path: Path) -> None:
    """A snapshot older than the head, or no longer held by any stream, is not reused."""
    servicer, store, calls = _servicer(tmp_path)
    try:
        first = await servicer.plans.snapshot()
        servicer.hub.head += 1  # a newer write was published
        second = await servicer.plans.snapshot()
        assert calls == [1, 1] and second is not first
        del first, second
        gc.collect()
        await servicer.plans.snapshot()
        assert calls == [1, 1, 1]
    finally:
        store.close()


async def test_a_range_is_coalesced_and_packed_once_for_every_stream(tmp_path: Path) -> None:
    """Zones in step ask for the same ranges: the plan is made once and shared; the oldest
    plans are dropped past RANGE_PLANS_KEPT; a range that left the change log is None."""
    servicer, store, _ = _servicer(tmp_path)
    try:
        for i in range(5):
            await store.put(
                Resource(Kind.SECRET, f"s{i}", "default", data=b"v"), "2026-11-29T00:00:00Z"
            )
        head = await store.head()
        first = await servicer.plans.range_plan(SendRange(head - 5, head))
        assert first is not None and first.changes == 5 and not first.split_unit
        assert [r.key.name for p in first.parts for r in p.records] == [f"s{i}" for i in range(5)]
        assert await servicer.plans.range_plan(SendRange(head - 5, head)) is first
        for i in range(RANGE_PLANS_KEPT):
            await servicer.plans.range_plan(SendRange(head - 4, head - 4 + (i % 4) + 1))
            await servicer.plans.range_plan(SendRange(head - 3 - (i % 2), head))
        assert len(servicer.plans._range_plans) <= RANGE_PLANS_KEPT
        assert await servicer.plans.range_plan(SendRange(-10, head)) is None
    finally:
        store.close()


async def _forty_secrets_in_parts(servicer: SyncServicer, store: SqliteGlobalStore) -> None:
    """40 secrets of 4,000 bytes in the store, and messages small enough that a snapshot of
    them is several parts."""
    for i in range(40):
        await store.put(
            Resource(Kind.SECRET, f"s{i}", "default", data=b"v" * 4000),
            "2026-11-29T00:00:00Z",
        )
    servicer.hub.head = await store.head()
    servicer.plans.max_message_bytes = 64 * 1024


async def test_a_snapshot_is_held_as_framed_parts_that_decode_to_every_resource(
    tmp_path: Path,
) -> None:
    """The shared snapshot keeps each part as one framed body: a batch built from it decodes
    to every resource at its version, and a part's keys and kinds are read back from it."""
    servicer, store, _ = _servicer(tmp_path)
    try:
        await _forty_secrets_in_parts(servicer, store)
        snap = await servicer.plans.snapshot()
        assert len(snap.parts) > 1 and snap.resources == 41
        assert [p.final for p in snap.parts] == [False] * (len(snap.parts) - 1) + [True]
        seen = []
        for part in snap.parts:
            data = wire.assemble_batch(
                seq=1,
                from_revision=0,
                revision=snap.revision,
                snapshot=True,
                final=part.final,
                head_revision=snap.revision,
                framed_changes=(part.body,),
            )
            batch, rejected = wire.decode_batch(pb.GlobalMessage.FromString(data).batch)
            assert rejected == []
            keys = [c.key for c in batch.changes if c.key is not None]
            assert len(keys) == len(batch.changes)
            assert list(part.sent_keys()) == keys and len(part.sent_keys()) == len(keys)
            assert part.kind_counts == dict(Counter(str(k.kind) for k in keys))
            seen += [(c.resource.name, c.resource.version) for c in batch.changes if c.resource]
        rows = {r.resource.name: r.resource.version for r in await store.list_rows(Kind.SECRET)}
        assert {n: v for n, v in seen if n != "default"} == rows
    finally:
        store.close()


async def test_snapshot_parts_live_in_a_spill_file_or_in_memory_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts' bodies are written to an unlinked file in the spill directory and read back
    as each is sent (off global's heap); a write that fails (a full disk) keeps that part and
    the rest in memory, and every part still reads back whole."""
    servicer, store, _ = _servicer(tmp_path)
    try:
        await _forty_secrets_in_parts(servicer, store)
        servicer.plans.spill_dir = tmp_path
        spilled = await servicer.plans.snapshot()
        assert all(isinstance(p.where, snapshot_plan._Spill) for p in spilled.parts)
        bodies = [p.body for p in spilled.parts]
        del spilled
        gc.collect()

        real_add, writes = snapshot_plan._Spill.add, [0]

        def add(self: snapshot_plan._Spill, body: bytes) -> tuple[int, int]:
            writes[0] += 1
            if writes[0] > 2:
                raise OSError(28, "No space left on device")
            return real_add(self, body)

        monkeypatch.setattr(snapshot_plan._Spill, "add", add)
        servicer.hub.head += 1  # a fresh read
        full = await servicer.plans.snapshot()
        kinds = [type(p.where) for p in full.parts]
        assert kinds[:2] == [snapshot_plan._Spill] * 2
        assert set(kinds[2:]) == {snapshot_plan._Kept}
        assert [p.body for p in full.parts] == bodies
    finally:
        store.close()


def test_the_spill_file_holds_no_secret_value_in_the_clear(tmp_path: Path) -> None:
    """The bodies carry secret values; on disk they are sealed with a key held only in
    memory, and a body changed on disk is refused, not sent."""
    spill = snapshot_plan._Spill(tmp_path)
    value = b"s3cret-value-" * 100
    first = spill.add(b"head" + value)
    second = spill.add(value + b"tail")
    raw = os.pread(spill._file.fileno(), 1 << 20, 0)
    assert value not in raw and b"s3cret" not in raw
    assert spill.read(*first) == b"head" + value and spill.read(*second) == value + b"tail"
    os.pwrite(spill._file.fileno(), b"X", second[0] + 5)
    with pytest.raises(OSError, match="was changed"):
        spill.read(*second)
