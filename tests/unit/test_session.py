"""Unit tests for kds.protocol.session.GlobalSession, the pure global side of one stream.

Part one feeds the session by hand. Part two is a ConnectionPair in the spirit of h11/h2: a
session, driven by global's real send loop (globalcp.sending) over an in-memory model of
global's store, and the zone applier (kds.protocol.applier.plan_batch over a dict standing in
for the zone store) talk through real wire bytes, with no network and no grpc server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from globalcp.hub import Hub
from globalcp.send_plans import SendPlans
from globalcp.sending import SendLoop
from globalcp.zones import ZoneTracker
from kds._pb import sync_pb2 as pb
from kds.clock import rfc3339
from kds.errors import ProtocolError
from kds.model import Key, Kind, Resource
from kds.protocol.applier import DecodedBatch, ZoneView, plan_batch
from kds.protocol.batching import coalesce
from kds.protocol.records import ChangeRecord, sort_records, sync_units
from kds.protocol.session import (
    Ack,
    GlobalSession,
    Hello,
    Mode,
    SendRange,
    SendSnapshot,
)
from kds.wire import (
    BATCH_OVERHEAD,
    assemble_batch,
    change_delete,
    change_put,
    decode_batch,
    framed_size,
)

STORE = "global-store-a"


def hello(store_id: str = STORE, revision: int = 0, version: int = 1) -> Hello:
    return Hello("zone-1", "zone-1-x", version, store_id, revision)


def resumed(revision: int, head: int, max_unacked: int = 2, floor: int = 0) -> GlobalSession:
    s = GlobalSession(STORE, max_unacked)
    assert s.on_hello(hello(revision=revision), head, floor, b"") is Mode.RESUME
    return s


def send(s: GlobalSession, revision: int, parts: int = 1) -> list[int]:
    """Play the driver: write ``parts`` batches ending at ``revision``, then on_done."""
    seqs = []
    for i in range(parts):
        seq = s.next_seq()
        s.on_sent(seq, revision, final=i == parts - 1)
        seqs.append(seq)
    s.on_done()
    return seqs


# --------------------------------------------------------------------------- hello


@pytest.mark.parametrize("revision", [5, 7, 10])
def test_hello_within_log_resumes(revision: int) -> None:
    """Same store id and log_floor <= revision <= head: RESUME from the zone's revision."""
    s = GlobalSession(STORE, 2)
    assert s.on_hello(hello(revision=revision), 10, 5, b"") is Mode.RESUME
    assert s.mode is Mode.RESUME
    assert s.sent_revision == s.acked_revision == revision
    expected = SendRange(revision, 10) if revision < 10 else None
    assert s.next_action(10, 5) == expected


def test_hello_caught_up_has_nothing_to_send() -> None:
    """A resumed zone already at head gets no action until the head moves."""
    s = resumed(10, 10)
    assert s.next_action(10, 0) is None
    assert s.next_action(11, 0) == SendRange(10, 11)


@pytest.mark.parametrize(
    ("store_id", "revision"),
    [
        ("another-store", 7),  # the zone synced from a different global store
        ("", 0),  # the zone never synced
        (STORE, 11),  # ahead of head: global lost writes the zone holds
        (STORE, 4),  # behind the log floor: the change log no longer covers it
    ],
    ids=["other-store", "never-synced", "ahead-of-head", "below-floor"],
)
def test_hello_outside_log_gets_snapshot(store_id: str, revision: int) -> None:
    """A mismatched or empty store id, or a revision outside [log_floor, head]: SNAPSHOT."""
    s = GlobalSession(STORE, 2)
    assert s.on_hello(hello(store_id, revision), 10, 5, b"") is Mode.SNAPSHOT
    assert s.next_action(10, 5) == SendSnapshot()


def test_resume_needs_the_same_history_chain() -> None:
    """Same store id and revision but another history (a global restored from a backup, then
    written to) or an unknown chain: SNAPSHOT, never the tail of a different history."""
    ours = Hello("zone-1", "zone-1-x", 1, STORE, 7, chain=b"chain-a")
    assert GlobalSession(STORE, 2).on_hello(ours, 10, 5, b"chain-a") is Mode.RESUME
    assert GlobalSession(STORE, 2).on_hello(ours, 10, 5, b"chain-b") is Mode.SNAPSHOT
    assert GlobalSession(STORE, 2).on_hello(ours, 10, 5, None) is Mode.SNAPSHOT


def test_empty_store_id_never_resumes_even_if_global_store_id_is_empty() -> None:
    """An empty store id means "never synced", even against a global whose id is empty."""
    s = GlobalSession("", 2)
    assert s.on_hello(hello("", 0), 0, 0) is Mode.SNAPSHOT


def test_unsupported_protocol_version_is_refused() -> None:
    """A hello with a protocol version global does not speak raises ProtocolError."""
    s = GlobalSession(STORE, 2)
    with pytest.raises(ProtocolError, match="protocol version 2"):
        s.on_hello(hello(version=2), 10, 0)
    assert s.mode is None


def test_second_hello_is_refused() -> None:
    """A second hello on one stream raises ProtocolError."""
    s = resumed(3, 10)
    with pytest.raises(ProtocolError, match="twice"):
        s.on_hello(hello(revision=3), 10, 0)


def test_next_action_before_hello_is_refused() -> None:
    """Asking what to send before the hello raises ProtocolError."""
    with pytest.raises(ProtocolError):
        GlobalSession(STORE, 2).next_action(10, 0)


# --------------------------------------------------------------------------- window


def test_window_full_waits_for_an_ack() -> None:
    """With max_unacked=2 and two batches in flight, next_action is None until an ack."""
    s = resumed(0, 1)
    assert s.next_action(1, 0) == SendRange(0, 1)
    send(s, 1)
    assert s.next_action(2, 0) == SendRange(1, 2)
    (seq2,) = send(s, 2)
    assert s.in_flight == 2
    assert s.next_action(3, 0) is None
    s.on_ack(Ack(1, 1))
    assert s.in_flight == 1
    assert s.next_action(3, 0) == SendRange(2, 3)
    assert seq2 == 2


def test_the_window_closes_on_bytes_too() -> None:
    """Many small batches pass within max_unacked, but the encoded bytes in flight are bounded
    as well: once they reach max_unacked_bytes global waits, and a cumulative ack frees the
    bytes of every batch it covers."""
    s = GlobalSession(STORE, 64, 1000)
    assert s.on_hello(hello(revision=0), 1, 0, b"") is Mode.RESUME
    for rev, size in ((1, 400), (2, 400)):
        assert s.next_action(rev, 0) == SendRange(rev - 1, rev)
        s.on_sent(s.next_seq(), rev, True, (), size)
        s.on_done()
    assert s.next_action(3, 0) == SendRange(2, 3)
    s.on_sent(s.next_seq(), 3, True, (), 200)  # 1,000 bytes in flight: full
    s.on_done()
    assert s.window_full() and s.next_action(4, 0) is None
    s.on_ack(Ack(1, 1))
    assert not s.window_full() and s.next_action(4, 0) == SendRange(3, 4)
    s.on_sent(s.next_seq(), 4, True, (), 500)
    s.on_done()
    assert s.window_full()  # 600 + 500
    s.on_ack(Ack(4, 4))  # covers 2, 3 and 4
    assert s.in_flight == 0 and not s.window_full()


def test_no_byte_bound_counts_batches_only() -> None:
    s = resumed(0, 1, max_unacked=3)
    for rev in (1, 2):
        assert s.next_action(rev, 0) == SendRange(rev - 1, rev)
        s.on_sent(s.next_seq(), rev, True, (), 10_000_000)
        s.on_done()
    assert s.next_action(3, 0) == SendRange(2, 3)


def test_busy_while_a_range_is_being_written() -> None:
    """Between next_action and on_done, the session returns None (one range at a time)."""
    s = resumed(0, 5, max_unacked=10)
    assert s.next_action(5, 0) == SendRange(0, 5)
    assert s.next_action(9, 0) is None
    s.on_sent(s.next_seq(), 5, final=True)
    assert s.next_action(9, 0) is None  # still busy: the driver has not said done
    s.on_done()
    assert s.next_action(9, 0) == SendRange(5, 9)


def test_an_ack_covers_every_earlier_batch_in_flight() -> None:
    """Acks are cumulative: acknowledging batch 3 acknowledges 1 and 2 as well, and moves
    acked_revision to the last final batch it covers."""
    s = resumed(0, 1, max_unacked=4)
    for rev in (1, 2, 3):
        s.next_action(rev, 0)
        send(s, rev)
    s.next_action(4, 0)
    send(s, 4)
    done = s.on_ack(Ack(3, 3))
    assert [b.seq for b in done] == [1, 2, 3]
    assert s.acked_revision == 3 and s.in_flight == 1
    assert [b.seq for b in s.on_ack(Ack(4, 4))] == [4]
    assert s.acked_revision == 4


def test_an_ack_for_a_batch_not_in_flight_is_refused() -> None:
    """An ack naming a batch already acknowledged, or one not sent yet, raises ProtocolError,
    and acknowledges nothing."""
    s = resumed(0, 1, max_unacked=3)
    s.next_action(1, 0)
    send(s, 1)
    s.next_action(2, 0)
    send(s, 2)
    with pytest.raises(
        ProtocolError, match="ack for batch 3, but the batches in flight are 1 to 2"
    ):
        s.on_ack(Ack(3, 3))
    assert s.in_flight == 2
    s.on_ack(Ack(1, 1))
    with pytest.raises(
        ProtocolError, match="ack for batch 1, but the batches in flight are 2 to 2"
    ):
        s.on_ack(Ack(1, 1))


def test_a_cumulative_ack_checks_rejections_and_revision_against_its_own_batch() -> None:
    """Rejections name changes of the batch the ack names, not of the earlier ones it covers;
    the applied revision must be that batch's."""
    a, b = Key(Kind.SECRET, "default", "a"), Key(Kind.SECRET, "default", "b")
    s = resumed(0, 2, max_unacked=4)
    s.next_action(1, 0)
    s.on_sent(s.next_seq(), 1, True, [a])
    s.on_done()
    s.next_action(2, 0)
    s.on_sent(s.next_seq(), 2, True, [b])
    s.on_done()
    with pytest.raises(ProtocolError, match="rejection 0 names a resource the batch did not"):
        s.on_ack(Ack(2, 2, (a,)))
    with pytest.raises(ProtocolError, match="ends at revision 2 but the zone recorded 1"):
        s.on_ack(Ack(2, 1))
    assert s.in_flight == 2
    assert [x.seq for x in s.on_ack(Ack(2, 2, (b,)))] == [1, 2]


def test_ack_with_nothing_in_flight_is_refused() -> None:
    """An ack when no batch is in flight raises ProtocolError."""
    s = resumed(3, 3)
    with pytest.raises(ProtocolError, match="nothing is in flight"):
        s.on_ack(Ack(1, 3))


def test_final_ack_with_wrong_revision_is_refused() -> None:
    """A final batch acknowledged with another applied_revision raises ProtocolError."""
    s = resumed(0, 4)
    s.next_action(4, 0)
    send(s, 4)
    with pytest.raises(ProtocolError, match="recorded 3"):
        s.on_ack(Ack(1, 3))


def test_sent_out_of_order_is_refused() -> None:
    """on_sent with a seq other than the last next_seq raises ProtocolError."""
    s = resumed(0, 4)
    s.next_action(4, 0)
    s.next_seq()
    with pytest.raises(ProtocolError, match="out of order"):
        s.on_sent(7, 4, final=True)


def test_head_moves_while_window_full_coalesce_into_one_range() -> None:
    """Head moves while the window is full; after acks, one SendRange(sent, newest head)."""
    s = resumed(0, 1)
    s.next_action(1, 0)
    send(s, 1)
    s.next_action(2, 0)
    send(s, 2)
    for head in (3, 4, 7, 12):
        assert s.next_action(head, 0) is None
    s.on_ack(Ack(1, 1))
    s.on_ack(Ack(2, 2))
    assert s.next_action(12, 0) == SendRange(2, 12)


def test_slow_zone_below_log_floor_gets_snapshot() -> None:
    """A zone whose sent_revision fell below the log floor while waiting gets a snapshot."""
    s = resumed(0, 1)
    s.next_action(1, 0)
    send(s, 1)
    s.next_action(2, 0)
    send(s, 2)
    assert s.next_action(50, 10) is None  # window full: wait
    s.on_ack(Ack(1, 1))
    assert s.next_action(50, 10) == SendSnapshot()
    send(s, 50)  # the snapshot, at revision 50
    assert s.sent_revision == 50
    s.on_ack(Ack(2, 2))
    s.on_ack(Ack(3, 50))
    assert s.acked_revision == 50
    assert s.next_action(50, 10) is None


def test_failed_range_falls_back_to_snapshot() -> None:
    """After on_failed_range (the log moved past the range) the next action is a snapshot."""
    s = resumed(3, 9)
    assert s.next_action(9, 0) == SendRange(3, 9)
    s.on_failed_range()
    assert s.next_action(9, 0) == SendSnapshot()
    assert s.next_action(9, 0) is None  # busy with the snapshot


def test_snapshot_then_ranges_from_its_revision() -> None:
    """After a snapshot at revision S, the next range starts at S."""
    s = GlobalSession(STORE, 2)
    s.on_hello(hello("", 0), 8, 0)
    assert s.next_action(8, 0) == SendSnapshot()
    send(s, 8, parts=2)
    assert s.next_action(11, 0) is None  # two parts in flight fill the window
    s.on_ack(Ack(1, 0))
    assert s.next_action(11, 0) == SendRange(8, 11)


def test_acked_revision_tracks_final_acks_only() -> None:
    """Acks of non-final parts leave acked_revision; the final part's ack moves it."""
    s = resumed(2, 9, max_unacked=5)
    s.next_action(9, 0)
    send(s, 9, parts=3)
    s.on_ack(Ack(1, 2))
    s.on_ack(Ack(2, 2))
    assert s.acked_revision == 2
    (done,) = s.on_ack(Ack(3, 9))
    assert done.final
    assert s.acked_revision == 9


def test_parts_set_sent_revision_only_at_final() -> None:
    """A range in three parts sets sent_revision only when the final part is sent."""
    s = resumed(2, 9, max_unacked=1)
    assert s.next_action(9, 0) == SendRange(2, 9)
    for final in (False, False):
        s.on_sent(s.next_seq(), 9, final=final)
        assert s.sent_revision == 2
    s.on_sent(s.next_seq(), 9, final=True)
    assert s.sent_revision == 9
    assert s.in_flight == 3  # the parts of one range may overrun the window
    s.on_done()
    assert s.next_action(12, 0) is None  # then wait for acks


# --------------------------------------------------------------------------- ConnectionPair


def _stamp(revision: int) -> str:
    """The time global stamps on the write of ``revision``: one of its own per revision."""
    return rfc3339(dt.datetime(2026, 11, 30, tzinfo=dt.UTC) + dt.timedelta(seconds=revision))


@dataclass
class GlobalModel:
    """An in-memory global store: resources, a head revision and a bounded change log."""

    log_size: int = 1000
    store_id: str = STORE
    head: int = 0
    resources: dict[Key, Resource] = field(default_factory=dict)
    log: list[ChangeRecord] = field(default_factory=list)

    @property
    def log_floor(self) -> int:
        return max(0, self.head - self.log_size)

    def put(self, r: Resource) -> bool:
        if r.kind is Kind.SECRET and Key(Kind.MESH, "", r.mesh) not in self.resources:
            return False  # global refuses a Secret whose Mesh does not exist
        self.head += 1
        old = self.resources.get(r.key)
        stored = r.with_meta(
            creation_time=old.creation_time if old else _stamp(self.head),
            modification_time=_stamp(self.head),
            version=self.head,
        )
        self.resources[r.key] = stored
        self.log.append(ChangeRecord(self.head, r.key, False, change_put(self.head, stored)))
        return True

    def delete(self, key: Key) -> bool:
        if key not in self.resources:
            return False
        if key.kind is Kind.MESH and any(
            k.kind is Kind.SECRET and k.mesh == key.name for k in self.resources
        ):
            return False  # global refuses deleting a Mesh that holds Secrets
        self.head += 1
        del self.resources[key]
        self.log.append(ChangeRecord(self.head, key, True, change_delete(self.head, key)))
        return True

    def changes_after(self, after: int, upto: int) -> list[ChangeRecord] | None:
        if after < self.log_floor:
            return None
        return [r for r in self.log if after < r.revision <= upto]

    def snapshot(self) -> tuple[int, list[ChangeRecord]]:
        recs = [
            ChangeRecord(r.version, k, False, change_put(r.version, r))
            for k, r in self.resources.items()
        ]
        return self.head, sort_records(recs)


@dataclass
class ZoneModel:
    """A dict standing in for the zone store: synced copies, their snapshot stamp, revision."""

    rows: dict[Key, Resource] = field(default_factory=dict)
    stamp: dict[Key, tuple[str, int] | None] = field(default_factory=dict)
    store_id: str = ""
    applied_revision: int = 0
    rejected: list[tuple[Key, str]] = field(default_factory=list)

    def check_invariants(self) -> None:
        """Every Secret on the zone has its Mesh on the zone."""
        for k in self.rows:
            if k.kind is Kind.SECRET:
                assert Key(Kind.MESH, "", k.mesh) in self.rows, f"{k} without its mesh"

    def view(self, b: DecodedBatch, gen: tuple[str, int]) -> ZoneView:
        keys = {c.key for c in b.changes if c.key is not None}
        stale: tuple[Key, ...] = ()
        if b.snapshot and b.final:
            stale = tuple(k for k in self.rows if self.stamp[k] != gen and k not in keys)
        deleted_meshes = {
            k.name
            for k in set(stale) | {c.key for c in b.changes if c.deleted and c.key}
            if k.kind is Kind.MESH
        }
        return ZoneView(
            synced=frozenset(k for k in keys | set(stale) if k in self.rows),
            synced_meshes=frozenset(k.name for k in self.rows if k.kind is Kind.MESH),
            secrets_per_mesh={
                m: (0, sum(1 for k in self.rows if k.kind is Kind.SECRET and k.mesh == m))
                for m in deleted_meshes
            },
            stale=stale,
        )

    def apply(self, b: DecodedBatch, global_store_id: str) -> int:
        """Plan and apply one batch as one step, as ZoneEngine.apply_batch does."""
        if not b.snapshot:
            # The range must start where the zone stands (parts share from_revision).
            assert b.from_revision == self.applied_revision
        gen = (global_store_id, b.revision)
        plan = plan_batch(b, self.view(b, gen))
        for k in plan.deletes:
            del self.rows[k]
            del self.stamp[k]
        for r in plan.puts:
            self.rows[r.key] = r
            self.stamp[r.key] = gen if b.snapshot else None
        self.rejected += plan.rejected
        if plan.record_revision is not None:
            self.applied_revision = plan.record_revision
            self.store_id = global_store_id
        self.check_invariants()
        return self.applied_revision


class ModelStore:
    """What global's send loop reads from its store (the GlobalStore methods snapshot and
    changes_after), answered at once from a GlobalModel."""

    def __init__(self, g: GlobalModel):
        self.g = g

    @property
    def store_id(self) -> str:
        return self.g.store_id

    async def snapshot_units(self, take: Callable[[list[ChangeRecord]], None]) -> tuple[int, bytes]:
        revision, records = self.g.snapshot()
        for unit in sync_units(records):
            take(unit)
        return revision, b""

    async def changes_after(self, after: int, upto: int) -> list[ChangeRecord]:
        return self.g.changes_after(after, upto) or []  # a store returns what it still holds


class ConnectionPair:
    """One stream between a GlobalSession and a zone, carried as bytes in two queues. Global's
    side is its real send loop (globalcp.sending.SendLoop), writing into the zone's queue."""

    def __init__(
        self, g: GlobalModel, z: ZoneModel, max_unacked: int, max_bytes: int, floor_lag: int = 0
    ):
        self.g, self.z = g, z
        self.max_unacked, self._max_bytes = max_unacked, max_bytes
        # Like the hub's, the floor the session sees may lag the store's: ranges can then fail.
        self.floor_lag = floor_lag
        self.to_zone: deque[bytes] = deque()
        self.to_global: deque[bytes] = deque()
        self.parts_sent = 0
        self.batches_seen: list[DecodedBatch] = []
        self.connect()

    def connect(self) -> Mode:
        self.to_zone.clear()
        self.to_global.clear()
        self.session = GlobalSession(self.g.store_id, self.max_unacked)
        # A hub with nothing published: the loop reads every range from the model's log.
        self.hub = Hub(self.g.head, self.seen_floor, self.g.log_size)
        self._start_sender()
        h = hello(self.z.store_id, self.z.applied_revision)
        return self.session.on_hello(h, self.g.head, self.seen_floor, b"")

    def _start_sender(self) -> None:
        self.sender = SendLoop(
            self.session,
            ZoneTracker(ModelStore(self.g), self.hub).connected(
                "zone-1",
                stream_id="s",
                instance_id="zone-1-x",
                zone_version="test",
                protocol_version=1,
                store_backend="dict",
                resumed_revision=None,
            ),
            SendPlans(ModelStore(self.g), self.hub, self.max_bytes),
            self._write,
            wake=asyncio.Event(),
            ended=lambda: False,
            heartbeat_interval=3600.0,
        )

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        """Global's message limit, from the next range on (a new one: plans are per limit)."""
        self._max_bytes = value
        self._start_sender()

    @property
    def seen_floor(self) -> int:
        return max(0, self.g.log_floor - self.floor_lag)

    def global_step(self) -> bool:
        """Global reads every ack, then sends what the session asks for. True if it did."""
        did = False
        while self.to_global:
            ack = pb.ZoneMessage.FromString(self.to_global.popleft()).ack
            self.session.on_ack(Ack(ack.seq, ack.applied_revision))
            did = True
        self.hub.head, self.hub.log_floor = self.g.head, self.seen_floor
        return asyncio.run(self._send_all()) or did

    async def _send_all(self) -> bool:
        did = False
        while await self.sender.send_next():
            did = True
        return did

    async def _write(self, data: bytes) -> None:
        """The stream as the send loop sees it: each batch goes to the zone's queue."""
        assert len(data) <= self.max_bytes
        self.to_zone.append(data)
        self.parts_sent += 1

    def zone_step(self) -> bool:
        """The zone applies one message and acknowledges it. True if there was one."""
        if not self.to_zone:
            return False
        msg = pb.GlobalMessage.FromString(self.to_zone.popleft())
        assert msg.WhichOneof("msg") == "batch"
        batch, undecodable = decode_batch(msg.batch)
        assert not undecodable
        self.batches_seen.append(batch)
        applied = self.z.apply(batch, self.g.store_id)
        ack = pb.ZoneMessage(ack=pb.Ack(seq=batch.seq, applied_revision=applied))
        self.to_global.append(ack.SerializeToString())
        return True

    def settle(self, limit: int = 10_000) -> None:
        """Run both sides until neither has anything to do."""
        for _ in range(limit):
            if not (self.global_step() | self.zone_step()):
                return
        raise AssertionError("the pair did not settle")


def assert_converged(pair: ConnectionPair) -> None:
    g, z = pair.g, pair.z
    assert z.rows == g.resources
    assert z.applied_revision == g.head
    assert z.store_id == g.store_id
    assert pair.session.acked_revision == g.head
    assert pair.session.in_flight == 0
    assert z.rejected == []


MESHES = ["default", "m1", "m2"]
NAMES = ["a", "b", "c"]


def random_write(g: GlobalModel, rng: random.Random) -> None:
    """One random put or delete of a Mesh, Secret or GlobalSecret (refused ones are skipped)."""
    kind = rng.choice(list(Kind))
    mesh = rng.choice(MESHES) if kind is Kind.SECRET else ""
    name = rng.choice(MESHES) if kind is Kind.MESH else rng.choice(NAMES)
    key = Key(kind, mesh, name)
    if rng.random() < 0.35:
        g.delete(key)
        return
    data = b"" if kind is Kind.MESH else rng.randbytes(rng.randint(1, 40))
    spec = {"mtls": {"enabled": rng.random() < 0.5}} if kind is Kind.MESH else {}
    g.put(Resource(kind, name, mesh=mesh, data=data, labels={"n": str(g.head)}, spec=spec))


# Weighted: writes outpace sends, so ranges coalesce, split and fall behind the log floor.
STEPS = ["write"] * 5 + ["global"] * 2 + ["zone"] * 3 + ["drop"]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
@given(
    seed=st.integers(0, 2**32),
    steps=st.lists(st.sampled_from(STEPS), min_size=20, max_size=150),
    max_unacked=st.integers(1, 3),
    max_bytes=st.sampled_from([220, 400, 1 << 20]),
    log_size=st.sampled_from([3, 10, 1000]),
    floor_lag=st.integers(0, 2),
)
def test_pair_converges_after_random_writes(
    seed: int, steps: list[str], max_unacked: int, max_bytes: int, log_size: int, floor_lag: int
) -> None:
    """Any interleaving of writes, sends, applies and reconnects ends with zone == global."""
    rng = random.Random(seed)
    g = GlobalModel(log_size=log_size)
    pair = ConnectionPair(g, ZoneModel(), max_unacked, max_bytes, floor_lag)
    for step in steps:
        if step == "write":
            random_write(g, rng)
        elif step == "global":
            pair.global_step()
        elif step == "zone":
            pair.zone_step()
        else:
            pair.connect()  # the stream drops; the zone dials again from its revision
    pair.settle()
    assert_converged(pair)


@pytest.mark.parametrize("seed", range(5))
def test_pair_small_messages_split_into_parts_same_result(seed: int) -> None:
    """With a small max_message_bytes ranges go in several parts and the result is the same."""
    results = []
    for max_bytes in (1 << 20, 250):
        rng = random.Random(seed)
        g = GlobalModel()
        pair = ConnectionPair(g, ZoneModel(), max_unacked=2, max_bytes=max_bytes)
        pair.settle()  # initial (empty) snapshot
        for _ in range(40):
            random_write(g, rng)
        pair.settle()
        assert_converged(pair)
        split = any(not b.final for b in pair.batches_seen)
        results.append((pair.z.rows, pair.parts_sent, split))
    (big_rows, big_parts, big_split), (small_rows, small_parts, small_split) = results
    assert small_rows == big_rows
    assert (big_split, small_split) == (False, True)
    assert small_parts > big_parts


def mesh_shuffle_global() -> GlobalModel:
    """A global where a range creates meshes with secrets and deletes another with its own."""
    g = GlobalModel()
    g.put(Resource(Kind.MESH, "old"))
    for n in NAMES:
        g.put(Resource(Kind.SECRET, n, mesh="old", data=b"o" * 30))
    return g


def mesh_shuffle_writes(g: GlobalModel) -> None:
    for m in ("new-1", "new-2"):
        g.put(Resource(Kind.MESH, m))
    for n in NAMES:
        g.put(Resource(Kind.SECRET, n, mesh="new-2", data=b"x" * 30))
        g.put(Resource(Kind.SECRET, n, mesh="new-1", data=b"y" * 30))
        g.delete(Key(Kind.SECRET, "old", n))
    g.delete(Key(Kind.MESH, "", "old"))
    g.put(Resource(Kind.GLOBAL_SECRET, "g", data=b"z" * 30))


@pytest.mark.parametrize("max_bytes", [180, 220, 260, 330, 400, 520, 1 << 20])
def test_pair_meshes_arrive_before_and_leave_after_their_secrets(max_bytes: int) -> None:
    """Whatever the split into parts, a Secret never lands on a zone without its Mesh."""
    g = mesh_shuffle_global()
    pair = ConnectionPair(g, ZoneModel(), max_unacked=1, max_bytes=max_bytes)
    pair.settle()
    first = len(pair.batches_seen)
    mesh_shuffle_writes(g)
    pair.settle()  # ZoneModel.apply checks the invariant after every part
    assert_converged(pair)
    ranges = pair.batches_seen[first:]
    if max_bytes < 1000:
        assert len(ranges) > 1
    order = [(c.key, c.deleted) for b in ranges for c in b.changes]
    first_secret = min(i for i, (k, _) in enumerate(order) if k.kind is Kind.SECRET)
    last_secret = max(i for i, (k, _) in enumerate(order) if k.kind is Kind.SECRET)
    for i, (k, deleted) in enumerate(order):
        if k.kind is Kind.MESH:
            assert i > last_secret if deleted else i < first_secret


def test_pair_snapshot_in_parts_keeps_meshes_first() -> None:
    """A snapshot split into parts brings each Mesh before its Secrets, with no rejection."""
    g = mesh_shuffle_global()
    mesh_shuffle_writes(g)
    pair = ConnectionPair(g, ZoneModel(), max_unacked=1, max_bytes=200)
    assert pair.session.mode is Mode.SNAPSHOT
    pair.settle()
    assert_converged(pair)
    assert len(pair.batches_seen) > 3
    assert all(b.snapshot for b in pair.batches_seen)


def test_pair_disconnect_mid_range_resumes_and_converges() -> None:
    """A zone cut after part 1 of 3 resumes from its recorded revision and converges."""
    g = GlobalModel()
    pair = ConnectionPair(g, ZoneModel(), max_unacked=5, max_bytes=1 << 20)
    g.put(Resource(Kind.MESH, "default"))
    pair.settle()
    before = g.head
    for n in ("a", "b", "c", "d", "e", "f"):
        g.put(Resource(Kind.SECRET, n, mesh="default", data=b"d" * 60))
    big = max(len(r.change) for r in g.log)
    pair.max_bytes = BATCH_OVERHEAD + 2 * framed_size(big)  # two changes per part: 3 parts
    pair.global_step()
    assert [len(pb.GlobalMessage.FromString(m).batch.changes) for m in pair.to_zone] == [2, 2, 2]
    pair.zone_step()
    assert len(pair.z.rows) == 3  # the mesh and part 1 are applied...
    assert pair.z.applied_revision == before  # ...but the range's revision is not recorded
    assert pair.connect() is Mode.RESUME  # the stream drops; the zone resumes from `before`
    resumed_at = len(pair.batches_seen)
    pair.settle()
    assert_converged(pair)
    replay = pair.batches_seen[resumed_at]
    assert (replay.from_revision, replay.revision) == (before, g.head)


def test_pair_zone_behind_log_floor_after_drop_gets_snapshot() -> None:
    """A zone that reconnects after the log moved past it gets a snapshot and converges."""
    g = GlobalModel(log_size=3)
    pair = ConnectionPair(g, ZoneModel(), max_unacked=2, max_bytes=400)
    g.put(Resource(Kind.MESH, "default"))
    g.put(Resource(Kind.SECRET, "gone", mesh="default", data=b"x"))
    pair.settle()
    g.delete(Key(Kind.SECRET, "default", "gone"))
    for i in range(5):
        g.put(Resource(Kind.GLOBAL_SECRET, f"g{i}", data=b"y"))
    assert pair.connect() is Mode.SNAPSHOT
    pair.settle()
    assert_converged(pair)  # the snapshot's final part removed the stale secret


def test_pair_zone_moved_to_an_empty_global_is_emptied() -> None:
    """A zone that syncs from a new, empty global store ends with no synced copies."""
    g = GlobalModel()
    pair = ConnectionPair(g, ZoneModel(), max_unacked=2, max_bytes=400)
    g.put(Resource(Kind.MESH, "default"))
    g.put(Resource(Kind.SECRET, "s", mesh="default", data=b"x"))
    pair.settle()
    pair.g = GlobalModel(store_id="global-store-b")
    assert pair.connect() is Mode.SNAPSHOT
    pair.settle()
    assert_converged(pair)


def test_pair_range_is_written_as_one_batch_of_pre_framed_changes() -> None:
    """The send loop writes a range as the batch assemble_batch makes from the range's
    coalesced records, framed once: the newest change per key, and the range's revisions."""
    g = GlobalModel()
    pair = ConnectionPair(g, ZoneModel(), max_unacked=2, max_bytes=1 << 20)
    pair.settle()  # the initial (empty) snapshot is batch 1
    g.put(Resource(Kind.MESH, "default"))
    g.put(Resource(Kind.SECRET, "a", mesh="default", data=b"1"))
    g.put(Resource(Kind.SECRET, "a", mesh="default", data=b"2"))
    assert pair.global_step()
    assert list(pair.to_zone) == [
        assemble_batch(
            seq=2,
            from_revision=0,
            revision=g.head,
            snapshot=False,
            final=True,
            head_revision=g.head,
            framed_changes=[r.framed for r in coalesce(g.log)],
        )
    ]
    pair.settle()
    assert_converged(pair)
