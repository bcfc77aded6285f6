"""Unit tests for the states of kds.protocol.session.GlobalSession: its transition table
admits the events of a well-behaved stream and refuses any other with ProtocolError."""

from __future__ import annotations

from itertools import pairwise

import pytest

from kds.errors import ProtocolError
from kds.protocol.session import (
    TRANSITIONS,
    Ack,
    GlobalSession,
    Hello,
    Mode,
    SendSnapshot,
    State,
)

STORE = "global-store-a"


def hello(store_id: str = STORE, revision: int = 0) -> Hello:
    return Hello("zone-1", "zone-1-x", 1, store_id, revision)


def resumed(revision: int, head: int) -> GlobalSession:
    s = GlobalSession(STORE, 2)
    assert s.on_hello(hello(revision=revision), head, 0, b"") is Mode.RESUME
    return s


def send(s: GlobalSession, revision: int) -> None:
    s.on_sent(s.next_seq(), revision, final=True)
    s.on_done()


def test_a_new_session_awaits_the_hello() -> None:
    """Before the hello the state is AWAIT_HELLO; a refused hello leaves it there."""
    s = GlobalSession(STORE, 2)
    assert s.state is State.AWAIT_HELLO
    with pytest.raises(ProtocolError, match="protocol version"):
        s.on_hello(Hello("zone-1", "zone-1-x", 2, STORE, 0), 0, 0)
    assert s.state is State.AWAIT_HELLO
    assert s.on_hello(hello(), 0, 0) is Mode.SNAPSHOT


def test_events_out_of_turn_are_refused_by_the_table() -> None:
    """Parts, done and a failed range outside a send, or an ack before hello, are refused;
    a refused event leaves the state as it was."""
    s = resumed(3, 3)
    assert s.state is State.IDLE
    with pytest.raises(ProtocolError, match="SENT is not allowed in state IDLE"):
        s.on_sent(s.next_seq(), 3, final=True)
    with pytest.raises(ProtocolError, match="DONE is not allowed in state IDLE"):
        s.on_done()
    with pytest.raises(ProtocolError, match="RANGE_FAILED is not allowed in state IDLE"):
        s.on_failed_range()
    assert s.state is State.IDLE and s.in_flight == 0
    with pytest.raises(ProtocolError, match="before hello"):
        GlobalSession(STORE, 2).on_ack(Ack(1, 0))
    snap = GlobalSession(STORE, 2)
    snap.on_hello(hello("", 0), 5, 0)
    assert snap.state is State.NEED_SNAPSHOT
    assert snap.next_action(5, 0) == SendSnapshot()
    assert snap.state is State.SENDING_SNAPSHOT
    with pytest.raises(ProtocolError, match="RANGE_FAILED is not allowed"):
        snap.on_failed_range()  # only a range can fail to be read


def test_states_follow_the_table() -> None:
    """A range is SENDING_RANGE until done; a failed one leaves NEED_SNAPSHOT; every move
    made is an entry of TRANSITIONS."""
    s = resumed(3, 9)
    seen = [s.state]
    s.next_action(9, 0)
    seen.append(s.state)
    s.on_failed_range()
    seen.append(s.state)
    s.next_action(9, 0)
    seen.append(s.state)
    send(s, 9)
    seen.append(s.state)
    assert seen == [
        State.IDLE,
        State.SENDING_RANGE,
        State.NEED_SNAPSHOT,
        State.SENDING_SNAPSHOT,
        State.IDLE,
    ]
    assert set(pairwise(seen)) <= {(a, b) for (a, _), b in TRANSITIONS.items()}
