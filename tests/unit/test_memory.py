"""kds.memory: freed memory handed back to the system after a heavy phase, where glibc is."""

from __future__ import annotations

import platform
import threading

import pytest

from kds import memory


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
