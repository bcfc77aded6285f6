"""A zone's answers to checks (zonecp.check_answers): a check that starts soon after the last
one, with no batch applied since, is answered from the tree already read, so a global that
starts a check with every query cannot make the zone read its whole store each time; a batch
applied, or the time passed, makes the next check read the rows again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kds.model import Key, Kind
from kds.protocol.anti_entropy import GlobalCheck, Query
from kds.protocol.digest_tree import TreeBuilder
from kds.protocol.zone_session import ZoneSession
from zonecp import check_answers
from zonecp.check_answers import CheckAnswers
from zonecp.sync_status import ZoneSyncStatus

LEAVES = [(Key(Kind.SECRET, "default", f"s{i}"), bytes([i]) * 16) for i in range(50)]


class _Store:
    """The one read CheckAnswers makes, counted."""

    def __init__(self) -> None:
        self.reads = 0

    async def sync_leaves_into(self, take: Callable[[Key, bytes], None]) -> int:
        self.reads += 1
        for k, d in LEAVES:
            take(k, d)
        return 7


def _query(check: int) -> Query:
    b = TreeBuilder()
    for k, d in LEAVES:
        b.add(k, d)
    return GlobalCheck(check, 7, b.build()).first_query()


def _answers() -> tuple[CheckAnswers, _Store]:
    session = ZoneSession(zone="z", instance_id="z-1", software_version="1", max_message_bytes=4096)
    store = _Store()
    return CheckAnswers(store, ZoneSyncStatus(session)), store  # type: ignore[arg-type]


async def test_checks_in_a_row_read_the_store_once() -> None:
    answers, store = _answers()
    for check in range(1, 201):
        ans = await answers.answer(_query(check))
        assert ans.check == check and ans.revision == 7 and not ans.differ  # equal
    assert store.reads == 1
    assert answers.status.checks == 200  # each is still a check the zone answered


async def test_a_batch_applied_since_means_a_new_read() -> None:
    answers, store = _answers()
    await answers.answer(_query(1))
    answers.applying()
    await answers.answer(_query(2))
    assert store.reads == 2
    await answers.answer(_query(3))
    assert store.reads == 2  # nothing applied since the second read


async def test_the_tree_is_read_again_and_let_go_after_the_reuse_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(check_answers, "REUSE_S", 0.05)
    answers, store = _answers()
    await answers.answer(_query(1))
    assert answers.held is not None
    await asyncio.sleep(0.1)
    assert answers.held is None  # let go: the memory is given back between checks
    await answers.answer(_query(2))
    assert store.reads == 2


async def test_a_stream_end_lets_go_of_the_tree() -> None:
    answers, store = _answers()
    await answers.answer(_query(1))
    answers.reset()
    assert answers.held is None
    await answers.answer(_query(2))
    assert store.reads == 2
