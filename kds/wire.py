"""Conversion between model objects and protobuf messages, and batch assembly from bytes.

Pure (no grpc, no I/O), so the protocol sessions can be tested through real wire bytes without
a network. On the zone, a received batch is decoded here (a change this version cannot read
becomes a rejection, not an error), and the zone session's plain hello and acks are encoded.

Global encodes each Change once (when the write commits) and keeps the bytes. A Batch is
assembled by writing its small header and then each Change as a pre-framed field 15 entry
(tag, length, bytes), so the same Change bytes go to every zone without re-encoding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]

from kds._pb import sync_pb2 as pb
from kds.errors import ProtocolError
from kds.model import Key, Kind, Resource
from kds.protocol.anti_entropy import (
    MAX_ANSWER_LEAVES,
    MAX_ANSWER_NODES,
    MAX_EXPAND,
    Answer,
    Listed,
    Query,
)
from kds.protocol.applier import DecodedBatch, Incoming
from kds.protocol.digest_tree import DIGEST_BYTES, MAX_DEPTH, NodeId, Summary
from kds.protocol.limits import (
    CONFLICTS_REPORTED,
    MAX_REVISION,
    PROBLEM_CHARS,
    REASON_CHARS,
    check_key,
)
from kds.protocol.zone_session import Ack, Hello, RawKey, Rejection, SyncMode, Welcome
from kds.validation import MAX_DEPTH as MAX_DEPTH_JSON
from kds.validation import depth_over

__all__ = [
    "KIND_TO_PB",
    "PART_BYTES",
    "PB_TO_KIND",
    "PROTOCOL_VERSION",
    "ZONE_METADATA",
    "ack_to_pb",
    "answer_from_pb",
    "answer_to_pb",
    "assemble_batch",
    "change_delete",
    "change_put",
    "decode_batch",
    "frame_change",
    "hello_to_pb",
    "key_from_pb",
    "key_to_pb",
    "mesh_spec_of",
    "query_from_pb",
    "query_to_pb",
    "resource_from_pb",
    "resource_to_pb",
    "status_to_pb",
    "welcome_from_pb",
]

PROTOCOL_VERSION = 1
# The call metadata a zone names itself in, beside its token: global checks the token before
# it reads the hello, and names the zone this says in the log of a refused token.
ZONE_METADATA = "kds-zone"
# The response header global admits a stream with, before it reads a message: the zone
# writes its hello only after it, so a refusal reaches the zone as its status and reason.
ADMITTED_METADATA = "kds-admitted"

KIND_TO_PB = {Kind.MESH: pb.MESH, Kind.SECRET: pb.SECRET, Kind.GLOBAL_SECRET: pb.GLOBAL_SECRET}
PB_TO_KIND = {v: k for k, v in KIND_TO_PB.items()}

_CHANGES_TAG = _VarintBytes((15 << 3) | 2)  # Batch.changes, length-delimited
_BATCH_TAG = _VarintBytes((2 << 3) | 2)  # GlobalMessage.batch, length-delimited


def resource_to_pb(r: Resource) -> pb.Resource:
    m = pb.Resource(
        kind=KIND_TO_PB[r.kind],
        mesh=r.mesh,
        name=r.name,
        data=r.data,
        creation_time=r.creation_time,
        modification_time=r.modification_time,
        version=r.version,
        spec=json.dumps(dict(r.spec), sort_keys=True).encode() if r.spec else b"",
    )
    # Only when there are labels: protobuf fills a map field through Python's generic
    # MutableMapping.update, 0.7 us per resource even for an empty one (a third of encoding
    # a change), and most resources have none.
    if r.labels:
        m.labels.update(r.labels)
    return m


def resource_from_pb(m: pb.Resource) -> Resource:
    """Raise KeyError for a kind this version does not know, ValueError for a resource no
    global could have sent (a mesh on a Mesh, a spec that is not a JSON object, a version
    over the stores' integers): the zone rejects that one change, not its whole batch."""
    kind = PB_TO_KIND[m.kind]
    _check_mesh(kind, m.mesh)
    if m.version > MAX_REVISION:
        raise ValueError(f"version is over {MAX_REVISION} (2^63-1)")
    return Resource.of(
        kind=kind,
        mesh=m.mesh,
        name=m.name,
        data=m.data,
        labels=dict(m.labels) if m.labels else {},
        spec=_spec_of(m.spec) if m.spec else {},
        creation_time=m.creation_time,
        modification_time=m.modification_time,
        version=m.version,
    )


def _check_mesh(kind: Kind, mesh: str) -> None:
    """Only a Secret lives in a mesh: a Mesh or GlobalSecret naming one would be stored beside
    the zone's own resource of that name instead of conflicting with it."""
    if mesh and kind is not Kind.SECRET:
        raise ValueError(f"a {kind} has no mesh (got one)")


def _spec_of(raw: bytes) -> dict[str, object]:
    try:
        spec = json.loads(raw)
    except RecursionError:
        raise ValueError(f"spec nests deeper than {MAX_DEPTH_JSON} levels") from None
    if not isinstance(spec, dict):
        raise ValueError("spec is not a JSON object")
    if depth_over(spec, MAX_DEPTH_JSON):
        raise ValueError(f"spec nests deeper than {MAX_DEPTH_JSON} levels")
    return spec


def mesh_spec_of(change: bytes) -> dict[str, object]:
    """The spec of the Mesh an encoded Change puts ({} for none)."""
    m = pb.Change.FromString(change)
    spec = json.loads(m.put.spec) if m.WhichOneof("op") == "put" and m.put.spec else {}
    return spec if isinstance(spec, dict) else {}


def key_to_pb(k: Key) -> pb.ResourceKey:
    return pb.ResourceKey(kind=KIND_TO_PB[k.kind], mesh=k.mesh, name=k.name)


def key_from_pb(m: pb.ResourceKey) -> Key:
    kind = PB_TO_KIND[m.kind]
    _check_mesh(kind, m.mesh)
    return Key(kind, m.mesh, m.name)


def change_put(revision: int, r: Resource) -> bytes:
    return pb.Change(revision=revision, put=resource_to_pb(r)).SerializeToString()


def change_delete(revision: int, k: Key) -> bytes:
    return pb.Change(revision=revision, delete=key_to_pb(k)).SerializeToString()


def frame_change(change: bytes) -> bytes:
    """Frame encoded Change bytes as one Batch.changes entry."""
    return _CHANGES_TAG + _VarintBytes(len(change)) + change


def framed_size(change_len: int) -> int:
    return len(_CHANGES_TAG) + len(_VarintBytes(change_len)) + change_len


def assemble_batch(
    *,
    seq: int,
    from_revision: int,
    revision: int,
    snapshot: bool,
    final: bool,
    head_revision: int,
    framed_changes: Iterable[bytes | memoryview],
    chain: bytes = b"",
    repair: bool = False,
) -> bytes:
    """Encode a GlobalMessage{batch} from pre-framed Change entries."""
    header = pb.Batch(
        seq=seq,
        from_revision=from_revision,
        revision=revision,
        snapshot=snapshot,
        final=final,
        head_revision=head_revision,
        chain=chain,
        repair=repair,
    ).SerializeToString()
    body = header + b"".join(framed_changes)
    return _BATCH_TAG + _VarintBytes(len(body)) + body


def decode_batch(b: pb.Batch) -> tuple[DecodedBatch, list[Rejection]]:
    """Decode a batch; changes this version cannot read (a kind from a newer global, a change
    with no operation) come back as rejections naming the key exactly as global sent it.
    A batch of more than MAX_BATCH_CHANGES changes is a protocol error, found before any is
    read: global's parts hold about PART_BYTES, 8,192 changes at the very most, and two
    million empty changes in a 4 MB batch took a zone's event loop 5 s."""
    if len(b.changes) > MAX_BATCH_CHANGES:
        raise ProtocolError(f"batch {b.seq} holds more than {MAX_BATCH_CHANGES} changes")
    changes: list[Incoming] = []
    undecodable: list[Rejection] = []
    for ch in b.changes:
        which = ch.WhichOneof("op")
        try:
            if which == "put":
                res = resource_from_pb(ch.put)
                changes.append(Incoming(ch.revision, res.key, res))
            elif which == "delete":
                changes.append(Incoming(ch.revision, key_from_pb(ch.delete)))
            else:
                undecodable.append(Rejection(None, "change with no operation"))
        except (KeyError, ValueError) as e:
            raw = ch.put if which == "put" else ch.delete
            counted_as = str(PB_TO_KIND.get(raw.kind, f"kind-{raw.kind}"))
            key = RawKey(kind=raw.kind, mesh=raw.mesh, name=raw.name, type=counted_as)
            reason = (
                f"unknown resource kind {raw.kind}: this zone runs an older version"
                if isinstance(e, KeyError)
                else f"cannot decode change: {e}"
            )
            undecodable.append(Rejection(key, reason))
    batch = DecodedBatch(
        seq=b.seq,
        from_revision=b.from_revision,
        revision=b.revision,
        snapshot=b.snapshot,
        final=b.final,
        head_revision=b.head_revision,
        changes=tuple(changes),
        chain=b.chain,
        repair=b.repair,
    )
    return batch, undecodable


def welcome_from_pb(w: pb.Welcome) -> Welcome:
    """Any mode but RESUME is taken as a snapshot: the zone then waits for everything."""
    return Welcome(
        global_instance_id=w.global_instance_id,
        global_store_id=w.global_store_id,
        head_revision=w.head_revision,
        mode=SyncMode.RESUME if w.mode == pb.Welcome.RESUME else SyncMode.SNAPSHOT,
        heartbeat_interval_ms=w.heartbeat_interval_ms,
        ack_delay_ms=w.ack_delay_ms,
        max_unacked=w.max_unacked,
        max_unacked_bytes=w.max_unacked_bytes,
    )


def hello_to_pb(h: Hello) -> pb.ZoneMessage:
    return pb.ZoneMessage(
        hello=pb.Hello(
            zone=h.zone,
            instance_id=h.instance_id,
            software_version=h.software_version,
            protocol_version=PROTOCOL_VERSION,
            resume=pb.ResumePoint(global_store_id=h.store_id, revision=h.revision, chain=h.chain),
            store_backend=h.store_backend,
            max_message_bytes=h.max_message_bytes,
        )
    )


def _rejection_to_pb(r: Rejection) -> pb.Rejection:
    reason = r.reason[:REASON_CHARS]  # global keeps no more of it
    if r.key is None:
        return pb.Rejection(reason=reason)  # no key field at all, as it named nothing
    if not isinstance(r.key, RawKey):
        return pb.Rejection(key=key_to_pb(r.key), reason=reason)
    raw = r.key  # exactly as global sent it, kind number and all
    key = pb.ResourceKey(kind=raw.kind, mesh=raw.mesh, name=raw.name)  # type: ignore[arg-type]
    return pb.Rejection(key=key, reason=reason)


def ack_to_pb(a: Ack) -> pb.ZoneMessage:
    return pb.ZoneMessage(
        ack=pb.Ack(
            seq=a.seq,
            applied_revision=a.applied_revision,
            rejected=[_rejection_to_pb(r) for r in a.rejected],
            held_ms=a.held_ms,
        )
    )


def status_to_pb(conflicts: Sequence[Key], problem: str) -> pb.ZoneMessage:
    """A zone's status report: its problem within its bound and its first
    CONFLICTS_REPORTED conflicts, with their count when it lists fewer than it holds."""
    listed = conflicts[:CONFLICTS_REPORTED]
    return pb.ZoneMessage(
        status=pb.ZoneStatus(
            conflicts=[key_to_pb(k) for k in listed],
            problem=problem[:PROBLEM_CHARS],
            conflict_count=len(conflicts) if len(conflicts) > len(listed) else 0,
        )
    )


# Room for the Batch header and GlobalMessage framing when packing parts.
BATCH_OVERHEAD = 64

# Global packs ranges and snapshots into parts of about this size (a resource bigger than it
# goes alone, up to the message limit). Global holds each part written to a zone's stream
# until grpc has sent it, so with many zones catching up at once the part size is what its
# memory grows by per zone (measured: 20 zones taking a 100,000-secret snapshot at once peaked
# at 256 MB with 4 MiB parts, 88 MB with 256 KiB; 100 zones at once peaked at 159 MB with
# 256 KiB, 134 MB with these). A part is one transaction on the zone.
PART_BYTES = 128 * 1024
# The most changes a zone takes in one batch: 8 times what a part of PART_BYTES can hold.
MAX_BATCH_CHANGES = 65_536
# The bytes bound of each zone's window (encoded batches sent and not yet acknowledged):
# eight full parts, what a slow zone can make global hold for it, however many small batches
# the batch bound (--max-unacked) lets through.
WINDOW_BYTES = 8 * PART_BYTES


# ---------------------------------------------------------------------- anti-entropy

_HEXDIGITS = frozenset("0123456789abcdef")
_MAX_COUNT = 1 << 48


def _node_to_pb(
    s: Summary, listed: bool = False, leaves: Iterable[tuple[str, bytes]] = ()
) -> pb.DigestNode:
    return pb.DigestNode(
        kind=KIND_TO_PB[s.node.kind],
        mesh=s.node.mesh,
        prefix=s.node.prefix,
        count=s.count,
        hash=s.hash,
        listed=listed,
        leaves=[pb.DigestLeaf(name=n, digest=d) for n, d in leaves],
    )


def _node_from_pb(m: pb.DigestNode, where: str) -> Summary:
    """A node as the peer sent it, checked: a known kind, a valid mesh for it, a prefix of
    hex digits no deeper than the tree, a bounded count and a digest-sized hash."""
    kind = PB_TO_KIND.get(m.kind)
    problem = check_key(kind, m.mesh, "x", where)
    if problem is not None:
        raise ProtocolError(str(problem))
    if len(m.prefix) > MAX_DEPTH or not _HEXDIGITS.issuperset(m.prefix):
        raise ProtocolError(f"{where}.prefix must be at most {MAX_DEPTH} hex digits")
    if m.count > _MAX_COUNT or len(m.hash) > DIGEST_BYTES:
        raise ProtocolError(f"{where}: count or hash out of bounds")
    assert kind is not None  # check_key refused an unknown kind
    return Summary(NodeId(kind, m.mesh, m.prefix), m.count, m.hash)


def query_to_pb(q: Query) -> bytes:
    return pb.GlobalMessage(
        digest_query=pb.DigestQuery(
            check=q.check,
            revision=q.revision,
            groups=q.groups,
            parents=[_node_to_pb(Summary(p, 0, b"")) for p in q.parents],
            nodes=[_node_to_pb(s) for s in q.nodes],
        )
    ).SerializeToString()


def query_from_pb(m: pb.DigestQuery) -> Query:
    """Global's query, its shape checked: at most MAX_EXPAND parents, none named twice (each
    one costs the zone a walk of its group, off the stream's reads)."""
    if len(m.parents) > MAX_EXPAND:
        raise ProtocolError(f"digest_query names more than {MAX_EXPAND} parents to expand")
    if not m.groups and len(m.nodes) > 16 * len(m.parents):
        # After the groups round global names only its parents' children, 16 at most each.
        raise ProtocolError("digest_query names more nodes than its parents have children")
    parents = tuple(
        _node_from_pb(p, f"digest_query.parents[{i}]").node for i, p in enumerate(m.parents)
    )
    if len(set(parents)) != len(parents):
        raise ProtocolError("digest_query names a parent twice")
    return Query(
        check=m.check,
        revision=m.revision,
        groups=m.groups,
        parents=parents,
        nodes=tuple(_node_from_pb(n, f"digest_query.nodes[{i}]") for i, n in enumerate(m.nodes)),
    )


def answer_to_pb(a: Answer) -> pb.ZoneMessage:
    return pb.ZoneMessage(
        digest_answer=pb.DigestAnswer(
            check=a.check,
            revision=a.revision,
            differ=[_node_to_pb(d.summary, d.listed, d.leaves) for d in a.differ],
        )
    )


def answer_from_pb(m: pb.DigestAnswer) -> Answer:
    """The zone's answer, its shape checked (kds.protocol.anti_entropy checks its sense)."""
    if len(m.differ) > MAX_ANSWER_NODES:
        raise ProtocolError(f"digest_answer names more than {MAX_ANSWER_NODES} nodes")
    if sum(len(d.leaves) for d in m.differ) > MAX_ANSWER_LEAVES:
        raise ProtocolError(f"digest_answer lists more than {MAX_ANSWER_LEAVES} leaves")
    differ = []
    for i, d in enumerate(m.differ):
        where = f"digest_answer.differ[{i}]"
        if d.leaves and not d.listed:
            raise ProtocolError(f"{where} has leaves but is not listed")
        leaves = tuple((leaf.name, leaf.digest) for leaf in d.leaves)
        differ.append(Listed(_node_from_pb(d, where), d.listed, leaves))
    return Answer(m.check, m.revision, tuple(differ))
