"""Unit tests for kds.wire: model <-> protobuf and batch assembly from pre-encoded changes."""

from __future__ import annotations

import pytest

from kds._pb import sync_pb2 as pb
from kds.model import Key, Kind, Resource
from kds.wire import (
    BATCH_OVERHEAD,
    KIND_TO_PB,
    PB_TO_KIND,
    assemble_batch,
    change_delete,
    change_put,
    frame_change,
    framed_size,
    key_from_pb,
    key_to_pb,
    resource_from_pb,
    resource_to_pb,
)

RESOURCES = [
    Resource(
        Kind.SECRET,
        "s1",
        mesh="default",
        data=b"\x00\x01\xffbinary",
        labels={"app": "web", "env": ""},
        creation_time="2024-01-01T00:00:00Z",
        modification_time="2024-01-02T03:04:05Z",
        version=42,
    ),
    Resource(Kind.GLOBAL_SECRET, "g1", data=b"x" * 1000, version=1),
    Resource(Kind.MESH, "default"),
    Resource(
        Kind.MESH,
        "with-mtls",
        spec={"mtls": {"backends": [{"name": "ca-1", "type": "provided"}]}},
        labels={"a": "b"},
        version=2**40,
    ),
]


def test_kind_maps_are_inverse_and_complete() -> None:
    """Every model Kind maps to a protobuf Kind and back."""
    assert set(KIND_TO_PB) == set(Kind)
    assert {PB_TO_KIND[v] for v in KIND_TO_PB.values()} == set(Kind)
    assert pb.KIND_UNSPECIFIED not in PB_TO_KIND


@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: f"{r.kind}-{r.name}")
def test_resource_round_trip(res: Resource) -> None:
    """resource_from_pb(resource_to_pb(r)) == r, also through serialized bytes."""
    assert resource_from_pb(resource_to_pb(res)) == res
    raw = resource_to_pb(res).SerializeToString()
    assert resource_from_pb(pb.Resource.FromString(raw)) == res


def test_resource_to_pb_fields() -> None:
    """resource_to_pb fills each protobuf field from the resource."""
    m = resource_to_pb(RESOURCES[0])
    assert m.kind == pb.SECRET
    assert (m.mesh, m.name) == ("default", "s1")
    assert m.data == b"\x00\x01\xffbinary"
    assert dict(m.labels) == {"app": "web", "env": ""}
    assert m.version == 42
    assert m.spec == b""


def test_mesh_spec_is_json_and_empty_when_none() -> None:
    """A Mesh spec travels as JSON bytes; no spec encodes as empty bytes."""
    assert resource_to_pb(Resource(Kind.MESH, "m")).spec == b""
    m = resource_to_pb(RESOURCES[3])
    assert m.spec.startswith(b"{") and b"provided" in m.spec


def test_resource_from_pb_unknown_kind_raises_keyerror() -> None:
    """A kind this version does not know raises KeyError (the zone turns it into a rejection)."""
    with pytest.raises(KeyError):
        resource_from_pb(pb.Resource(kind=pb.KIND_UNSPECIFIED, name="x"))
    with pytest.raises(KeyError):
        resource_from_pb(pb.Resource(kind=99, name="x"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [Key(Kind.SECRET, "m", "s"), Key(Kind.GLOBAL_SECRET, "", "g"), Key(Kind.MESH, "", "m")],
)
def test_key_round_trip(key: Key) -> None:
    """key_from_pb(key_to_pb(k)) == k."""
    assert key_from_pb(key_to_pb(key)) == key


def test_change_put_and_delete_decode() -> None:
    """change_put / change_delete encode a Change with the revision and op."""
    put = pb.Change.FromString(change_put(7, RESOURCES[0]))
    assert put.revision == 7 and put.WhichOneof("op") == "put"
    assert resource_from_pb(put.put) == RESOURCES[0]
    key = Key(Kind.SECRET, "m", "s")
    dele = pb.Change.FromString(change_delete(8, key))
    assert dele.revision == 8 and dele.WhichOneof("op") == "delete"
    assert key_from_pb(dele.delete) == key


def test_frame_change_size() -> None:
    """framed_size predicts the length of frame_change output, for small and large changes."""
    for change in (b"", b"x", b"y" * 127, b"z" * 128, b"w" * 20000):
        assert len(frame_change(change)) == framed_size(len(change))


def _decode(raw: bytes) -> pb.Batch:
    msg = pb.GlobalMessage.FromString(raw)
    assert msg.WhichOneof("msg") == "batch"
    return msg.batch


def test_assemble_batch_header_and_changes() -> None:
    """assemble_batch yields a GlobalMessage{batch} with the header and the same changes."""
    encoded = [
        change_put(3, RESOURCES[2]),
        change_put(4, RESOURCES[0]),
        change_delete(5, Key(Kind.GLOBAL_SECRET, "", "gone")),
    ]
    raw = assemble_batch(
        seq=9,
        from_revision=2,
        revision=5,
        snapshot=False,
        final=True,
        head_revision=11,
        framed_changes=[frame_change(c) for c in encoded],
    )
    assert raw.endswith(b"".join(frame_change(c) for c in encoded))  # bytes reused verbatim
    batch = _decode(raw)
    assert (batch.seq, batch.from_revision, batch.revision) == (9, 2, 5)
    assert (batch.snapshot, batch.final, batch.head_revision) == (False, True, 11)
    assert list(batch.changes) == [pb.Change.FromString(c) for c in encoded]
    assert [c.revision for c in batch.changes] == [3, 4, 5]
    assert resource_from_pb(batch.changes[1].put) == RESOURCES[0]
    assert key_from_pb(batch.changes[2].delete) == Key(Kind.GLOBAL_SECRET, "", "gone")


def test_assemble_batch_equals_protobuf_encoding() -> None:
    """The assembled bytes parse equal to the message protobuf itself would build."""
    encoded = [change_put(i, RESOURCES[i % len(RESOURCES)]) for i in range(1, 6)]
    raw = assemble_batch(
        seq=1,
        from_revision=0,
        revision=5,
        snapshot=True,
        final=False,
        head_revision=5,
        framed_changes=(frame_change(c) for c in encoded),
    )
    expected = pb.GlobalMessage(
        batch=pb.Batch(
            seq=1,
            from_revision=0,
            revision=5,
            snapshot=True,
            final=False,
            head_revision=5,
            changes=[pb.Change.FromString(c) for c in encoded],
        )
    )
    assert pb.GlobalMessage.FromString(raw) == expected


def test_assemble_empty_batch() -> None:
    """An empty batch (e.g. an empty snapshot at revision 0) still parses as a batch."""
    raw = assemble_batch(
        seq=0,
        from_revision=0,
        revision=0,
        snapshot=True,
        final=True,
        head_revision=0,
        framed_changes=[],
    )
    batch = _decode(raw)
    assert list(batch.changes) == []
    assert batch.snapshot and batch.final


def test_assemble_batch_all_zero_header() -> None:
    """A batch whose header fields are all defaults still parses as a batch with no changes."""
    raw = assemble_batch(
        seq=0,
        from_revision=0,
        revision=0,
        snapshot=False,
        final=False,
        head_revision=0,
        framed_changes=[],
    )
    batch = _decode(raw)
    assert list(batch.changes) == [] and not batch.final


def test_assemble_batch_many_changes() -> None:
    """Thousands of changes (a body over multi-byte length varints) survive assembly intact."""
    encoded = [
        change_put(i, Resource(Kind.SECRET, f"s{i}", mesh="m", data=bytes([i % 256]) * (i % 300)))
        if i % 3
        else change_delete(i, Key(Kind.SECRET, "m", f"s{i}"))
        for i in range(1, 3001)
    ]
    raw = assemble_batch(
        seq=2**33,
        from_revision=2**40,
        revision=2**40 + 3000,
        snapshot=False,
        final=True,
        head_revision=2**41,
        framed_changes=[frame_change(c) for c in encoded],
    )
    batch = _decode(raw)
    assert batch.seq == 2**33 and batch.head_revision == 2**41
    assert batch.revision == 2**40 + 3000
    assert len(batch.changes) == 3000
    assert list(batch.changes) == [pb.Change.FromString(c) for c in encoded]


def test_assembled_size_matches_framed_sizes() -> None:
    """A batch is its header plus the sum of framed sizes, within BATCH_OVERHEAD."""

    encoded = [change_put(i, RESOURCES[0]) for i in range(50)]
    raw = assemble_batch(
        seq=2**63,
        from_revision=2**63,
        revision=2**64 - 1,
        snapshot=True,
        final=True,
        head_revision=2**64 - 1,
        framed_changes=[frame_change(c) for c in encoded],
    )
    body = sum(framed_size(len(c)) for c in encoded)
    assert body < len(raw) <= body + BATCH_OVERHEAD


def test_a_status_report_lists_the_first_conflicts_and_counts_them_all() -> None:
    from kds.protocol.limits import CONFLICTS_REPORTED, PROBLEM_CHARS
    from kds.wire import status_to_pb

    many = [Key(Kind.SECRET, "m" * 253, f"{i:06d}" + "n" * 247) for i in range(2_500)]
    report = status_to_pb(many, "p" * 5000)
    assert [k.name for k in report.status.conflicts] == [k.name for k in many[:1000]]
    assert report.status.conflict_count == 2_500
    assert len(report.status.problem) == PROBLEM_CHARS
    # Whatever the zone holds, its report stays far below the 4 MiB a message may be.
    assert CONFLICTS_REPORTED == 1000 and report.ByteSize() < 600_000
    # Up to the bound, the report lists them all and needs no count (as an older zone's).
    few = status_to_pb(many[:CONFLICTS_REPORTED], "")
    assert len(few.status.conflicts) == CONFLICTS_REPORTED and few.status.conflict_count == 0
