"""The anti-entropy hash tree over synced resources. Pure.

A leaf is one synced resource: its key and ``leaf_digest`` of every field global sends (the
data as plain bytes, so encryption at rest on either side does not change it). Leaves are
grouped by type and mesh (level 1); below a group, a node is a prefix of the hex digest of
the leaf's name (``bucket_of``: 16 children per node, up to MAX_DEPTH levels). A node's hash
covers the hashes of the leaves under it, in order, so a changed leaf changes every parent,
and two nodes with the same count and hash hold the same leaves.

The tree keeps each group's leaves sorted by bucket, so a node is a slice found by bisection
and its hash is computed when asked: memory is about 50 flat bytes per leaf plus its name
(no object per leaf), building is a sort.
See proto/kds/v1/sync.proto ("Anti-entropy") for how two trees are compared.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, chain
from operator import sub

from kds.model import Key, Kind, Resource

__all__ = [
    "DIGEST_BYTES",
    "MAX_DEPTH",
    "DigestTree",
    "NodeId",
    "Summary",
    "TreeBuilder",
    "bucket_of",
    "compact_json",
    "leaf_digest",
    "leaf_digest_of",
]

DIGEST_BYTES = 16
MAX_DEPTH = 16  # hex digits of bucket_of: a node this deep holds only digest collisions
_HEX = "0123456789abcdef"


def compact_json(value: object) -> str:
    """Labels and spec as leaf_digest covers them: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def leaf_digest(r: Resource) -> bytes:
    """The digest of a resource as global sends it: equal on global and on every zone that
    holds the same synced copy, whatever either stores it as."""
    return leaf_digest_of(
        (
            str(r.kind),
            r.mesh,
            r.name,
            str(r.version),
            r.creation_time,
            r.modification_time,
            compact_json(dict(r.labels)),
            compact_json(r.spec) if r.spec else "",
        ),
        bytes(r.data),
    )


def leaf_digest_of(texts: Iterable[str], data: bytes) -> bytes:
    """``leaf_digest`` from its parts: the texts of kind, mesh, name, version, creation and
    modification time, labels and spec (as leaf_digest gives them), then the data. A store
    reading every row for a tree computes it from the columns, without a Resource per row.
    Each part is length-prefixed and the whole hashed as one buffer."""
    encoded = [text.encode("utf-8", "surrogatepass") for text in texts]
    encoded.append(data)
    return _framed_hash(b"kds-leaf-v1", encoded)


def _framed_hash(person: bytes, parts: list[bytes | memoryview] | list[bytes]) -> bytes:
    """The digest of ``parts``, each after its length (8 bytes, big-endian), hashed as one
    buffer: the framing of a leaf and of a node's leaf hash."""
    framed: list[bytes | memoryview] = []
    for part in parts:
        framed.append(len(part).to_bytes(8, "big"))
        framed.append(part)
    return hashlib.blake2b(b"".join(framed), digest_size=DIGEST_BYTES, person=person).digest()


def _bucket_hash(name: str) -> hashlib.blake2b:
    raw = name.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=MAX_DEPTH // 2, person=b"kds-bucket-v1")


def bucket_of(name: str) -> str:
    """Where a name sits below its group: MAX_DEPTH hex digits, spread evenly."""
    return _bucket_hash(name).hexdigest()


def _bucket_number(name: str) -> int:
    """``bucket_of`` as a number: the same order, 8 bytes where the text takes 65."""
    return int.from_bytes(_bucket_hash(name).digest(), "big")


def _leaf_hash(name: str, digest: bytes) -> bytes:
    return _leaf_hash_of(name.encode("utf-8", "surrogatepass"), digest)


def _leaf_hash_of(raw_name: bytes | memoryview, digest: bytes | memoryview) -> bytes:
    """``_leaf_hash`` of a name already encoded (UTF-8, surrogates passed)."""
    return _framed_hash(b"kds-node-v1", [raw_name, digest])


@dataclass(frozen=True, order=True)
class NodeId:
    """A node: a group (kind and mesh) and a bucket prefix ("" for the whole group)."""

    kind: Kind
    mesh: str
    prefix: str = ""

    @property
    def group(self) -> NodeId:
        return NodeId(self.kind, self.mesh)

    @property
    def parent(self) -> NodeId | None:
        """The node above; None for a group (its parent is the root)."""
        return NodeId(self.kind, self.mesh, self.prefix[:-1]) if self.prefix else None

    def child(self, digit: str) -> NodeId:
        return NodeId(self.kind, self.mesh, self.prefix + digit)

    def label(self) -> str:
        where = f"{self.kind}:{self.mesh}" if self.mesh else str(self.kind)
        return f"{where}/{self.prefix or '*'}"


@dataclass(frozen=True)
class Summary:
    node: NodeId
    count: int
    hash: bytes  # b"" when count is 0


class _Group:
    """One group's leaves, sorted by bucket, held flat: the buckets as 8-byte integers, the
    leaf hashes and digests as one bytes object each (16 bytes a leaf), the names as one
    UTF-8 bytes object with offsets. About 50 bytes a leaf plus its name, where a list of
    strings and bytes per leaf took over 200: global holds one tree for all its zones."""

    __slots__ = ("buckets", "digests", "hashes", "names", "offsets")

    def __init__(
        self,
        buckets: array[int] | None = None,
        digests: bytes = b"",
        hashes: bytes = b"",
        names: bytes = b"",
        offsets: array[int] | None = None,
    ):
        """A group of leaves already sorted (``_Leaves.group``, ``updated``); none given,
        the empty group. ``offsets`` has one more entry than there are leaves, 0 first."""
        self.buckets = array("Q") if buckets is None else buckets
        self.digests = digests
        self.hashes = hashes
        self.names = names
        self.offsets = array("Q", [0]) if offsets is None else offsets

    def __len__(self) -> int:
        return len(self.buckets)

    def span(self, prefix: str) -> tuple[int, int]:
        if not prefix:
            return 0, len(self.buckets)
        shift = 4 * (MAX_DEPTH - len(prefix))
        start = int(prefix, 16)
        lo = bisect_left(self.buckets, start << shift)
        return lo, bisect_left(self.buckets, (start + 1) << shift, lo)

    def hash_of(self, lo: int, hi: int) -> bytes:
        view = memoryview(self.hashes)[lo * DIGEST_BYTES : hi * DIGEST_BYTES]
        return hashlib.blake2b(view, digest_size=DIGEST_BYTES).digest()

    def leaves(self, lo: int, hi: int) -> Iterator[tuple[str, bytes]]:
        digests = self.digests
        for i in range(lo, hi):
            yield self.name_at(i), digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES]

    def name_at(self, i: int) -> str:
        return self.names[self.offsets[i] : self.offsets[i + 1]].decode("utf-8", "surrogatepass")

    def updated(self, changes: list[tuple[int, str, bytes | None]]) -> _Group | None:
        """This group with ``changes`` made, each (bucket, name, digest), a name at most
        once, None to remove its leaf: a new group (this one is never changed, a check may
        still read it); None when no leaf is left. The leaves between two changes are copied
        as slices of the flat arrays, so a change costs a copy of the group in C, never a
        step per leaf in Python."""
        buckets, names, offsets, size = self.buckets, self.names, self.offsets, len(self.buckets)
        new_buckets = array("Q")
        digests: list[bytes] = []
        hashes: list[bytes] = []
        name_parts: list[bytes] = []
        lengths: list[Iterable[int]] = []
        start = 0  # the first old leaf not yet copied or dropped

        def copy(hi: int) -> None:  # the old leaves from start up to hi, as they are
            if hi > start:
                new_buckets.extend(buckets[start:hi])
                digests.append(self.digests[start * DIGEST_BYTES : hi * DIGEST_BYTES])
                hashes.append(self.hashes[start * DIGEST_BYTES : hi * DIGEST_BYTES])
                name_parts.append(names[offsets[start] : offsets[hi]])
                lengths.append(map(sub, offsets[start + 1 : hi + 1], offsets[start:hi]))

        for bucket, name, digest in sorted(changes, key=lambda c: (c[0], c[1])):
            # Leaves sort by bucket, then name (TreeBuilder sorts the tuples).
            i = bisect_left(buckets, bucket, start)
            while i < size and buckets[i] == bucket and self.name_at(i) < name:
                i += 1
            copy(i)
            start = i
            if i < size and buckets[i] == bucket and self.name_at(i) == name:
                start = i + 1  # the leaf it replaces or removes
            if digest is not None:
                raw = name.encode("utf-8", "surrogatepass")
                new_buckets.append(bucket)
                digests.append(digest)
                hashes.append(_leaf_hash(name, digest))
                name_parts.append(raw)
                lengths.append((len(raw),))
        copy(size)
        if not new_buckets:
            return None
        return _Group(
            new_buckets,
            b"".join(digests),
            b"".join(hashes),
            b"".join(name_parts),
            array("Q", accumulate(chain.from_iterable(lengths), initial=0)),
        )


class DigestTree:
    """The hash tree of one side's synced resources at one revision."""

    def __init__(self, leaves: Iterable[tuple[Key, bytes]]):
        builder = TreeBuilder()
        for key, digest in leaves:
            builder.add(key, digest)
        self._groups: dict[tuple[Kind, str], _Group] = builder.take_groups()

    @classmethod
    def from_builder(cls, builder: TreeBuilder) -> DigestTree:
        return cls._of(builder.take_groups())

    @classmethod
    def _of(cls, groups: dict[tuple[Kind, str], _Group]) -> DigestTree:
        tree = cls(())
        tree._groups = groups
        return tree

    def updated(self, changes: Iterable[tuple[Key, bytes | None]]) -> DigestTree:
        """This tree with each leaf of ``changes`` set to its digest, or removed where it is
        None: a new tree, with the groups no change touches shared (a group is never
        changed in place, so a check reading this tree is not disturbed). The same tree as
        built from every leaf anew, at the cost of copying the changed groups."""
        by_group: dict[tuple[Kind, str], dict[str, bytes | None]] = {}
        for key, digest in changes:
            by_group.setdefault((key.kind, key.mesh), {})[key.name] = digest
        groups = dict(self._groups)
        for group, named in by_group.items():
            old = groups.get(group) or _Group()
            new = old.updated([(_bucket_number(n), n, d) for n, d in named.items()])
            if new is None:
                groups.pop(group, None)
            else:
                groups[group] = new
        return DigestTree._of(groups)

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def summary(self, node: NodeId) -> Summary:
        group = self._groups.get((node.kind, node.mesh))
        if group is None:
            return Summary(node, 0, b"")
        lo, hi = group.span(node.prefix)
        if lo == hi:
            return Summary(node, 0, b"")
        return Summary(node, hi - lo, group.hash_of(lo, hi))

    def groups(self) -> list[Summary]:
        """Every non-empty group (level 1)."""
        return [self.summary(NodeId(k, m)) for k, m in sorted(self._groups)]

    def children(self, node: NodeId) -> list[Summary]:
        """The non-empty children of ``node`` (none below MAX_DEPTH)."""
        group = self._groups.get((node.kind, node.mesh))
        if group is None or len(node.prefix) >= MAX_DEPTH:
            return []
        out = []
        for digit in _HEX:
            child = node.child(digit)
            lo, hi = group.span(child.prefix)
            if lo < hi:
                out.append(Summary(child, hi - lo, group.hash_of(lo, hi)))
        return out

    def leaves(self, node: NodeId) -> Iterator[tuple[str, bytes]]:
        """(name, digest) of every leaf under ``node``, in bucket order."""
        group = self._groups.get((node.kind, node.mesh))
        if group is None:
            return iter(())
        return group.leaves(*group.span(node.prefix))


class _Leaves:
    """One group's leaves as they are added, unsorted and flat: the buckets as 8-byte
    integers, the digests as one buffer, the names as one UTF-8 buffer with offsets. No
    object per leaf: a list of a tuple, an integer, a name and a digest per leaf took about
    220 bytes a leaf and, sorted and hashed, peaked near 400 (40 MB for 100,000 leaves),
    small objects whose memory CPython keeps in the arenas that outlive them."""

    __slots__ = ("buckets", "digests", "names", "offsets")

    def __init__(self) -> None:
        self._empty()

    def _empty(self) -> None:
        self.buckets = array("Q")
        self.digests = bytearray()
        self.names = bytearray()
        self.offsets = array("Q", [0])  # as _Group's: leaf i's name is names[o[i]:o[i + 1]]

    def add(self, name: str, digest: bytes) -> None:
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"a leaf digest is {DIGEST_BYTES} bytes, not {len(digest)}")
        self.buckets.append(_bucket_number(name))
        self.digests += digest
        self.names += name.encode("utf-8", "surrogatepass")
        self.offsets.append(len(self.names))

    def _name(self, i: int) -> str:
        raw = self.names[self.offsets[i] : self.offsets[i + 1]]
        return raw.decode("utf-8", "surrogatepass")

    def _order(self) -> list[int]:
        """The leaves' positions in tree order: by bucket, then by name (a bucket is 64
        bits of a hash, so two names share one only by collision, or by design of whoever
        chose the names; both sides must still order them alike)."""
        buckets = self.buckets
        order = sorted(range(len(buckets)), key=buckets.__getitem__)
        in_order = array("Q", map(buckets.__getitem__, order))
        if any(map(int.__eq__, in_order[1:], in_order[:-1])):
            order.sort(key=lambda i: (buckets[i], self._name(i)))
        return order

    def group(self) -> _Group:
        """The group of these leaves, sorted and hashed; this is emptied."""
        order = self._order()
        digests, names, offsets = memoryview(self.digests), memoryview(self.names), self.offsets
        new_digests = bytearray()
        hashes = bytearray()
        new_names = bytearray()
        new_offsets = array("Q", [0])
        for i in order:
            digest = digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES]
            raw = names[offsets[i] : offsets[i + 1]]
            new_digests += digest
            hashes += _leaf_hash_of(raw, digest)
            new_names += raw
            new_offsets.append(len(new_names))
        buckets = array("Q", map(self.buckets.__getitem__, order))
        del order, digests, names  # the unsorted copies go before the sorted ones are frozen
        self._empty()
        return _Group(buckets, bytes(new_digests), bytes(hashes), bytes(new_names), new_offsets)


class TreeBuilder:
    """A DigestTree's leaves added one at a time (a store read row by row): each group's
    buckets, names and digests are held flat until ``build`` (``_Leaves``), never a key,
    a resource or any object per leaf, nor a list of every leaf before the tree is
    started."""

    def __init__(self) -> None:
        self._by_group: dict[tuple[Kind, str], _Leaves] = {}

    def add(self, key: Key, digest: bytes) -> None:
        """One leaf; ValueError if ``digest`` is not DIGEST_BYTES long."""
        leaves = self._by_group.get((key.kind, key.mesh))
        if leaves is None:
            leaves = self._by_group[(key.kind, key.mesh)] = _Leaves()
        leaves.add(key.name, digest)

    def take_groups(self) -> dict[tuple[Kind, str], _Group]:
        by_group, self._by_group = self._by_group, {}
        groups = {}
        while by_group:  # each group's leaves are dropped once its sorted copy is made
            group, leaves = by_group.popitem()
            groups[group] = leaves.group()
        return groups

    def build(self) -> DigestTree:
        """The tree of the leaves added (the builder is empty afterwards)."""
        return DigestTree.from_builder(self)
