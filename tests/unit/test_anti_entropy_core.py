"""The anti-entropy tree and check, pure: a changed leaf changes its parents; a check finds
exactly the keys that differ (and only those) however the zone's copy was damaged; a hostile
answer is refused."""

from __future__ import annotations

import dataclasses
import hashlib
from array import array
from itertools import accumulate
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kds import wire
from kds._pb import sync_pb2 as pb
from kds.errors import ProtocolError
from kds.model import Key, Kind, Resource
from kds.protocol.anti_entropy import (
    LEAF_BUCKET,
    MAX_ANSWER_NODES,
    MAX_EXPAND,
    MAX_REPAIR,
    Answer,
    GlobalCheck,
    Listed,
    Outcome,
    Query,
    answer,
    last_round,
)
from kds.protocol.digest_tree import (
    DIGEST_BYTES,
    DigestTree,
    NodeId,
    Summary,
    _leaf_hash,
    bucket_of,
    leaf_digest,
)

Leaves = dict[Key, bytes]


def _digest(i: int) -> bytes:
    return i.to_bytes(16, "big")


def _store(n: int, meshes: int = 2) -> Leaves:
    out: Leaves = {Key(Kind.MESH, "", f"m{j}"): _digest(j) for j in range(meshes)}
    for i in range(n):
        out[Key(Kind.SECRET, f"m{i % meshes}", f"s{i}")] = _digest(1000 + i)
    out[Key(Kind.GLOBAL_SECRET, "", "g")] = _digest(7)
    return out


def run_check(global_leaves: Leaves, zone_leaves: Leaves, zone_revision: int = 5) -> Outcome:
    """Drive one check to its outcome, as the two daemons do over the stream; the zone's
    view of when the check is over (``last_round``, when it lets go of its tree) is never
    wrong: after such an answer global asks nothing more."""
    check = GlobalCheck(1, 5, DigestTree(global_leaves.items()))
    zone_tree = DigestTree(zone_leaves.items())
    step: Query | Outcome = check.first_query()
    while isinstance(step, Query):
        ans = answer(zone_tree, step, zone_revision)
        step = check.on_answer(ans)
        if last_round(ans):
            assert isinstance(step, Outcome), "global asked more after the zone's last round"
    return step


def test_the_zone_knows_the_last_round_of_common_checks() -> None:
    """An equal store, or small differences listed leaf by leaf, end the check with the first
    answer, and the zone knows it; a difference to descend into does not."""
    g = _store(300)
    assert last_round(_first_answer(g, dict(g))[1])
    assert last_round(_first_answer(g, {**g, Key(Kind.MESH, "", "m0"): _digest(99)})[1])
    damaged = {**g, Key(Kind.SECRET, "m0", "s4"): _digest(99)}
    assert not last_round(_first_answer(g, damaged)[1])


def test_leaf_digest_covers_every_field_global_sends() -> None:
    base = Resource(Kind.SECRET, "s", mesh="m", data=b"v", labels={"a": "b"}, version=3)
    d = leaf_digest(base)
    assert d == leaf_digest(dataclasses.replace(base, labels={"a": "b"}))
    for change in (
        {"data": b"w"},
        {"labels": {"a": "c"}},
        {"version": 4},
        {"name": "t"},
        {"mesh": "n"},
        {"modification_time": "2026-01-01T00:00:00Z"},
        {"creation_time": "2026-01-01T00:00:00Z"},
    ):
        assert leaf_digest(dataclasses.replace(base, **change)) != d, change  # type: ignore[arg-type]


def test_leaf_digests_stay_as_released() -> None:
    """Zones and global of different releases compare leaves: their bytes never change."""
    secret = Resource(
        Kind.SECRET,
        "s-\u00fc",
        mesh="default",
        data=b"\x00abc",
        labels={"b": "2", "a": "1"},
        creation_time="2026-11-30T00:00:00Z",
        modification_time="2026-11-30T00:00:01Z",
        version=7,
    )
    assert leaf_digest(secret).hex() == "e5e9256c50e97ef7b614ed39db7aba3e"
    spec = {"mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}
    mesh = Resource(Kind.MESH, "default", spec=spec, version=1)
    assert leaf_digest(mesh).hex() == "97c01f7197521b31d40cba1654359095"
    tree = DigestTree([(secret.key, leaf_digest(secret))])
    node = NodeId(Kind.SECRET, "default")
    assert tree.summary(node).hash.hex() == "59f40b1a15d3d5c791811710d320f78f"


def test_a_changed_leaf_changes_every_parent_and_no_sibling() -> None:
    leaves = _store(500)
    tree = DigestTree(leaves.items())
    key = Key(Kind.SECRET, "m1", "s7")
    damaged = DigestTree({**leaves, key: _digest(1)}.items())
    bucket = bucket_of(key.name)
    for depth in range(4):
        node = NodeId(Kind.SECRET, "m1", bucket[:depth])
        assert tree.summary(node).hash != damaged.summary(node).hash
        assert tree.summary(node).count == damaged.summary(node).count
    sibling = NodeId(Kind.SECRET, "m1", bucket[:1] + ("0" if bucket[1] != "0" else "1"))
    assert tree.summary(sibling) == damaged.summary(sibling)
    assert tree.summary(NodeId(Kind.SECRET, "m0")) == damaged.summary(NodeId(Kind.SECRET, "m0"))


def _reference_summary(leaves: Leaves, node: NodeId) -> tuple[int, bytes]:
    """A node's count and hash as the protocol defines them, computed leaf by leaf: the
    hash of the leaf hashes under the node, in (bucket, name) order. Zones of an earlier
    version compute it so, so however the tree holds its leaves it must give the same."""
    under = sorted(
        (bucket_of(k.name), k.name, d)
        for k, d in leaves.items()
        if (k.kind, k.mesh) == (node.kind, node.mesh) and bucket_of(k.name).startswith(node.prefix)
    )
    if not under:
        return 0, b""
    leaf_hashes = b"".join(_leaf_hash(n, d) for _, n, d in under)
    return len(under), hashlib.blake2b(leaf_hashes, digest_size=DIGEST_BYTES).digest()


def test_node_hashes_are_the_protocols_and_leaves_come_back_as_given() -> None:
    leaves = _store(300)
    leaves[Key(Kind.SECRET, "m0", "caf\u00e9-\u4e2d")] = _digest(99)  # names are UTF-8
    tree = DigestTree(leaves.items())
    assert len(tree) == len(leaves)
    nodes = [s.node for s in tree.groups()]
    for group in list(nodes):
        for child in tree.children(group):
            nodes.append(child.node)
            nodes += [c.node for c in tree.children(child.node)]
    for node in nodes:
        s = tree.summary(node)
        assert (s.count, s.hash) == _reference_summary(leaves, node), node
        listed = dict(tree.leaves(node))
        assert len(listed) == s.count
        assert all(leaves[Key(node.kind, node.mesh, n)] == d for n, d in listed.items())
    assert tree.summary(NodeId(Kind.SECRET, "nowhere")) == Summary(
        NodeId(Kind.SECRET, "nowhere"), 0, b""
    )
    assert [c.node.prefix for c in tree.children(NodeId(Kind.MESH, ""))] == sorted(
        {bucket_of(k.name)[0] for k in leaves if k.kind is Kind.MESH}
    )


def test_equal_stores_are_equal_in_one_round() -> None:
    leaves = _store(2000)
    out = run_check(leaves, dict(leaves))
    assert (out.result, out.rounds, out.puts, out.deletes) == ("equal", 1, [], [])


def test_one_damaged_secret_among_many_is_found_by_descending() -> None:
    leaves = _store(20_000, meshes=1)
    key = Key(Kind.SECRET, "m0", "s12345")
    zone = {k: v for k, v in leaves.items() if k != key}  # a damaged row is no leaf at all
    out = run_check(leaves, zone)
    assert out.result == "repair" and out.puts == [key] and out.deletes == []
    assert 2 < out.rounds <= 6  # groups, then a few levels of 16 children


def test_a_zone_not_at_global_revision_is_inconclusive() -> None:
    leaves = _store(10)
    out = run_check(leaves, leaves, zone_revision=4)
    assert out.result == "inconclusive" and "revision 4" in out.reason


keys = st.builds(
    Key,
    st.sampled_from([Kind.SECRET, Kind.GLOBAL_SECRET, Kind.MESH]),
    st.just(""),
    st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
).map(lambda k: Key(k.kind, "m" if k.kind is Kind.SECRET else "", k.name))


@settings(max_examples=60, deadline=None)
@given(
    base=st.dictionaries(keys, st.binary(min_size=16, max_size=16), max_size=300),
    drop=st.sets(st.integers(0, 299), max_size=20),
    alter=st.sets(st.integers(0, 299), max_size=20),
    extra=st.dictionaries(keys, st.binary(min_size=16, max_size=16), max_size=20),
)
def test_a_check_repairs_exactly_what_differs(
    base: Leaves, drop: set[int], alter: set[int], extra: Leaves
) -> None:
    """Whatever was lost, altered or added on the zone, the check names exactly those keys;
    applying its repair from global's leaves makes the two trees equal."""
    ordered = sorted(base)
    zone = dict(base)
    for i in alter:
        if i < len(ordered):
            zone[ordered[i]] = b"\xff" * 16
    for i in drop:
        if i < len(ordered):
            zone.pop(ordered[i], None)
    for k, v in extra.items():
        zone.setdefault(k, v)
    out = run_check(base, zone)
    expected_puts = {k for k in base if zone.get(k) != base[k]}
    expected_deletes = set(zone) - set(base)
    assert set(out.puts) == expected_puts
    assert set(out.deletes) == expected_deletes
    assert out.result == ("repair" if expected_puts or expected_deletes else "equal")
    for k in out.puts:
        zone[k] = base[k]
    for k in out.deletes:
        del zone[k]
    assert run_check(base, zone).result == "equal"


def _first_answer(global_leaves: Leaves, zone_leaves: Leaves) -> tuple[GlobalCheck, Answer]:
    check = GlobalCheck(1, 5, DigestTree(global_leaves.items()))
    ans = answer(DigestTree(zone_leaves.items()), check.first_query(), 5)
    return check, ans


def test_an_answer_about_a_node_never_asked_is_refused() -> None:
    check, _ = _first_answer(_store(5), _store(5))
    bogus = Listed(Summary(NodeId(Kind.SECRET, "m0", "ab"), 1, b"x" * 16))
    with pytest.raises(ProtocolError, match="did not ask about"):
        check.on_answer(Answer(1, 5, (bogus,)))


def test_an_answer_naming_a_node_twice_is_refused() -> None:
    """Each copy would be compared again: 250,000 copies of one node, in an answer under
    4 MiB, took global's memory past a gigabyte before."""
    leaves = _store(5, meshes=1)
    zone = {**leaves, Key(Kind.GLOBAL_SECRET, "", "g"): _digest(8)}
    check, ans = _first_answer(leaves, zone)
    (item,) = ans.differ
    with pytest.raises(ProtocolError, match=r"differ\[1\] names a node an earlier item named"):
        check.on_answer(Answer(1, 5, (item, item)))


def test_a_check_stops_comparing_once_it_has_enough_to_repair() -> None:
    """Nodes past MAX_REPAIR keys are left for the next check, not compared and trimmed."""
    meshes = 100  # 20 secrets each: 2,000 keys to repair on a zone that has none of them
    leaves = _store(20 * meshes, meshes=meshes)
    empty = {Key(Kind.GLOBAL_SECRET, "", "g"): _digest(7)}
    out = run_check(leaves, empty)
    assert out.result == "repair"
    assert len(out.puts) + len(out.deletes) <= MAX_REPAIR
    # Compared until the puts reached MAX_REPAIR (the group that crossed it is trimmed);
    # every secret group after it deferred, not compared.
    assert len(out.differed) <= MAX_REPAIR // 20 + 1
    assert out.deferred >= meshes - len(out.differed)


def test_a_query_expands_at_most_max_expand_parents_none_twice() -> None:
    """Each parent costs the zone a walk of its group."""
    parent = pb.DigestNode(kind=pb.SECRET, mesh="m0", prefix="a")
    others = [pb.DigestNode(kind=pb.SECRET, mesh="m0", prefix=f"{i:x}") for i in range(16)]
    with pytest.raises(ProtocolError, match="names a parent twice"):
        wire.query_from_pb(pb.DigestQuery(check=1, revision=5, parents=[parent, parent]))
    with pytest.raises(ProtocolError, match=f"more than {MAX_EXPAND} parents"):
        wire.query_from_pb(pb.DigestQuery(check=1, revision=5, parents=[*others, parent]))
    assert len(wire.query_from_pb(pb.DigestQuery(parents=others)).parents) == MAX_EXPAND


def test_listed_leaves_must_match_their_count_and_node() -> None:
    leaves = _store(5, meshes=1)
    zone = {**leaves, Key(Kind.GLOBAL_SECRET, "", "g"): _digest(8)}
    check, ans = _first_answer(leaves, zone)
    (item,) = ans.differ
    assert item.listed and item.summary.count <= LEAF_BUCKET
    too_many = dataclasses.replace(item, leaves=(*item.leaves, ("other", _digest(1))))
    fresh = GlobalCheck(1, 5, DigestTree(leaves.items()))
    fresh.first_query()
    with pytest.raises(ProtocolError, match="lists 2 leaves but counts 1"):
        fresh.on_answer(Answer(1, 5, (too_many,)))
    wrong_node = dataclasses.replace(
        item,
        summary=Summary(NodeId(Kind.GLOBAL_SECRET, "", "0"), 1, _digest(2)),
    )
    fresh = GlobalCheck(1, 5, DigestTree(leaves.items()))
    fresh.first_query()
    with pytest.raises(ProtocolError):
        fresh.on_answer(Answer(1, 5, (wrong_node,)))
    bad_name = dataclasses.replace(item, leaves=(("Bad\nname", _digest(1)),))
    fresh = GlobalCheck(1, 5, DigestTree(leaves.items()))
    fresh.first_query()
    with pytest.raises(ProtocolError, match="leaves\\[0\\]"):
        fresh.on_answer(Answer(1, 5, (bad_name,)))
    assert check.on_answer(ans).result == "repair"  # type: ignore[union-attr]


def test_a_listed_node_that_is_not_small_is_refused() -> None:
    leaves = _store(200, meshes=1)
    check = GlobalCheck(1, 5, DigestTree(leaves.items()))
    check.first_query()
    group = NodeId(Kind.SECRET, "m0")
    lying = Listed(Summary(group, 1, _digest(3)), True, (("s1", _digest(3)),))
    with pytest.raises(ProtocolError, match="not small"):
        check.on_answer(Answer(1, 5, (lying,)))


def test_a_check_starts_only_when_the_zone_acknowledged_the_head() -> None:
    """The session allows a check only when idle with nothing in flight and the zone at the
    head; a repair starts and ends at that revision and only from idle."""
    from kds.protocol.session import Ack as SessionAck
    from kds.protocol.session import GlobalSession, Hello, SendRange

    s = GlobalSession("store", max_unacked=4)
    s.on_hello(Hello("z", "z-1", 1, "store", 3, b"c"), head=5, log_floor=0, chain_at_revision=b"c")
    assert not s.can_check(5)  # the zone is at 3
    assert s.next_action(5, 0) == SendRange(3, 5)
    seq = s.next_seq()
    s.on_sent(seq, 5, True)
    assert not s.can_check(5)  # sending, then in flight
    s.on_done()
    assert not s.can_check(5)
    s.on_ack(SessionAck(seq, 5))
    assert s.can_check(5) and not s.can_check(6)
    assert s.start_repair() == 5
    with pytest.raises(ProtocolError):
        s.start_repair()  # already sending one
    seq = s.next_seq()
    s.on_sent(seq, 5, True)
    s.on_done()
    s.on_ack(SessionAck(seq, 5))
    assert s.acked_revision == 5 and s.can_check(5)


def _same_tree(a: DigestTree, b: DigestTree) -> None:
    assert sorted(a._groups) == sorted(b._groups)
    for group, ga in a._groups.items():
        gb = b._groups[group]
        for field in ("buckets", "digests", "hashes", "names", "offsets"):
            assert getattr(ga, field) == getattr(gb, field), (group, field)


_NAMES = st.sampled_from([f"s{i}" for i in range(40)] + ["\u00fc", "a-b", "zz", ""])
_KEYS = st.builds(
    Key, st.sampled_from([Kind.SECRET, Kind.GLOBAL_SECRET]), st.sampled_from(["", "m"]), _NAMES
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(_KEYS, st.integers(0, 5).map(_digest), max_size=60),
    changes=st.dictionaries(_KEYS, st.none() | st.integers(0, 5).map(_digest), max_size=30),
    coarse=st.booleans(),
)
def test_a_tree_updated_is_the_tree_built_anew(
    start: Leaves, changes: dict[Key, bytes | None], coarse: bool
) -> None:
    """Global brings its held tree to a new head by the leaves that changed: the result is
    the tree built from every leaf, array for array, whether a change replaces, adds or
    removes a leaf, empties a group or starts one; with coarse buckets (many names to a
    bucket) the order among names in a bucket is kept too. The tree it came from is left
    as it was."""
    import kds.protocol.digest_tree as dt

    real = dt._bucket_number
    if coarse:
        dt._bucket_number = lambda name: real(name) >> 62 << 62  # 4 buckets
    try:
        old = DigestTree(start.items())
        before = DigestTree(start.items())
        final = {k: d for k, d in {**start, **changes}.items() if d is not None}
        updated = old.updated(changes.items())
        _same_tree(updated, DigestTree(final.items()))
        _same_tree(old, before)
        assert len(updated) == len(final)
    finally:
        dt._bucket_number = real


def _sorted_group(leaves: list[tuple[int, str, bytes]]) -> Any:
    """A group as sorting (bucket, name, digest) tuples builds it: the reference."""
    import kds.protocol.digest_tree as dt

    leaves.sort()
    encoded = [n.encode("utf-8", "surrogatepass") for _, n, _ in leaves]
    return dt._Group(
        array("Q", (b for b, _, _ in leaves)),
        b"".join(d for _, _, d in leaves),
        b"".join(_leaf_hash(n, d) for _, n, d in leaves),
        b"".join(encoded),
        array("Q", accumulate(map(len, encoded), initial=0)),
    )


@settings(max_examples=200, deadline=None)
@given(
    leaves=st.dictionaries(_KEYS, st.integers(0, 5).map(_digest), max_size=60),
    coarse=st.booleans(),
)
def test_the_flat_builder_builds_what_sorted_tuples_build(leaves: Leaves, coarse: bool) -> None:
    """TreeBuilder holds the leaves flat and sorts positions, not tuples: each group comes
    out array for array as sorting (bucket, name, digest) tuples makes it, also when many
    names share a bucket (coarse buckets: four in all), where names decide the order."""
    import kds.protocol.digest_tree as dt

    real = dt._bucket_number
    if coarse:
        dt._bucket_number = lambda name: real(name) >> 62 << 62
    try:
        built = dt.DigestTree(leaves.items())
        by_group: dict[tuple[Kind, str], list[tuple[int, str, bytes]]] = {}
        for k, d in leaves.items():
            by_group.setdefault((k.kind, k.mesh), []).append((dt._bucket_number(k.name), k.name, d))
        expected = dt.DigestTree(())
        expected._groups = {g: _sorted_group(tuples) for g, tuples in by_group.items()}
        _same_tree(built, expected)
    finally:
        dt._bucket_number = real


def test_a_leaf_digest_of_another_length_is_refused() -> None:
    from kds.protocol.digest_tree import TreeBuilder

    builder = TreeBuilder()
    with pytest.raises(ValueError, match="16 bytes, not 15"):
        builder.add(Key(Kind.SECRET, "m", "s"), b"x" * 15)


def test_a_tree_holds_no_object_per_leaf() -> None:
    """The builder and the tree keep leaves in flat buffers: adding 20,000 leaves, and the
    tree built from them, hold a handful of allocator blocks, not one or more per leaf (a
    tuple, an integer, a name per leaf once kept a big tree's memory scattered over arenas
    CPython could not give back)."""
    import sys

    from kds.protocol.digest_tree import TreeBuilder

    leaves = [(Key(Kind.SECRET, f"m{i % 3}", f"secret-{i}"), _digest(i)) for i in range(20_000)]
    builder = TreeBuilder()
    before = sys.getallocatedblocks()
    for key, digest in leaves:
        builder.add(key, digest)
    assert sys.getallocatedblocks() - before < 2_000  # one per leaf would be 20,000+
    tree = builder.build()
    assert sys.getallocatedblocks() - before < 2_000  # one per leaf would be 20,000+
    assert len(tree) == 20_000


def test_an_answer_naming_more_nodes_than_the_bound_is_refused_before_it_is_read() -> None:
    """Each node of an answer costs global a check: 300,000 made-up meshes in a 3.5 MB answer
    took it 2.5 s. More than MAX_ANSWER_NODES end the stream; a zone never sends more."""
    node = pb.DigestNode(kind=pb.SECRET, mesh="m", prefix="", count=0)
    flood = pb.DigestAnswer(check=1, revision=5, differ=[node] * (MAX_ANSWER_NODES + 1))
    with pytest.raises(ProtocolError, match=f"more than {MAX_ANSWER_NODES} nodes"):
        wire.answer_from_pb(flood)
    # A zone holding more differing groups than that names the first MAX_ANSWER_NODES.
    many = {Key(Kind.SECRET, f"m{i}", "s"): _digest(i) for i in range(MAX_ANSWER_NODES + 5)}
    ans = answer(DigestTree(many.items()), GlobalCheck(1, 5, DigestTree([])).first_query(), 5)
    assert len(ans.differ) == MAX_ANSWER_NODES
