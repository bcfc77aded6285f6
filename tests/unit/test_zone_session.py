"""Unit tests for kds.protocol.zone_session.ZoneSession, the pure zone side of one stream.

Events in, actions out: no network, no grpc, no store, no clock (times are plain floats).
The last tests go through kds.wire to show what the decisions look like as protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kds import wire
from kds._pb import sync_pb2 as pb
from kds.errors import ProtocolError
from kds.model import Key, Kind, Resource
from kds.protocol.applier import DecodedBatch, Incoming
from kds.protocol.zone_session import (
    TRANSITIONS,
    Ack,
    Event,
    Hello,
    RawKey,
    Rejection,
    State,
    SyncMode,
    Welcome,
    ZoneSession,
)

STORE = "global-store-a"
MESH = Resource(Kind.MESH, "m")
SECRET = Resource(Kind.SECRET, "s", mesh="m")


@dataclass
class Result:
    """Stands in for the store's ZoneApplyResult."""

    applied_revision: int
    rejected: list[tuple[Key, str]] = field(default_factory=list)
    new_conflicts: list[Key] = field(default_factory=list)
    resolved_conflicts: list[Key] = field(default_factory=list)


def session() -> ZoneSession:
    return ZoneSession(
        zone="zone-1", instance_id="zone-1-x", software_version="1.2.3", max_message_bytes=4096
    )


def welcome(head: int, mode: SyncMode = SyncMode.RESUME, heartbeat_ms: int = 200) -> Welcome:
    return Welcome("global-1", STORE, head, mode, heartbeat_ms)


def connected(
    revision: int, head: int, mode: SyncMode = SyncMode.RESUME, heartbeat_ms: int = 200
) -> ZoneSession:
    s = session()
    s.on_open(STORE, revision, b"chain", "sqlite")
    s.on_welcome(welcome(head, mode, heartbeat_ms), now=100.0)
    return s


def batch(
    seq: int,
    revision: int,
    head: int,
    *changes: Incoming,
    final: bool = True,
    snapshot: bool = False,
) -> DecodedBatch:
    return DecodedBatch(
        seq=seq,
        from_revision=0,
        revision=revision,
        snapshot=snapshot,
        final=final,
        head_revision=head,
        changes=changes,
    )


def put(revision: int, r: Resource) -> Incoming:
    return Incoming(revision, r.key, r)


# --------------------------------------------------------------------------- hello, welcome


def test_open_returns_the_hello_from_the_sync_state() -> None:
    """Opening a stream returns the hello: who the zone is and where it stands."""
    s = session()
    hello = s.on_open(STORE, 7, b"chain-7", "sqlite")
    assert hello == Hello("zone-1", "zone-1-x", "1.2.3", STORE, 7, b"chain-7", "sqlite", 4096)
    assert s.state is State.AWAITING_WELCOME and not s.connected


def test_welcome_first_connects_and_records_global() -> None:
    """The welcome connects: global's ids and head, the mode and where the stream started."""
    s = connected(revision=5, head=9)
    assert s.state is State.SYNCING and s.connected
    assert (s.global_instance_id, s.global_store_id, s.global_head) == ("global-1", STORE, 9)
    assert (s.sync_mode, s.sync_from_revision, s.applied_revision) == ("resume", 5, 5)
    assert (s.connections, s.resumes, s.snapshots) == (1, 1, 0)


@pytest.mark.parametrize("first", ["batch", "heartbeat", "unknown"])
def test_anything_before_the_welcome_is_refused(first: str) -> None:
    """A batch, heartbeat or unknown message before the welcome raises ProtocolError."""
    s = session()
    s.on_open(STORE, 0, b"", "sqlite")
    with pytest.raises(ProtocolError, match="did not answer the hello with a welcome"):
        if first == "batch":
            s.on_batch(batch(1, 1, 1), [], now=1.0)
        elif first == "heartbeat":
            s.on_heartbeat(3, now=1.0)
        else:
            s.on_unknown("None")
    assert s.state is State.AWAITING_WELCOME and s.connections == 0


def test_second_welcome_is_refused() -> None:
    """A second welcome on one stream raises ProtocolError."""
    s = connected(revision=0, head=0)
    with pytest.raises(ProtocolError, match="unexpected welcome from global"):
        s.on_welcome(welcome(3), now=101.0)
    assert s.connections == 1


def test_unknown_message_after_the_welcome_is_refused() -> None:
    """A message kind this version does not know ends the stream as a protocol error."""
    with pytest.raises(ProtocolError, match="unexpected None from global"):
        connected(revision=0, head=0).on_unknown("None")


# --------------------------------------------------------------------------- readiness


def test_resume_already_caught_up_is_ready_at_the_welcome() -> None:
    """A resume at or past global's head is ready at once: there is nothing to wait for."""
    assert connected(revision=9, head=9).ready


def test_resume_behind_is_ready_after_the_final_batch_reaches_the_head() -> None:
    """A resume behind the head becomes ready when a final batch brings it to the head."""
    s = connected(revision=5, head=9)
    assert not s.ready
    s.on_batch(batch(1, 9, 9, put(9, MESH)), [], now=101.0)
    s.on_applied(Result(9), now=101.5)
    assert s.ready


def test_snapshot_is_ready_only_after_the_final_part_that_reaches_the_head() -> None:
    """A snapshot, even of a zone already at the head, is ready only after its final part; a
    final part that stops short of a head that moved meanwhile does not make it ready."""
    s = connected(revision=9, head=9, mode=SyncMode.SNAPSHOT)
    assert not s.ready and s.sync_mode == "snapshot" and s.snapshots == 1
    s.on_batch(batch(1, 9, 9, put(8, MESH), final=False, snapshot=True), [], now=101.0)
    s.on_applied(Result(9), now=101.0)
    assert not s.ready  # not final: more parts come
    s.on_heartbeat(12, now=102.0)
    s.on_batch(batch(2, 9, 9, put(9, SECRET), snapshot=True), [], now=103.0)
    s.on_applied(Result(9), now=103.0)
    assert not s.ready  # final, but global's head is 12 by now
    s.on_batch(batch(3, 12, 12), [], now=104.0)
    s.on_applied(Result(12), now=104.0)
    assert s.ready


def test_ready_stays_after_disconnect_and_counts_span_streams() -> None:
    """Once ready, the zone stays ready while global is away and on the next stream;
    connections, resumes and snapshots count across streams."""
    s = connected(revision=9, head=9)
    assert s.on_end() is True
    assert s.ready and not s.connected and s.state is State.DISCONNECTED
    s.on_open(STORE, 9, b"", "sqlite")
    assert s.ready and not s.connected
    s.on_welcome(welcome(20, SyncMode.SNAPSHOT), now=200.0)
    assert s.ready and (s.connections, s.resumes, s.snapshots) == (2, 1, 1)


def test_never_connected_is_not_ready_and_end_before_welcome_was_not_connected() -> None:
    """A stream that ends before its welcome leaves the zone not ready, never connected."""
    s = session()
    s.on_open(STORE, 9, b"", "sqlite")
    assert s.on_end() is False
    assert not s.ready and s.connections == 0


# --------------------------------------------------------------------------- head tracking


def test_heartbeat_sets_the_head_as_heard() -> None:
    """A heartbeat's head is global's head as last heard (taken as is)."""
    s = connected(revision=5, head=9)
    s.on_heartbeat(14, now=101.0)
    assert s.global_head == 14


def test_batch_raises_the_head_never_lowers_it() -> None:
    """A batch's head raises global's head as heard; an older one does not lower it."""
    s = connected(revision=5, head=9)
    s.on_batch(batch(1, 7, 12, final=False), [], now=101.0)
    s.on_applied(Result(7), now=101.0)
    assert (s.global_head, s.applied_revision) == (12, 7)
    s.on_batch(batch(2, 9, 10), [], now=102.0)
    s.on_applied(Result(9), now=102.0)
    assert (s.global_head, s.applied_revision) == (12, 9)
    assert not s.ready


# --------------------------------------------------------------------------- acks


def test_ack_carries_seq_and_applied_revision() -> None:
    """The ack names the batch and the revision the zone recorded; counts by type."""
    s = connected(revision=0, head=2, mode=SyncMode.SNAPSHOT)
    s.on_batch(batch(1, 2, 2, put(1, MESH), put(2, SECRET), snapshot=True), [], now=101.0)
    applied = s.on_applied(Result(2), now=101.0)
    assert applied.ack == Ack(1, 2, ())
    assert applied.complete and not applied.refresh_conflicts and applied.error == ""
    assert s.batches_applied == 1
    assert s.applied == {"Mesh": 1, "Secret": 1} and not s.rejected


def test_ack_carries_rejections_store_ones_first_then_undecodable() -> None:
    """Rejections by the apply and changes this version could not decode all go back in the
    ack, in that order; rejected changes are counted as rejected, not applied."""
    s = connected(revision=0, head=3)
    future = Rejection(RawKey(99, "m", "future", "kind-99"), "unknown resource kind 99")
    empty = Rejection(None, "change with no operation")
    s.on_batch(batch(1, 3, 3, put(1, MESH), put(2, SECRET)), [future, empty], now=101.0)
    applied = s.on_applied(Result(3, rejected=[(SECRET.key, "no mesh")]), now=101.0)
    assert applied.ack == Ack(1, 3, (Rejection(SECRET.key, "no mesh"), future, empty))
    assert applied.error == "rejected 3 synced resource(s)"
    assert s.applied == {"Mesh": 1}
    assert s.rejected == {"Secret": 1, "unknown": 2}  # kinds it does not know: one counter


def held_acks(max_unacked: int = 8, delay_ms: int = 100, max_bytes: int = 0) -> ZoneSession:
    """A zone whose global lets it hold acks back for ``delay_ms``, which has just applied
    batch 1 (revision 1) at 100.99: the batches that follow within the delay may be held."""
    s = session()
    s.on_open(STORE, 0, b"chain", "sqlite")
    w = Welcome("global-1", STORE, 0, SyncMode.RESUME, 200, delay_ms, max_unacked, max_bytes)
    s.on_welcome(w, now=100.0)
    assert apply(s, batch(1, 1, 1, put(1, MESH)), now=100.99) == Ack(1, 1, ())
    return s


def apply(
    s: ZoneSession, b: DecodedBatch, now: float, result: Result | None = None, size: int = 0
) -> Ack | None:
    s.on_batch(b, [], now=now, size=size)
    return s.on_applied(result or Result(b.revision), now=now).ack


def test_a_range_ack_is_held_until_due_and_says_how_long() -> None:
    """With an ack delay, a range's last part that follows another batch within the delay
    is acknowledged when the delay after the first held batch is up, with one ack naming the
    last batch and how long it was held."""
    s = held_acks()
    assert apply(s, batch(2, 2, 2, put(2, SECRET)), now=101.0) is None
    assert s.ack_due() == pytest.approx(101.1)
    assert apply(s, batch(3, 3, 3, put(3, SECRET)), now=101.05) is None
    assert s.ack_due() == pytest.approx(101.1)  # the first held batch sets when
    assert s.take_ack(101.1) == Ack(3, 3, (), 50)
    assert s.ack_due() is None and s.take_ack(101.2) is None


def test_the_first_batch_after_a_quiet_spell_is_acknowledged_at_once() -> None:
    """A single write (the first batch of a stream, or one that comes more than the delay
    after the last) is acknowledged at once: a script waiting for it is not kept waiting
    for the delay. The batch after it, within the delay, is held."""
    s = held_acks(delay_ms=500)
    assert apply(s, batch(2, 2, 2, put(2, SECRET)), now=101.4) is None  # 0.41 s after batch 1
    assert s.take_ack(101.9) == Ack(2, 2, (), 500)
    # Quiet is counted from the last batch's arrival, not its ack: 0.6 s after batch 2.
    assert apply(s, batch(3, 3, 3, put(3, SECRET)), now=102.0) == Ack(3, 3, ())
    assert apply(s, batch(4, 4, 4, put(4, SECRET)), now=102.1) is None
    assert s.ack_due() == pytest.approx(102.6)


def test_the_last_part_of_a_longer_range_is_acknowledged_at_once() -> None:
    """A range of several parts (a bulk apply) has each part acknowledged at once, its last
    too, however soon after the range before it: a script waits for its end."""
    s = held_acks(delay_ms=500)
    assert apply(s, batch(2, 2, 3, put(2, SECRET), final=False), now=101.0) == Ack(2, 2, ())
    assert apply(s, batch(3, 3, 3, put(3, SECRET)), now=101.01) == Ack(3, 3, ())
    assert apply(s, batch(4, 4, 4, put(4, SECRET)), now=101.02) is None  # a range of one


def test_half_the_window_of_held_batches_is_acknowledged_at_once() -> None:
    """Global stops sending at max_unacked: the batch that brings the held ones to half of it
    is acknowledged at once, covering them."""
    s = held_acks(max_unacked=8)
    for seq in (2, 3, 4):
        assert apply(s, batch(seq, seq, seq, put(seq, SECRET)), now=101.0) is None
    assert apply(s, batch(5, 5, 5, put(5, SECRET)), now=101.0) == Ack(5, 5, ())
    assert s.ack_due() is None


def test_half_the_window_in_bytes_is_acknowledged_at_once() -> None:
    """When global bounds its window in bytes too, the batch that would bring the held ones to
    half of that is acknowledged at once, however few batches are held; the count restarts."""
    s = held_acks(max_unacked=64, max_bytes=1000)
    assert apply(s, batch(2, 2, 2, put(2, SECRET)), now=101.0, size=300) is None
    assert apply(s, batch(3, 3, 3, put(3, SECRET)), now=101.0, size=199) is None
    assert apply(s, batch(4, 4, 4, put(4, SECRET)), now=101.0, size=1) == Ack(4, 4, ())
    for seq in range(5, 21):  # small batches: only the count or the delay sends them
        assert apply(s, batch(seq, seq, seq, put(seq, SECRET)), now=101.0, size=10) is None
    assert s.take_ack(101.1) == Ack(20, 20, (), 100)


def test_the_wire_carries_the_window_in_bytes() -> None:
    w = wire.welcome_from_pb(pb.Welcome(max_unacked=64, max_unacked_bytes=1 << 20))
    assert (w.max_unacked, w.max_unacked_bytes) == (64, 1 << 20)
    assert wire.welcome_from_pb(pb.Welcome(max_unacked=8)).max_unacked_bytes == 0


@pytest.mark.parametrize("kind", ["snapshot", "part", "repair", "rejection"])
def test_what_global_needs_to_hear_at_once_is_never_held(kind: str) -> None:
    """A snapshot part, a part that does not end its range, a repair and a batch with
    rejections are acknowledged at once, and their ack covers the ones held before."""
    s = held_acks()
    assert apply(s, batch(2, 2, 5, put(2, SECRET)), now=101.0) is None
    b = batch(3, 3, 5, put(3, SECRET), snapshot=kind == "snapshot", final=kind != "part")
    if kind == "repair":
        b = DecodedBatch(3, 2, 2, False, True, 5, (put(3, SECRET),), repair=True)
    rejected = [(SECRET.key, "no mesh")] if kind == "rejection" else []
    ack = apply(s, b, now=101.01, result=Result(b.revision, rejected=rejected))
    assert ack is not None and ack.seq == 3
    assert s.ack_due() is None and s.take_ack(102.0) is None


def test_no_delay_or_a_small_window_means_an_ack_per_batch() -> None:
    """A global that does not offer a delay (an older one sends none), or whose window is too
    small to share, gets every batch acknowledged at once."""
    for s in (held_acks(delay_ms=0), held_acks(max_unacked=2)):
        assert apply(s, batch(2, 2, 2, put(2, SECRET)), now=101.0) == Ack(2, 2, ())
    s = connected(revision=0, head=1)
    assert apply(s, batch(1, 1, 1, put(1, MESH)), now=101.0) == Ack(1, 1, ())


def test_a_held_ack_is_dropped_with_its_stream_and_the_delay_is_bounded() -> None:
    """A stream that ends forgets the held ack (the next one resumes from the store); a
    global asking for a delay over a second gets one second."""
    s = held_acks(delay_ms=3_600_000)
    assert apply(s, batch(2, 2, 2, put(2, SECRET)), now=101.0) is None
    assert s.ack_due() == pytest.approx(102.0)
    s.on_end()
    assert s.ack_due() is None and s.take_ack(103.0) is None


def test_a_held_ack_on_the_wire() -> None:
    """held_ms travels in the Ack message."""
    s = held_acks()
    apply(s, batch(2, 2, 2, put(2, SECRET)), now=101.0)
    ack = s.take_ack(101.25)
    assert ack is not None
    assert wire.ack_to_pb(ack).ack == pb.Ack(seq=2, applied_revision=2, held_ms=250)


def test_conflicts_that_begin_or_end_ask_for_a_refresh() -> None:
    """A conflict that began or ended in the apply asks the caller to re-read conflicts."""
    s = connected(revision=0, head=2)
    s.on_batch(batch(1, 1, 2, final=False), [], now=101.0)
    assert s.on_applied(Result(1, new_conflicts=[MESH.key]), now=101.0).refresh_conflicts
    s.on_batch(batch(2, 2, 2), [], now=102.0)
    assert s.on_applied(Result(2, resolved_conflicts=[MESH.key]), now=102.0).refresh_conflicts


# --------------------------------------------------------------------------- watchdog


def test_silent_for_three_heartbeats_means_reconnect() -> None:
    """With 200 ms heartbeats promised, 0.6 s without a message from global: reconnect."""
    s = connected(revision=0, head=0, heartbeat_ms=200)  # welcomed at 100.0
    assert s.silence_limit == pytest.approx(0.6)
    assert s.watchdog_wait(100.2) == pytest.approx(0.4)
    assert not s.tick(100.5)
    assert s.tick(100.65)


def test_every_message_and_the_apply_restart_the_watchdog() -> None:
    """A heartbeat, a batch or the end of an apply (the zone's own time) restart the count."""
    s = connected(revision=0, head=5, heartbeat_ms=200)
    s.on_heartbeat(5, now=100.5)
    assert not s.tick(101.0)
    s.on_batch(batch(1, 5, 5), [], now=101.0)
    s.on_applied(Result(5), now=103.0)  # a long apply is not global's silence
    assert not s.tick(103.5)
    assert s.tick(103.65)


def test_silence_counts_from_when_the_zone_listens_again() -> None:
    """A zone that took longer than the silence limit to answer a check (its own time) gives
    global a whole limit once it listens again; a global that stays silent is still caught."""
    s = connected(revision=0, head=0, heartbeat_ms=200)
    s.on_digest_query(now=100.5)
    assert s.tick(102.0)  # what the watchdog would say, had the zone been listening all along
    s.on_listening(now=102.0)  # the answer took 1.5 s
    assert s.watchdog_wait(102.0) == pytest.approx(0.6)
    assert not s.tick(102.5)
    assert s.tick(102.65)
    s.on_listening(now=101.0)  # a clock reading older than the last one changes nothing
    assert s.tick(102.65)


def test_no_heartbeat_interval_means_no_watchdog() -> None:
    """A global that promises no heartbeats is never given up on for silence."""
    s = connected(revision=0, head=0, heartbeat_ms=0)
    assert s.silence_limit is None and s.watchdog_wait(1e9) is None
    assert not s.tick(1e9)


def test_no_watchdog_before_the_welcome() -> None:
    """Before the welcome there is no promise to hold global to: no wait limit."""
    s = session()
    s.on_open(STORE, 0, b"", "sqlite")
    assert s.watchdog_wait(1e9) is None


# --------------------------------------------------------------------------- the table


def test_the_table_is_the_only_way_between_states() -> None:
    """Every event not in the table for the current state is refused and changes nothing."""
    drivers = {
        Event.OPEN: lambda s: s.on_open(STORE, 0, b"", "sqlite"),
        Event.WELCOME: lambda s: s.on_welcome(welcome(0), now=1.0),
        Event.HEARTBEAT: lambda s: s.on_heartbeat(0, now=1.0),
        Event.BATCH: lambda s: s.on_batch(batch(1, 1, 1), [], now=1.0),
        Event.APPLIED: lambda s: s.on_applied(Result(1), now=1.0),
        Event.TICK: lambda s: s.tick(1.0),
        Event.END: lambda s: s.on_end(),
        Event.UNKNOWN: lambda s: s.on_unknown("None"),
    }
    reach = {
        State.DISCONNECTED: [],
        State.AWAITING_WELCOME: [Event.OPEN],
        State.SYNCING: [Event.OPEN, Event.WELCOME],
        State.APPLYING: [Event.OPEN, Event.WELCOME, Event.BATCH],
    }
    for state, path in reach.items():
        for event, drive in drivers.items():
            s = session()
            for step in path:
                drivers[step](s)
            assert s.state is state
            if (state, event) in TRANSITIONS:
                drive(s)
                assert s.state is TRANSITIONS[state, event]
            else:
                with pytest.raises(ProtocolError):
                    drive(s)
                assert s.state is state


@pytest.mark.parametrize("event", ["batch", "heartbeat", "welcome", "applied", "tick", "end"])
def test_anything_but_open_after_the_end_is_refused(event: str) -> None:
    """After a stream ended, only a new stream may start."""
    s = connected(revision=0, head=0)
    s.on_end()
    with pytest.raises(ProtocolError):
        {
            "batch": lambda: s.on_batch(batch(1, 1, 1), [], now=1.0),
            "heartbeat": lambda: s.on_heartbeat(0, now=1.0),
            "welcome": lambda: s.on_welcome(welcome(0), now=1.0),
            "applied": lambda: s.on_applied(Result(1), now=1.0),
            "tick": lambda: s.tick(1.0),
            "end": lambda: s.on_end(),
        }[event]()


def test_heartbeat_while_applying_is_refused() -> None:
    """The zone applies one batch at a time: nothing from global is taken until it is done."""
    s = connected(revision=0, head=1)
    s.on_batch(batch(1, 1, 1), [], now=101.0)
    with pytest.raises(ProtocolError):
        s.on_heartbeat(1, now=101.0)
    with pytest.raises(ProtocolError):
        s.on_batch(batch(2, 1, 1), [], now=101.0)


# --------------------------------------------------------------------------- through kds.wire


def test_undecodable_changes_reach_the_ack_on_the_wire_as_global_sent_them() -> None:
    """Decoded on the wire, fed to the session, encoded back: an unknown kind is rejected by
    its raw key, a change with no operation by a rejection with no key at all."""
    good = pb.Change(revision=1, put=wire.resource_to_pb(MESH))
    odd = pb.Change(revision=2, put=pb.Resource(kind=99, mesh="m", name="future"))  # type: ignore[arg-type]
    raw = pb.Batch(seq=4, revision=2, final=True, head_revision=2, changes=[good, odd, pb.Change()])
    decoded, undecodable = wire.decode_batch(raw)
    s = connected(revision=0, head=2)
    s.on_batch(decoded, undecodable, now=101.0)
    msg = wire.ack_to_pb(s.on_applied(Result(2), now=101.0).ack)
    assert (msg.ack.seq, msg.ack.applied_revision) == (4, 2)
    first, second = msg.ack.rejected
    assert (first.key.kind, first.key.mesh, first.key.name) == (99, "m", "future")
    assert not second.HasField("key") and second.reason == "change with no operation"
    assert s.applied == {"Mesh": 1} and s.ready


def test_hello_and_welcome_on_the_wire() -> None:
    """The hello encodes with the protocol version; any welcome mode but RESUME is a snapshot."""
    msg = wire.hello_to_pb(session().on_open(STORE, 7, b"c", "sqlite"))
    assert msg.hello.protocol_version == wire.PROTOCOL_VERSION
    assert (msg.hello.resume.global_store_id, msg.hello.resume.revision) == (STORE, 7)
    assert (msg.hello.store_backend, msg.hello.max_message_bytes) == ("sqlite", 4096)
    for mode, expected in [
        (pb.Welcome.RESUME, SyncMode.RESUME),
        (pb.Welcome.SNAPSHOT, SyncMode.SNAPSHOT),
        (pb.Welcome.MODE_UNSPECIFIED, SyncMode.SNAPSHOT),
    ]:
        w = wire.welcome_from_pb(pb.Welcome(head_revision=3, mode=mode, heartbeat_interval_ms=5))
        assert (w.mode, w.head_revision, w.heartbeat_interval_ms) == (expected, 3, 5)
