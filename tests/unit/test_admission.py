"""Turns (kds.protocol.admission): at most the limit held at once, the rest served in order."""

from __future__ import annotations

import pytest

from kds.protocol.admission import Turns


def test_turns_are_granted_up_to_the_limit_then_in_the_order_asked() -> None:
    """The first ``limit`` askers hold a turn; the others wait and are granted one each as
    holders leave, first asked first served."""
    turns: Turns[str] = Turns(2)
    assert [turns.ask(w) for w in "abcde"] == [True, True, False, False, False]
    assert (turns.holding, turns.waiting) == (2, 3)
    assert turns.leave("b") == ["c"]
    assert turns.holds("c") and not turns.holds("b")
    assert turns.leave("a") == ["d"]
    assert turns.leave("c") == ["e"]
    assert (turns.holding, turns.waiting) == (2, 0)
    assert turns.leave("d") == [] and turns.leave("e") == []
    assert (turns.holding, turns.waiting) == (0, 0)


def test_a_waiter_that_leaves_the_line_is_never_granted() -> None:
    """A stream that ends while waiting leaves the line; the one behind it moves up."""
    turns: Turns[str] = Turns(1)
    turns.ask("a")
    turns.ask("b")
    turns.ask("c")
    assert turns.leave("b") == []
    assert turns.waiting == 1
    assert turns.leave("a") == ["c"]
    assert turns.leave("never-asked") == []


def test_a_newcomer_does_not_jump_the_line() -> None:
    """While anyone waits, a new asker queues even if a turn is free at that instant (the
    free turn is already promised to the first in line)."""
    turns: Turns[int] = Turns(1)
    assert turns.ask(1) and not turns.ask(2)
    assert turns.leave(1) == [2]
    assert not turns.ask(3)
    assert turns.leave(2) == [3]


def test_a_larger_limit_grants_waiters_at_once_and_a_smaller_one_takes_nothing_back() -> None:
    turns: Turns[str] = Turns(1)
    for w in "abcd":
        turns.ask(w)
    assert turns.set_limit(3) == ["b", "c"]
    assert turns.set_limit(1) == []
    assert turns.holding == 3  # held turns are kept until given back
    assert turns.leave("a") == [] and turns.leave("b") == []
    assert turns.leave("c") == ["d"]


def test_bad_limits_and_asking_twice_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Turns(0)
    turns: Turns[str] = Turns(1)
    with pytest.raises(ValueError, match="at least 1"):
        turns.set_limit(0)
    turns.ask("a")
    turns.ask("b")
    for who in "ab":
        with pytest.raises(ValueError, match="twice"):
            turns.ask(who)
