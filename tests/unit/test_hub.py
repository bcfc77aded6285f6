"""Unit tests for globalcp.hub.Hub: head, log floor, wake-ups and the bounded record cache."""

from __future__ import annotations

import asyncio

from globalcp.hub import Hub
from kds.model import Key, Kind
from kds.protocol.records import ChangeRecord


def rec(revision: int, size: int = 10) -> ChangeRecord:
    key = Key(Kind.GLOBAL_SECRET, "", f"g{revision}")
    return ChangeRecord(revision, key, False, bytes([revision % 256]) * size)


def publish(hub: Hub, *revisions: int, size: int = 10) -> None:
    for r in revisions:
        hub.publish(rec(r, size))


def test_publish_in_order_moves_head_and_wakes_subscribers() -> None:
    """Each in-order publish moves the head and sets every subscriber's event."""
    hub = Hub(head=0, log_floor=0, log_size=100)
    a, b = hub.subscribe(), hub.subscribe()
    publish(hub, 1)
    assert hub.head == 1
    assert a.is_set() and b.is_set()
    a.clear()
    publish(hub, 2)
    assert hub.head == 2
    assert a.is_set()


def test_unsubscribed_event_is_not_woken() -> None:
    """After unsubscribe, a publish no longer sets the event."""
    hub = Hub(head=0, log_floor=0, log_size=100)
    ev = hub.subscribe()
    hub.unsubscribe(ev)
    publish(hub, 1)
    assert not ev.is_set()


def test_out_of_order_publish_holds_head_until_gap_fills() -> None:
    """Revision 3 before 2: the head stays at 1 (no wake-up) until 2 arrives, then jumps to 3."""
    hub = Hub(head=0, log_floor=0, log_size=100)
    ev = hub.subscribe()
    publish(hub, 1)
    ev.clear()
    publish(hub, 3)
    assert hub.head == 1
    assert not ev.is_set()
    publish(hub, 2)
    assert hub.head == 3
    assert ev.is_set()
    assert [r.revision for r in hub.cached_range(0, 3) or []] == [1, 2, 3]


def test_cached_range_past_the_head_is_none() -> None:
    """A range reaching past the head (or into a held-back record) is None, not a KeyError."""
    hub = Hub(head=0, log_floor=0, log_size=100)
    publish(hub, 1, 3)
    assert hub.cached_range(0, 3) is None
    assert hub.cached_range(0, 2) is None
    assert [r.revision for r in hub.cached_range(0, 1) or []] == [1]


def test_duplicates_are_ignored() -> None:
    """A revision published twice (before or after the head passed it) is kept once."""
    hub = Hub(head=0, log_floor=0, log_size=100)
    publish(hub, 1, 1, 3, 3)
    assert hub.head == 1
    ev = hub.subscribe()
    publish(hub, 1)
    assert not ev.is_set()
    publish(hub, 2)
    assert hub.head == 3
    assert [r.revision for r in hub.cached_range(0, 3) or []] == [1, 2, 3]


def test_publish_at_or_below_startup_head_is_ignored() -> None:
    """A hub started at the store's head ignores records it already counts."""
    hub = Hub(head=10, log_floor=4, log_size=100)
    ev = hub.subscribe()
    publish(hub, 9, 10)
    assert hub.head == 10
    assert not ev.is_set()
    assert hub.cached_range(9, 10) is None  # never cached: read from the store


def test_cached_range_returns_exact_records() -> None:
    """cached_range(after, upto) is exactly the records (after, upto], in order."""
    hub = Hub(head=0, log_floor=0, log_size=100)
    records = [rec(r) for r in range(1, 8)]
    for r in records:
        hub.publish(r)
    assert hub.cached_range(2, 5) == records[2:5]
    assert hub.cached_range(0, 7) == records
    assert hub.cached_range(5, 5) == []
    assert hub.cached_range(6, 5) == []


def test_cache_bounded_by_log_size_and_floor_follows_head() -> None:
    """The cache keeps the newest log_size records; log_floor is head - log_size."""
    hub = Hub(head=0, log_floor=0, log_size=3)
    publish(hub, 1, 2)
    assert hub.log_floor == 0
    publish(hub, 3, 4, 5)
    assert hub.head == 5
    assert hub.log_floor == 2
    assert [r.revision for r in hub.cached_range(2, 5) or []] == [3, 4, 5]
    assert hub.cached_range(1, 5) is None  # revision 2 is gone from the cache
    assert hub.cached_range(0, 5) is None


def test_log_floor_never_moves_back() -> None:
    """A hub started with a higher floor than head - log_size keeps that floor."""
    hub = Hub(head=10, log_floor=8, log_size=5)
    publish(hub, 11)
    assert hub.log_floor == 8
    publish(hub, 12, 13, 14)
    assert hub.log_floor == 9


def test_cache_bounded_by_bytes() -> None:
    """The cache drops its oldest records to stay within cache_bytes; the floor does not care."""
    # Room for two records of 100 bytes with their framed copies (2 x 202), not three.
    hub = Hub(head=0, log_floor=0, log_size=100, cache_bytes=500)
    publish(hub, 1, 2, 3, 4, 5, size=100)
    assert [r.revision for r in hub.cached_range(3, 5) or []] == [4, 5]
    assert hub.cached_range(2, 5) is None
    assert hub.log_floor == 0


def test_cache_bound_counts_the_framed_copy_of_each_record() -> None:
    """What the cache holds once its records are sent (each change and its framed copy, made
    on the first send and kept) stays within cache_bytes."""
    limit = 10_000
    hub = Hub(head=0, log_floor=0, log_size=1000, cache_bytes=limit)
    publish(hub, *range(1, 201), size=100)
    first = hub.head
    while hub.cached_range(first - 1, hub.head) is not None:
        first -= 1
    cached = hub.cached_range(first, hub.head) or []
    assert cached, "the newest records are cached"
    held = sum(len(r.change) + len(r.framed) for r in cached)  # framed: as a send makes it
    assert held <= limit


def test_cache_record_larger_than_budget_is_not_kept() -> None:
    """A single record over cache_bytes leaves the cache empty: ranges go to the store."""
    hub = Hub(head=0, log_floor=0, log_size=100, cache_bytes=50)
    publish(hub, 1, size=100)
    assert hub.head == 1
    assert hub.cached_range(0, 1) is None
    assert hub.cached_range(1, 1) == []


async def test_waiting_stream_wakes_on_publish() -> None:
    """A task waiting on its subscription event resumes when a change is published."""
    hub = Hub(head=0, log_floor=0, log_size=100)
    ev = hub.subscribe()

    async def stream() -> int:
        await ev.wait()
        return hub.head

    task = asyncio.create_task(stream())
    await asyncio.sleep(0)
    assert not task.done()
    publish(hub, 1)
    assert await asyncio.wait_for(task, 1) == 1


def test_publish_many_moves_head_over_a_whole_transaction_and_trims_the_cache() -> None:
    """A transaction's records arrive in one call: the head moves to the last of them, the
    cache keeps within its bounds, and subscribers are woken."""
    hub = Hub(head=0, log_floor=0, log_size=5)
    ev = hub.subscribe()
    hub.publish_many([rec(r) for r in range(1, 9)])
    assert hub.head == 8 and hub.log_floor == 3 and ev.is_set()
    assert hub.cached_range(3, 8) == [rec(r) for r in range(4, 9)]
    assert hub.cached_range(2, 8) is None
