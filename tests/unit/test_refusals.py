"""A refusal going on is reported once: a zone that refuses a change of global's for a reason
of its own (a Mesh it keeps while zone-local secrets live in it) keeps refusing the repair
anti-entropy sends for it; neither side logs that as a new error at every check, and global
does not check again at once after a repair the zone refused whole (kds.protocol.refusals)."""

from __future__ import annotations

from globalcp.checks import ZoneChecks
from kds.model import Key, Kind
from kds.protocol.applier import DecodedBatch, Incoming
from kds.protocol.refusals import Refusals
from kds.protocol.session import Ack, GlobalSession, Hello, SendRange
from kds.protocol.zone_session import SyncMode, Welcome, ZoneSession
from tests.unit.test_zone_session import Result

MESH = Key(Kind.MESH, "", "temp")
SECRET = Key(Kind.SECRET, "temp", "s")
REASON = "mesh still holds 1 zone-local and 0 synced secrets"


def test_refusals_repeat_only_for_the_same_reason_and_forget_what_was_applied() -> None:
    r: Refusals[Key] = Refusals()
    assert not r and r.repeats([(MESH, REASON)]) == set()
    r.record([(MESH, REASON), (SECRET, "no mesh")])
    assert len(r) == 2
    assert r.repeats([(MESH, REASON), (SECRET, "another reason")]) == {MESH}
    r.forget([SECRET])
    assert r.repeats([(SECRET, "no mesh")]) == set() and len(r) == 1


def test_refusals_are_bounded_oldest_first() -> None:
    r: Refusals[int] = Refusals(limit=3)
    r.record([(i, "x") for i in range(5)])
    assert len(r) == 3 and r.repeats([(i, "x") for i in range(5)]) == {2, 3, 4}
    r.record([(2, "x")])  # refused again: the newest now
    r.record([(9, "x")])
    assert r.repeats([(i, "x") for i in (2, 3, 4, 9)]) == {2, 4, 9}


def _zone() -> ZoneSession:
    s = ZoneSession(zone="z", instance_id="z-1", software_version="1", max_message_bytes=4096)
    s.on_open("store", 5, b"chain", "sqlite")
    s.on_welcome(Welcome("global-1", "store", 5, SyncMode.RESUME, 200), now=100.0)
    return s


def _batch(seq: int, frm: int, to: int, *keys: Key, repair: bool = False) -> DecodedBatch:
    changes = tuple(Incoming(to, k) for k in keys)  # deletes
    return DecodedBatch(seq, frm, to, False, True, to, changes, repair=repair)


def test_a_zone_reports_a_refusal_once_and_a_repair_refused_again_quietly() -> None:
    s = _zone()
    s.on_batch(_batch(1, 5, 6, MESH), [], now=101.0)
    first = s.on_applied(Result(6, [(MESH, REASON)]), now=101.0)
    assert first.error == "rejected 1 synced resource(s)" and not first.repeated
    # Anti-entropy sends the delete again: refused for the same reason.
    s.on_batch(_batch(2, 6, 6, MESH, repair=True), [], now=102.0)
    again = s.on_applied(Result(6, [(MESH, REASON)]), now=102.0)
    assert again.error == "" and again.repeated == {MESH}
    assert again.ack is not None and [r.key for r in again.ack.rejected] == [MESH]  # global hears
    assert s.rejected["Mesh"] == 2  # counted as rejected each time
    # A new reason is a new refusal.
    s.on_batch(_batch(3, 6, 6, MESH, repair=True), [], now=103.0)
    other = s.on_applied(Result(6, [(MESH, "mesh still holds 2 zone-local")]), now=103.0)
    assert other.error and not other.repeated
    # Once applied, the refusal is over: a later refusal is new again.
    s.on_batch(_batch(4, 6, 6, MESH, repair=True), [], now=104.0)
    assert s.on_applied(Result(6), now=104.0).error == ""
    s.on_batch(_batch(5, 6, 6, MESH, repair=True), [], now=105.0)
    assert not s.on_applied(Result(6, [(MESH, REASON)]), now=105.0).repeated


def test_a_range_refused_again_is_reported_again() -> None:
    """Only a repair (global's unchanged state sent again) counts as the same refusal: a new
    change of global's refused for the same reason is news."""
    s = _zone()
    s.on_batch(_batch(1, 5, 6, MESH), [], now=101.0)
    s.on_applied(Result(6, [(MESH, REASON)]), now=101.0)
    s.on_batch(_batch(2, 6, 7, MESH), [], now=102.0)
    assert s.on_applied(Result(7, [(MESH, REASON)]), now=102.0).error


def test_global_marks_the_parts_of_a_repair() -> None:
    """Global knows which acknowledged batch was a repair: only there is a refusal for the
    reason given before the same refusal going on."""
    g = GlobalSession("store", max_unacked=4)
    g.on_hello(Hello("z", "z-1", 1, "store", 3, b"c"), head=5, log_floor=0, chain_at_revision=b"c")
    assert g.next_action(5, 0) == SendRange(3, 5)
    seq = g.next_seq()
    g.on_sent(seq, 5, True, (MESH,))
    g.on_done()
    (ranged,) = g.on_ack(Ack(seq, 5, (MESH,)))
    assert not ranged.repair
    assert g.start_repair() == 5
    seq = g.next_seq()
    g.on_sent(seq, 5, True, (MESH,))
    g.on_done()
    (repaired,) = g.on_ack(Ack(seq, 5, (MESH,)))
    assert repaired.repair


def test_a_repair_refused_whole_is_not_checked_again_at_once() -> None:
    now = [100.0]
    checks = ZoneChecks(None, 300.0, lambda: now[0])  # type: ignore[arg-type]
    checks.repairing({MESH, SECRET}, deferred=0)
    checks.refused([MESH])
    assert checks.due()  # one change applied: the next check verifies it at once
    checks.repairing({MESH}, deferred=0)
    checks.refused([MESH])
    assert not checks.due()  # refused whole: the interval applies
    now[0] += 299.0
    assert not checks.due()
    now[0] += 1.0
    assert checks.due()


def test_a_repair_that_left_keys_for_later_is_followed_at_once_even_if_refused() -> None:
    now = [100.0]
    checks = ZoneChecks(None, 300.0, lambda: now[0])  # type: ignore[arg-type]
    checks.repairing({MESH}, deferred=5)
    checks.refused([MESH])
    assert checks.due()
