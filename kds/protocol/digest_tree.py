"""The anti-entropy hash tree over synced resources. Pure.

A leaf is one synced resource: its key and ``leaf_digest`` of every field global sends (the
data as plain bytes, so encryption at rest on either side does not change it). Leaves are
grouped by type and mesh (level 1); below a group, a node is a prefix of the hex digest of
the leaf's name (``bucket_of``: 16 children per node, up to MAX_DEPTH levels). A node's hash
covers the hashes of the leaves under it, in order, so a changed leaf changes every parent,
and two nodes with the same count and hash hold the same leaves.

The tree keeps each group's leaves sorted by bucket, so a node is a slice found by bisection
and its hash is computed when asked: memory is one small tuple per leaf, building is a sort.
See proto/kds/v1/sync.proto ("Anti-entropy") for how two trees are compared.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kds.model import Key, Kind, Resource

__all__ = [
    "DIGEST_BYTES",
    "MAX_DEPTH",
    "DigestTree",
    "NodeId",
    "Summary",
    "bucket_of",
    "leaf_digest",
]

DIGEST_BYTES = 16
MAX_DEPTH = 16  # hex digits of bucket_of: a node this deep holds only digest collisions
_HEX = "0123456789abcdef"


def _update(h: hashlib.blake2b, part: bytes) -> None:
    h.update(len(part).to_bytes(8, "big"))
    h.update(part)


def leaf_digest(r: Resource) -> bytes:
    """The digest of a resource as global sends it: equal on global and on every zone that
    holds the same synced copy, whatever either stores it as."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES, person=b"kds-leaf-v1")
    for text in (
        str(r.kind),
        r.mesh,
        r.name,
        str(r.version),
        r.creation_time,
        r.modification_time,
        json.dumps(dict(r.labels), sort_keys=True, separators=(",", ":")),
        json.dumps(r.spec, sort_keys=True, separators=(",", ":")) if r.spec else "",
    ):
        _update(h, text.encode("utf-8", "surrogatepass"))
    _update(h, bytes(r.data))
    return h.digest()


def bucket_of(name: str) -> str:
    """Where a name sits below its group: MAX_DEPTH hex digits, spread evenly."""
    raw = name.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=MAX_DEPTH // 2, person=b"kds-bucket-v1").hexdigest()


def _leaf_hash(name: str, digest: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=DIGEST_BYTES, person=b"kds-node-v1")
    _update(h, name.encode("utf-8", "surrogatepass"))
    _update(h, digest)
    return h.digest()


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
    __slots__ = ("buckets", "digests", "hashes", "names")

    def __init__(self, leaves: list[tuple[str, str, bytes]]):
        leaves.sort()
        self.buckets = [b for b, _, _ in leaves]
        self.names = [n for _, n, _ in leaves]
        self.digests = [d for _, _, d in leaves]
        self.hashes = [_leaf_hash(n, d) for _, n, d in leaves]

    def span(self, prefix: str) -> tuple[int, int]:
        if not prefix:
            return 0, len(self.buckets)
        return bisect_left(self.buckets, prefix), bisect_left(self.buckets, prefix + "g")


class DigestTree:
    """The hash tree of one side's synced resources at one revision."""

    def __init__(self, leaves: Iterable[tuple[Key, bytes]]):
        by_group: dict[tuple[Kind, str], list[tuple[str, str, bytes]]] = {}
        for key, digest in leaves:
            by_group.setdefault((key.kind, key.mesh), []).append(
                (bucket_of(key.name), key.name, digest)
            )
        self._groups = {g: _Group(v) for g, v in by_group.items()}

    def __len__(self) -> int:
        return sum(len(g.names) for g in self._groups.values())

    def summary(self, node: NodeId) -> Summary:
        group = self._groups.get((node.kind, node.mesh))
        if group is None:
            return Summary(node, 0, b"")
        lo, hi = group.span(node.prefix)
        if lo == hi:
            return Summary(node, 0, b"")
        h = hashlib.blake2b(b"".join(group.hashes[lo:hi]), digest_size=DIGEST_BYTES)
        return Summary(node, hi - lo, h.digest())

    def groups(self) -> list[Summary]:
        """Every non-empty group (level 1)."""
        return [self.summary(NodeId(k, m)) for k, m in sorted(self._groups)]

    def children(self, node: NodeId) -> list[Summary]:
        """The non-empty children of ``node`` (none below MAX_DEPTH)."""
        group = self._groups.get((node.kind, node.mesh))
        if group is None or len(node.prefix) >= MAX_DEPTH:
            return []
        lo, hi = group.span(node.prefix)
        depth = len(node.prefix)
        digits = sorted({b[depth] for b in group.buckets[lo:hi]}, key=_HEX.index)
        return [self.summary(node.child(d)) for d in digits]

    def leaves(self, node: NodeId) -> Iterator[tuple[str, bytes]]:
        """(name, digest) of every leaf under ``node``, in bucket order."""
        group = self._groups.get((node.kind, node.mesh))
        if group is None:
            return iter(())
        lo, hi = group.span(node.prefix)
        return zip(group.names[lo:hi], group.digests[lo:hi], strict=True)
