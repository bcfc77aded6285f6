"""Decoding on the zone: what this version cannot read becomes a per-resource rejection."""

from __future__ import annotations

from kds import wire
from kds._pb import sync_pb2 as pb
from kds.model import Kind, Resource
from kds.wire import decode_batch


def _batch(*changes: pb.Change) -> pb.Batch:
    return pb.Batch(seq=1, from_revision=0, revision=len(changes), final=True, changes=changes)


def test_unknown_kind_from_a_newer_global_is_rejected_by_key_and_the_rest_decodes() -> None:
    """A put of kind 99 becomes a rejection naming kind, mesh and name; the others decode."""
    good = pb.Change(revision=1, put=wire.resource_to_pb(Resource(Kind.MESH, "m")))
    odd = pb.Change(revision=2, put=pb.Resource(kind=99, mesh="m", name="future"))  # type: ignore[arg-type]
    batch, undecodable = decode_batch(_batch(good, odd))
    assert [c.key for c in batch.changes] == [Resource(Kind.MESH, "m").key]
    assert len(undecodable) == 1
    rej = undecodable[0]
    assert (rej.key.kind, rej.key.mesh, rej.key.name) == (99, "m", "future")
    assert "unknown resource kind 99" in rej.reason


def test_change_without_operation_is_rejected() -> None:
    """A change with neither put nor delete is reported, not applied and not fatal."""
    batch, undecodable = decode_batch(_batch(pb.Change(revision=1)))
    assert batch.changes == ()
    assert undecodable[0].reason == "change with no operation"


def test_delete_decodes_to_a_key() -> None:
    """A delete decodes to an Incoming with its key and no resource."""
    key = Resource(Kind.SECRET, "s", mesh="m").key
    batch, undecodable = decode_batch(_batch(pb.Change(revision=1, delete=wire.key_to_pb(key))))
    assert not undecodable
    assert batch.changes[0].key == key and batch.changes[0].deleted


def test_a_repair_counts_only_what_it_changed() -> None:
    """A repair batch's refused changes and its deletes of keys the zone did not hold are
    not counted or logged as repaired; a repair that changed nothing logs no warning."""
    import structlog
    from structlog.testing import capture_logs

    from tests.unit.test_zone_dial_loop import _client, _Store
    from zonecp.batch_log import log_repair

    put = Resource(Kind.SECRET, "s1", mesh="default", data=b"v")
    gone = Resource(Kind.SECRET, "s2", mesh="default").key
    held = Resource(Kind.SECRET, "s3", mesh="default").key
    refused = Resource(Kind.SECRET, "s4", mesh="default")
    changes = [
        pb.Change(revision=1, put=wire.resource_to_pb(put)),
        pb.Change(revision=2, delete=wire.key_to_pb(gone)),
        pb.Change(revision=3, delete=wire.key_to_pb(held)),
        pb.Change(revision=4, put=wire.resource_to_pb(refused)),
    ]
    batch, _ = decode_batch(_batch(*changes))
    client = _client(_Store())
    with capture_logs() as logs:
        log_repair(
            structlog.get_logger(), client.status, batch, [(refused.key, "mesh gone")], [gone]
        )
    assert client.status.repaired == 2
    assert client.status.last_repaired == ["Secret default/s1", "Secret default/s3"]
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["count"] == 2 and warning["deleted"] == 1
    only_gone, _ = decode_batch(_batch(changes[1]))
    with capture_logs() as logs:
        log_repair(structlog.get_logger(), client.status, only_gone, [], [gone])
    assert client.status.repaired == 2
    assert [e["log_level"] for e in logs] == ["info"]
