"""The byte budget a zone's stream is read against (kds.protocol.read_budget): a burst, then
a steady rate, each message charged its bytes and a fixed cost; over it, the reader waits."""

from __future__ import annotations

import pytest

from kds.protocol.read_budget import BURST, MESSAGE_COST, RATE, ReadBudget

MIB = 1024 * 1024


def test_a_new_stream_reads_a_full_size_message_and_acks_beside_it_at_once() -> None:
    b = ReadBudget(0.0)
    assert b.charge(4 * MIB - 1, 0.0) == 0.0
    for _ in range(60):  # the acks of a window of batches
        assert b.charge(20, 0.0) == 0.0


def test_over_the_budget_the_reader_waits_until_it_is_paid_back() -> None:
    b = ReadBudget(0.0, rate=1000, burst=2000, message_cost=0)
    assert b.charge(1500, 0.0) == 0.0
    assert b.charge(1500, 0.0) == pytest.approx(1.0)  # 1,000 bytes owed at 1,000 a second
    # Read again once waited: the debt is paid, the new message is owed in full.
    assert b.charge(500, 1.0) == pytest.approx(0.5)
    # A quiet spell refills the bucket, never beyond its burst.
    b.charge(0, 100.0)
    assert b.available == 2000


def test_every_message_costs_at_least_the_fixed_cost() -> None:
    b = ReadBudget(0.0, rate=1000, burst=0, message_cost=100)
    assert b.charge(0, 0.0) == pytest.approx(0.1)
    # Tiny messages sent back to back are read at most rate / message_cost a second.
    read, now = 0, 0.0
    while now < 10.0:
        now += b.charge(1, now)
        read += 1
    assert 95 <= read <= 101


def test_a_flood_is_bounded_to_the_burst_and_the_rate_whatever_its_message_size() -> None:
    for size in (2, 1024, 64 * 1024, 4 * MIB - 1):
        b = ReadBudget(0.0)
        now = got = 0.0
        while now < 60.0:  # a zone sending as fast as it is read, for a minute
            now += b.charge(size, now)
            got += size + MESSAGE_COST
        # What was read by then: the burst, a minute at the rate, and the one message read
        # last (whose wait falls after the minute).
        assert got <= BURST + 60 * RATE + size + MESSAGE_COST, size


def test_a_clock_that_steps_back_refills_nothing() -> None:
    b = ReadBudget(10.0, rate=1000, burst=1000, message_cost=0)
    b.charge(1000, 10.0)
    assert b.charge(500, 5.0) == pytest.approx(0.5)
    assert b.charge(0, 10.5) == pytest.approx(0.0)


def test_a_budget_that_could_never_refill_is_refused() -> None:
    with pytest.raises(ValueError):
        ReadBudget(0.0, rate=0)
