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
