"""Unit tests for kds.protocol.batching: coalescing a range and packing it into parts."""

from __future__ import annotations

import pytest

from kds._pb import sync_pb2 as pb
from kds.model import Key, Kind, Resource
from kds.protocol.batching import coalesce, pack
from kds.protocol.records import ChangeRecord
from kds.wire import BATCH_OVERHEAD, assemble_batch, change_delete, change_put, framed_size

MESH = Key(Kind.MESH, "", "default")
MESH2 = Key(Kind.MESH, "", "other")
SECRET = Key(Kind.SECRET, "default", "s1")
GSECRET = Key(Kind.GLOBAL_SECRET, "", "g1")


def put(revision: int, key: Key, data: bytes = b"x") -> ChangeRecord:
    res = Resource(key.kind, key.name, mesh=key.mesh, data=b"" if key.kind is Kind.MESH else data)
    return ChangeRecord(revision, key, False, change_put(revision, res.with_meta(version=revision)))


def delete(revision: int, key: Key) -> ChangeRecord:
    return ChangeRecord(revision, key, True, change_delete(revision, key))


def secrets(n: int, size: int = 50, start: int = 1) -> list[ChangeRecord]:
    return [put(start + i, Key(Kind.SECRET, "default", f"s{i}"), b"d" * size) for i in range(n)]


def assemble(records: list[ChangeRecord], final: bool, big: int = 2**63) -> bytes:
    """A part as the servicer encodes it, with the largest header values possible."""
    return assemble_batch(
        seq=big,
        from_revision=big,
        revision=big,
        snapshot=True,
        final=final,
        head_revision=big,
        framed_changes=[r.framed for r in records],
    )


# --------------------------------------------------------------------------- coalesce


def test_coalesce_keeps_newest_change_per_key() -> None:
    """Several changes to one key coalesce to the newest one."""
    out = coalesce([put(1, GSECRET, b"a"), put(2, GSECRET, b"b"), delete(3, GSECRET)])
    assert out == [delete(3, GSECRET)]
    out = coalesce([delete(1, GSECRET), put(2, GSECRET, b"b")])
    assert [(r.revision, r.deleted) for r in out] == [(2, False)]


def test_coalesce_orders_mesh_puts_first_and_mesh_deletes_last() -> None:
    """Mesh puts come first, Mesh deletes last, other kinds in revision order between."""
    recs = [
        delete(1, SECRET),
        delete(2, MESH2),
        put(3, GSECRET),
        put(4, MESH),
        put(5, Key(Kind.SECRET, "default", "s2")),
    ]
    out = coalesce(recs)
    assert [r.revision for r in out] == [4, 1, 3, 5, 2]


def test_coalesce_mesh_deleted_then_recreated_is_a_put_first() -> None:
    """A Mesh deleted and created again within the range is sent as a put, before Secrets."""
    out = coalesce(
        [put(1, SECRET), delete(2, SECRET), delete(3, MESH), put(4, MESH), put(5, SECRET)]
    )
    assert [(r.key, r.deleted, r.revision) for r in out] == [(MESH, False, 4), (SECRET, False, 5)]


def test_coalesce_empty_range() -> None:
    """Coalescing nothing gives nothing."""
    assert coalesce([]) == []


# --------------------------------------------------------------------------- pack


def test_pack_single_part_when_it_fits() -> None:
    """Records that fit in one message go in one final part, in order."""
    recs = secrets(5)
    parts = list(pack(recs, 1 << 20))
    assert len(parts) == 1
    assert parts[0].final
    assert parts[0].records == recs


def test_pack_empty_yields_one_empty_final_part() -> None:
    """An empty range still yields one (empty) final part: it carries the revision."""
    parts = list(pack([], 1 << 20))
    assert len(parts) == 1
    assert parts[0].final
    assert parts[0].records == []


@pytest.mark.parametrize("limit", [200, 257, 300, 512, 1000, 4096])
def test_pack_parts_stay_within_max_message_bytes(limit: int) -> None:
    """Every assembled part, header included, is at most max_message_bytes; only the last is final."""
    recs = secrets(40, size=60) + [delete(100 + i, Key(Kind.MESH, "", f"m{i}")) for i in range(5)]
    parts = list(pack(recs, limit))
    assert [r for p in parts for r in p.records] == recs  # nothing lost, order kept
    assert [p.final for p in parts] == [False] * (len(parts) - 1) + [True]
    assert all(p.records for p in parts)  # no empty part when there are records
    for p in parts:
        data = assemble(p.records, p.final)
        assert len(data) <= limit
        assert len(pb.GlobalMessage.FromString(data).batch.changes) == len(p.records)


def test_pack_fills_parts_exactly_to_the_budget() -> None:
    """A part takes as many changes as fit within max_message_bytes - BATCH_OVERHEAD."""
    recs = secrets(6)
    n = framed_size(len(recs[0].change))
    assert all(framed_size(len(r.change)) == n for r in recs)
    parts = list(pack(recs, BATCH_OVERHEAD + 2 * n))
    assert [len(p.records) for p in parts] == [2, 2, 2]
    parts = list(pack(recs, BATCH_OVERHEAD + 2 * n - 1))
    assert [len(p.records) for p in parts] == [1] * 6


def test_pack_overhead_covers_the_largest_header() -> None:
    """BATCH_OVERHEAD covers a GlobalMessage{batch} header with every field at its largest."""
    assert len(assemble([], True)) <= BATCH_OVERHEAD


def test_pack_oversized_change_travels_alone() -> None:
    """A change larger than the budget is not dropped: it goes alone in its own part."""
    recs = [*secrets(1, size=10), *secrets(1, size=500, start=2), *secrets(1, size=10, start=3)]
    parts = list(pack(recs, 300))
    assert [len(p.records) for p in parts] == [1, 1, 1]


def test_part_bytes_closes_parts_early_but_never_splits_what_fits_a_message() -> None:
    records = secrets(50, size=1000)
    parts = list(pack(records, 1 << 20, part_bytes=8 * 1024))
    assert len(parts) > 1 and [r for p in parts for r in p.records] == records
    for p in parts:
        assert sum(len(r.framed) for r in p.records) + BATCH_OVERHEAD <= 8 * 1024
    big = [put(1, SECRET, b"y" * 20_000)]  # larger than a part, within the message limit
    (only,) = pack(big, 1 << 20, part_bytes=8 * 1024)
    assert only.records == big and only.final and not only.split_unit


def test_a_part_counts_its_changes_by_kind_once() -> None:
    """Every stream sending a shared part records its counts by kind: counted once, deletes
    included, and the same mapping handed to each."""
    records = [put(1, MESH), put(2, SECRET), delete(3, Key(Kind.SECRET, "default", "s2")),
               put(4, GSECRET)]  # fmt: skip
    (part,) = pack(records, 1 << 20)
    assert part.kind_counts == {"Mesh": 1, "Secret": 2, "GlobalSecret": 1}
    assert part.kind_counts is part.kind_counts
