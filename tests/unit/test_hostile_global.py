"""What a zone does with bytes no honest global sends: a compromised global, or anyone who
answers the zone's dial in plaintext mode.

A change the zone cannot take is rejected on its own (reported in the ack, the revision
still advances), so one bad resource never stalls the rest of its batch; a header field the
zone would record and send back in later hellos is refused before anything is recorded, so
global cannot leave the zone with a resume point no honest global accepts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from kds import wire
from kds._pb import sync_pb2 as pb
from kds.errors import ProtocolError
from kds.model import Key, Kind, Resource
from kds.protocol.limits import MAX_REVISION, check_hello
from kds.protocol.zone_session import MAX_ACK_REJECTIONS, SyncMode, Welcome, ZoneSession
from kds.store.sqlite import ZoneEngine
from zonecp.batch_log import REJECTIONS_LOGGED, log_rejections

NOW = "2026-11-30T00:00:00Z"
STORE = "0123456789abcdef0123456789abcdef"


def _put(revision: int, **fields: object) -> pb.Change:
    """A put stamped with the times global writes, unless ``fields`` say otherwise."""
    stamped = {"creation_time": NOW, "modification_time": NOW, **fields}
    return pb.Change(revision=revision, put=pb.Resource(**stamped))  # type: ignore[arg-type]


def _batch(*changes: pb.Change, snapshot: bool = True, **header: object) -> pb.Batch:
    last = max((c.revision for c in changes), default=0)
    fields: dict[str, object] = {
        "seq": 1,
        "from_revision": 0,
        "revision": last,
        "head_revision": last,
        "snapshot": snapshot,
        "final": True,
        "chain": b"c" * 16,
    }
    fields.update(header)
    return pb.Batch(changes=list(changes), **fields)  # type: ignore[arg-type]


MESH = _put(1, kind=pb.MESH, name="default", version=1)
GOOD = _put(4, kind=pb.SECRET, mesh="default", name="good", data=b"v", version=4)

# Each: a change no honest global sends, and what the rejection's reason says.
POISON = {
    "a spec that is a JSON list": (
        _put(3, kind=pb.MESH, name="m2", spec=b"[1]", version=3),
        "spec is not a JSON object",
    ),
    "a spec that is a JSON string": (
        _put(3, kind=pb.SECRET, mesh="default", name="s2", data=b"v", spec=b'"ab"', version=3),
        "spec is not a JSON object",
    ),
    "a spec nested 200,000 levels deep": (
        _put(3, kind=pb.MESH, name="m2", spec=b'{"a":' * 200_000 + b"1" + b"}" * 200_000),
        "spec nests deeper than 64 levels",
    ),
    "a spec nested 100 levels deep": (
        _put(3, kind=pb.MESH, name="m2", spec=b'{"a":' * 100 + b"1" + b"}" * 100),
        "spec nests deeper than 64 levels",
    ),
    "a spec that is not UTF-8": (
        _put(3, kind=pb.MESH, name="m2", spec=b'{"a": "\xff"}'),
        "cannot decode change",
    ),
    "a version over the stores' integers": (
        _put(3, kind=pb.SECRET, mesh="default", name="s2", data=b"v", version=2**64 - 1),
        "version is over 9223372036854775807",
    ),
    "a GlobalSecret in a mesh": (
        _put(3, kind=pb.GLOBAL_SECRET, mesh="x", name="gs", data=b"v", version=3),
        "a GlobalSecret has no mesh",
    ),
    "a Mesh in a mesh": (
        _put(3, kind=pb.MESH, mesh="y", name="ghost", version=3),
        "a Mesh has no mesh",
    ),
    "a delete of a Mesh in a mesh": (
        pb.Change(revision=3, delete=pb.ResourceKey(kind=pb.MESH, mesh="y", name="default")),
        "a Mesh has no mesh",
    ),
    "a Mesh whose mTLS backend has no type": (
        _put(3, kind=pb.MESH, name="m2", spec=b'{"mtls": {"backends": [{"name": "x"}]}}'),
        "mtls.backends[0].type: must be provided or builtin",
    ),
    "a creation time that is no timestamp": (
        _put(3, kind=pb.SECRET, mesh="default", name="s2", data=b"v", creation_time="c5"),
        "invalid resource: creation_time: must be an RFC 3339 timestamp",
    ),
    "a modification time past the end of its month": (
        _put(
            3,
            kind=pb.SECRET,
            mesh="default",
            name="s2",
            data=b"v",
            modification_time="2026-02-30T00:00:00.000Z",
        ),
        "invalid resource: modification_time: must be an RFC 3339 timestamp",
    ),
    "a Mesh whose provided backend names no secrets": (
        _put(
            3,
            kind=pb.MESH,
            name="m2",
            spec=json.dumps(
                {"mtls": {"backends": [{"name": "x", "type": "provided", "conf": {}}]}}
            ).encode(),
        ),
        "mtls.backends[0].conf.cert",
    ),
}


@pytest.fixture
def zone(tmp_path: Path) -> ZoneEngine:
    z = ZoneEngine(tmp_path / "zone.db")
    yield z
    z.close()


@pytest.mark.parametrize("what", list(POISON))
def test_one_bad_change_is_rejected_alone_and_the_batch_applies(
    zone: ZoneEngine, what: str
) -> None:
    """The good changes around it are applied, the revision is recorded (nothing is sent
    again in a loop), and the reason names the problem, never a value."""
    change, reason = POISON[what]
    batch, undecodable = wire.decode_batch(_batch(MESH, change, GOOD))
    result = zone.apply_batch(batch, STORE, NOW)
    reasons = [r.reason for r in undecodable] + [r for _, r in result.rejected]
    assert len(reasons) == 1 and reason in reasons[0], reasons
    assert result.applied_revision == 4
    assert zone.get(Key(Kind.SECRET, "default", "good")) is not None
    assert zone.get(Key(Kind.MESH, "", "m2")) is None
    assert zone.get(Key(Kind.MESH, "", "ghost")) is None


def test_a_global_secret_in_a_mesh_cannot_sit_beside_the_zone_s_own(zone: ZoneEngine) -> None:
    """A key with a mesh where its kind has none would be a second row of the same name,
    beside the zone's own, with no conflict reported."""
    zone.put(Resource(Kind.GLOBAL_SECRET, "gs", data=b"mine"), NOW)
    change, _ = POISON["a GlobalSecret in a mesh"]
    batch, undecodable = wire.decode_batch(_batch(MESH, change))
    zone.apply_batch(batch, STORE, NOW)
    assert len(undecodable) == 1
    total, rows = zone.page(Kind.GLOBAL_SECRET)
    assert total == 1 and [(r.resource.mesh, r.origin) for r in rows] == [("", "zone")]


def test_an_mtls_field_this_version_does_not_know_is_no_reason_to_reject(
    zone: ZoneEngine,
) -> None:
    """A newer global may send fields this zone does not know: the Mesh is kept."""
    spec = {"mtls": {"backends": [{"name": "ca-1", "type": "builtin", "newField": 1}]}}
    change = _put(2, kind=pb.MESH, name="m2", spec=json.dumps(spec).encode(), version=2)
    batch, undecodable = wire.decode_batch(_batch(MESH, change))
    result = zone.apply_batch(batch, STORE, NOW)
    assert (undecodable, result.rejected) == ([], [])
    assert zone.get(Key(Kind.MESH, "", "m2")) is not None


def _session() -> ZoneSession:
    s = ZoneSession(zone="z", instance_id="z-1", software_version="1", max_message_bytes=4096)
    s.on_open(STORE, 0, b"", "sqlite")
    return s


@pytest.mark.parametrize(
    ("instance_id", "store_id", "head", "field"),
    [
        ("global-1", "s" * 65, 1, "welcome.global_store_id"),
        ("global-1", "store\n1", 1, "welcome.global_store_id"),
        ("g" * 301, STORE, 1, "welcome.global_instance_id"),
        ("global-\x1b[2J", STORE, 1, "welcome.global_instance_id"),
        ("global-1", STORE, 2**63, "welcome.head_revision"),
    ],
)
def test_a_welcome_field_over_its_limit_ends_the_stream(
    instance_id: str, store_id: str, head: int, field: str
) -> None:
    """Refused before anything is recorded: the zone sends the store id back in every hello."""
    s = _session()
    with pytest.raises(ProtocolError, match=f"^global's {field}: ") as e:
        s.on_welcome(Welcome(instance_id, store_id, head, SyncMode.SNAPSHOT), now=1.0)
    assert "\x1b" not in str(e.value) and "\n" not in str(e.value)
    assert s.global_store_id == ""


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ({"chain": b"c" * 65}, "batch.chain"),
        ({"revision": MAX_REVISION + 1}, "batch.revision"),
        ({"from_revision": 2**64 - 1}, "batch.from_revision"),
        ({"head_revision": 2**63}, "batch.head_revision"),
    ],
)
def test_a_batch_header_over_its_limit_ends_the_stream(
    header: dict[str, object], field: str
) -> None:
    """A revision or chain the zone would record is checked first: once stored, an honest
    global would refuse every hello that repeats it."""
    s = _session()
    s.on_welcome(Welcome("global-1", STORE, 3, SyncMode.SNAPSHOT), now=1.0)
    batch, _ = wire.decode_batch(_batch(MESH, **header))
    with pytest.raises(ProtocolError, match=f"^global's {field}: "):
        s.on_batch(batch, [], now=2.0)


def test_what_a_zone_accepts_an_honest_global_accepts_back() -> None:
    """The welcome and header limits are the hello's: anything that passes them makes a hello
    global takes."""
    s = _session()
    s.on_welcome(Welcome("global-1", "s" * 64, MAX_REVISION, SyncMode.SNAPSHOT), now=1.0)
    batch, _ = wire.decode_batch(_batch(MESH, chain=b"c" * 64, revision=MAX_REVISION))
    s.on_batch(batch, [], now=2.0)
    hello = {
        "instance_id": "z-1",
        "software_version": "1",
        "store_backend": "sqlite",
        "store_id": "s" * 64,
        "revision": MAX_REVISION,
        "chain": b"c" * 64,
    }
    assert check_hello(**hello) is None  # type: ignore[arg-type]


def test_a_batch_of_many_undecodable_changes_makes_a_bounded_ack_and_log() -> None:
    """60,000 changes of a kind no version knows, in one batch of about 360 KB: the ack
    names MAX_ACK_REJECTIONS of them (100,000 made it over 4 MiB, and the zone could not
    send it), and the zone's log has REJECTIONS_LOGGED lines and a count, with names cut."""
    unknown = pb.Change(revision=2, put=pb.Resource(kind=99, name="n" * 5000))  # type: ignore[arg-type]
    many = [pb.Change(revision=2, put=pb.Resource(kind=99, name="x"))] * 60_000  # type: ignore[arg-type]
    batch, undecodable = wire.decode_batch(_batch(MESH, unknown, *many, snapshot=False))
    s = _session()
    s.on_welcome(Welcome("global-1", STORE, 2, SyncMode.RESUME), now=1.0)
    s.on_batch(batch, undecodable, now=2.0)

    class Result:
        applied_revision = 2
        rejected: list[tuple[Key, str]] = []
        new_conflicts: list[Key] = []
        resolved_conflicts: list[Key] = []

    ack = s.on_applied(Result(), now=3.0).ack
    assert ack is not None and len(ack.rejected) == MAX_ACK_REJECTIONS
    assert wire.ack_to_pb(ack).ByteSize() < 1 << 20
    with capture_logs() as logs:
        log_rejections(structlog.get_logger(), [], undecodable)
    assert len(logs) == REJECTIONS_LOGGED + 1
    assert logs[-1]["count"] == 60_001 - REJECTIONS_LOGGED
    assert max(len(e.get("name", "")) for e in logs) < 400
    assert s.rejected == {"unknown": 60_001}  # kinds it does not know: one counter


def test_a_batch_of_more_changes_than_any_part_holds_is_refused_unread() -> None:
    """Two million empty changes in a 4 MB batch took a zone's event loop 5 s to decode and
    log; more than MAX_BATCH_CHANGES end the stream before one is read."""
    from kds.wire import MAX_BATCH_CHANGES

    flood = _batch(MESH, *[pb.Change()] * (MAX_BATCH_CHANGES + 1), snapshot=False)
    with pytest.raises(ProtocolError, match=f"more than {MAX_BATCH_CHANGES} changes"):
        wire.decode_batch(flood)


def test_a_later_round_naming_more_nodes_than_its_parents_children_is_refused() -> None:
    """After the groups round global names only the children of the nodes it expands, 16
    at most each; 300,000 nodes in a 3.8 MB query took a zone's event loop 1.3 s to read."""
    parent = pb.DigestNode(kind=pb.SECRET, mesh="m", prefix="", count=40)
    child = pb.DigestNode(kind=pb.SECRET, mesh="m", prefix="a", count=1, hash=b"h" * 16)
    ok = pb.DigestQuery(check=1, revision=2, parents=[parent], nodes=[child] * 16)
    assert len(wire.query_from_pb(ok).nodes) == 16
    flood = pb.DigestQuery(check=1, revision=2, parents=[parent], nodes=[child] * 17)
    with pytest.raises(ProtocolError, match="more nodes than its parents have children"):
        wire.query_from_pb(flood)


def test_a_heartbeat_revision_past_the_limit_ends_the_stream() -> None:
    """A heartbeat's revision becomes the zone's idea of global's head, in its status and
    metrics: one past 2^63-1 is refused like a batch header's."""
    s = _session()
    s.on_welcome(Welcome("global-1", STORE, 2, SyncMode.RESUME), now=1.0)
    s.on_heartbeat(MAX_REVISION, now=2.0)
    with pytest.raises(ProtocolError, match=r"heartbeat\.head_revision"):
        s.on_heartbeat(MAX_REVISION + 1, now=3.0)
