"""kds.memory: freed memory handed back to the system after a heavy phase, where glibc is."""

from __future__ import annotations

import asyncio
import platform
import threading

import pytest

from kds import memory
from kds.runtime import keep_memory_trimmed


def test_release_is_available_with_glibc() -> None:
    """On glibc (the daemons' platform) malloc_trim is found; elsewhere release is a no-op."""
    assert memory.available() == (platform.libc_ver()[0] == "glibc")


def test_release_returns_freed_memory_and_keeps_live_data() -> None:
    """A large transient allocation freed, then released: nothing live is touched."""
    if not memory.available():
        assert memory.release() is False
        return
    kept = [bytes([i % 256]) * 1000 for i in range(1000)]
    transient = [bytearray(4096) for _ in range(20_000)]
    del transient
    assert isinstance(memory.release(), bool)
    assert all(b == bytes([i % 256]) * 1000 for i, b in enumerate(kept))


def test_release_without_glibc_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_trim", None)
    assert memory.available() is False
    assert memory.release() is False


def test_a_release_asked_for_during_another_walks_the_heaps_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory freed while another thread trims may lie where that trim already walked: the
    trimming thread trims once more for each such request, and the second caller does not
    wait."""
    calls: list[str] = []
    started, proceed = threading.Event(), threading.Event()

    def trim(pad: int) -> int:
        calls.append("trim")
        if len(calls) == 1:
            started.set()
            assert proceed.wait(5)
        return 1

    monkeypatch.setattr(memory, "_trim", trim)
    first = threading.Thread(target=memory.release)
    first.start()
    assert started.wait(5)
    assert memory.release() is False  # another thread is trimming: noted, not waited for
    assert calls == ["trim"]
    proceed.set()
    first.join(5)
    assert calls == ["trim", "trim"]  # the first thread trimmed again for it
    assert memory.release() is True and calls == ["trim", "trim", "trim"]  # no request left


class _Process:
    """A resident size the test moves, and a release that gives back what it is told to."""

    def __init__(self, rss: int):
        self.rss = rss
        self.freed_by_release = 0
        self.releases = 0

    def read(self) -> int:
        return self.rss

    def release(self) -> bool:
        self.releases += 1
        self.rss -= self.freed_by_release
        self.freed_by_release = 0
        return True


MB = 1 << 20


@pytest.fixture(autouse=True)
def _no_noted_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """A free noted by another test in this process (a zone's check) asks nothing here."""
    monkeypatch.setattr(memory, "_freed", False)


def test_keeper_releases_only_when_resident_size_grew_past_the_slack() -> None:
    """Growth within the slack asks nothing; past it, one release, and the size after it is
    the new baseline, so live growth (more zones) costs one release in vain, not one per look."""
    p = _Process(100 * MB)
    k = memory.Keeper(slack=8 * MB, rss=p.read, releaser=p.release)
    p.rss += 8 * MB
    assert not k.due()
    p.rss += 12 * MB  # 20 MB over the baseline, 15 of them freed but held by the allocator
    p.freed_by_release = 15 * MB
    assert k.due()
    k.release()
    assert (p.releases, k.baseline) == (1, 105 * MB)
    assert not k.due()
    p.rss += 9 * MB  # live growth: one release in vain, then it is the baseline
    assert k.due()
    k.release()
    assert (p.releases, k.baseline) == (2, 114 * MB)
    assert not k.due()


def test_keeper_measures_growth_from_a_size_that_shrank_on_its_own() -> None:
    p = _Process(100 * MB)
    k = memory.Keeper(slack=8 * MB, rss=p.read, releaser=p.release)
    p.rss = 60 * MB
    assert not k.due() and k.baseline == 60 * MB
    p.rss = 70 * MB
    assert k.due()


def test_a_noted_free_asks_the_keeper_for_one_release() -> None:
    """Frees too many to release each (a zone's tree after every check) are noted; the
    keeper's next look releases once for all of them, however little the size grew."""
    p = _Process(100 * MB)
    k = memory.Keeper(slack=8 * MB, rss=p.read, releaser=p.release)
    assert not k.due()
    memory.freed()
    memory.freed()
    assert k.due()
    k.release()
    assert p.releases == 1 and not k.due()


def test_keeper_does_nothing_where_the_size_cannot_be_read() -> None:
    k = memory.Keeper(rss=lambda: None, releaser=lambda: True)
    assert not k.due()


def test_resident_bytes_reads_this_process() -> None:
    rss = memory.resident_bytes()
    if platform.system() != "Linux":
        assert rss is None
        return
    assert rss is not None and 1 * MB < rss < 4096 * MB


async def test_the_daemons_keeper_task_releases_when_due_and_stops_with_the_daemon() -> None:
    """kds.runtime.keep_memory_trimmed looks every interval, releases off the event loop
    only when the keeper says so, and returns once stop is set."""
    p = _Process(100 * MB)
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def release() -> bool:
        threads.append(threading.get_ident())
        return p.release()

    k = memory.Keeper(slack=8 * MB, rss=p.read, releaser=release)
    stop = asyncio.Event()
    task = asyncio.create_task(keep_memory_trimmed(stop, interval=0.01, keeper=k))
    await asyncio.sleep(0.05)
    assert p.releases == 0  # no growth: no release
    p.rss += 30 * MB
    p.freed_by_release = 25 * MB
    for _ in range(200):
        if p.releases:
            break
        await asyncio.sleep(0.01)
    assert p.releases == 1 and threads and threads[0] != loop_thread
    await asyncio.sleep(0.05)
    assert p.releases == 1  # back within the slack of the new baseline
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_the_keeper_task_ends_at_once_where_a_release_gives_nothing_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without glibc there is nothing to give back: no look at /proc every interval."""
    monkeypatch.setattr(memory, "_trim", None)
    await asyncio.wait_for(keep_memory_trimmed(asyncio.Event(), interval=60), 1)
