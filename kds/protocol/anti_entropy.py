"""Comparing global's and a zone's hash trees (kds.protocol.digest_tree) and finding the keys
to repair. Pure: fed trees, queries and answers; returns queries, answers and outcomes.

Global drives a check (``GlobalCheck``): its first query holds its groups; the zone answers
(``answer``) with the nodes that differ, listing its leaves in the small ones; global
compares those leaves with its own and expands the others in the next query, until nothing
is left to expand. The outcome names the nodes that differed and the keys to repair: put
(global holds them with another digest, or the zone lacks them) or delete (only the zone
holds them). The protocol is described in proto/kds/v1/sync.proto ("Anti-entropy").

Everything the zone answers is checked (a hostile zone must not make global repair keys it
never asked about, or loop): a node that was not asked about, a listed node that is not
small, leaves that do not belong to their node or are more than the node's count, a name
global would not accept: each is a ProtocolError naming the problem, never the zone's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kds.errors import ProtocolError
from kds.model import Key
from kds.protocol.digest_tree import DIGEST_BYTES, MAX_DEPTH, DigestTree, NodeId, Summary, bucket_of
from kds.protocol.limits import check_key

__all__ = [
    "LEAF_BUCKET",
    "MAX_EXPAND",
    "MAX_REPAIR",
    "Answer",
    "GlobalCheck",
    "Listed",
    "Outcome",
    "Query",
    "answer",
    "is_small",
    "last_round",
]

LEAF_BUCKET = 32  # a node with at most this many leaves on both sides is compared leaf by leaf
MAX_EXPAND = 16  # nodes expanded per round; more wait for the next check
MAX_REPAIR = 1000  # keys repaired per check; more wait for the next check
MAX_ANSWER_LEAVES = 4096  # leaves one answer lists; a node past it is answered unlisted
# Nodes one answer names: the groups round names one per type and mesh that differs (a later
# round at most 16 per node expanded). Each costs global a check on its event loop, and
# 300,000 made-up meshes in a 3.5 MB answer took it 2.5 s.
MAX_ANSWER_NODES = 16_384


@dataclass(frozen=True)
class Query:
    check: int
    revision: int
    groups: bool  # the first round: ``nodes`` are global's groups
    parents: tuple[NodeId, ...]
    nodes: tuple[Summary, ...]


@dataclass(frozen=True)
class Listed:
    """One differing node in an answer: the zone's summary and, for a small node, its leaves."""

    summary: Summary
    listed: bool = False
    leaves: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Answer:
    check: int
    revision: int
    differ: tuple[Listed, ...] = ()


@dataclass
class Outcome:
    check: int
    revision: int
    result: str  # "equal", "repair" (keys found to repair), "differed" (none found), "inconclusive"
    reason: str = ""
    rounds: int = 0
    differed: list[NodeId] = field(default_factory=list)  # small nodes that differed
    puts: list[Key] = field(default_factory=list)
    deletes: list[Key] = field(default_factory=list)
    deferred: int = 0  # nodes left for the next check (limits per round or per check)


def is_small(global_count: int, zone_count: int, node: NodeId) -> bool:
    """Whether a differing node is compared leaf by leaf rather than expanded."""
    return len(node.prefix) >= MAX_DEPTH or max(global_count, zone_count) <= LEAF_BUCKET


def answer(tree: DigestTree, query: Query, revision: int) -> Answer:
    """The zone's answer to ``query`` from its tree at ``revision``."""
    if revision != query.revision:
        return Answer(query.check, revision)  # not at global's revision: inconclusive
    theirs = {s.node: s for s in query.nodes}
    mine: list[Summary] = tree.groups() if query.groups else []
    for parent in query.parents:
        mine += tree.children(parent)
    mine_by = {s.node: s for s in mine}
    differ: list[Listed] = []
    budget = MAX_ANSWER_LEAVES
    for node in sorted(set(theirs) | set(mine_by)):
        g = theirs.get(node)
        z = mine_by.get(node, Summary(node, 0, b""))
        if g is not None and (g.count, g.hash) == (z.count, z.hash):
            continue
        if len(differ) == MAX_ANSWER_NODES:
            break  # global refuses more; the rest differ unseen until fewer do
        if is_small(g.count if g else 0, z.count, node) and z.count <= budget:
            budget -= z.count
            differ.append(Listed(z, True, tuple(tree.leaves(node))))
        else:
            differ.append(Listed(z))
    return Answer(query.check, revision, tuple(differ))


def last_round(ans: Answer) -> bool:
    """Whether global asks nothing more of this check after ``ans``: only a differing node
    answered without its leaves can be expanded in a next round. The zone then lets go of
    its tree (about 57 bytes per synced resource with a short name) instead of keeping it
    until the next check, minutes later."""
    return all(item.listed for item in ans.differ)


class GlobalCheck:
    """One anti-entropy check of one zone, on global, from its first query to its outcome."""

    def __init__(self, check: int, revision: int, tree: DigestTree):
        self.check = check
        self.revision = revision
        self.tree = tree
        self.outcome = Outcome(check, revision, "equal")
        self._asked: dict[NodeId, Summary] = {}
        self._groups_round = False

    def first_query(self) -> Query:
        return self._query(groups=True, parents=())

    def _query(self, *, groups: bool, parents: Sequence[NodeId]) -> Query:
        nodes = self.tree.groups() if groups else []
        for p in parents:
            nodes += self.tree.children(p)
        self._asked = {s.node: s for s in nodes}
        self._parents = set(parents)
        self._groups_round = groups
        self.outcome.rounds += 1
        return Query(self.check, self.revision, groups, tuple(parents), tuple(nodes))

    def _asked_about(self, node: NodeId) -> bool:
        if node in self._asked:
            return True
        if node.prefix == "":
            return self._groups_round
        return node.parent in self._parents

    def on_answer(self, ans: Answer) -> Query | Outcome:
        """The zone's answer: the next query, or the check's outcome."""
        out = self.outcome
        if ans.check != self.check:
            raise ProtocolError(f"digest answer for check {ans.check}, expected {self.check}")
        if ans.revision != self.revision:
            out.result = "inconclusive"
            out.reason = (
                f"the zone was at revision {ans.revision}, global's tree at {self.revision}"
            )
            return out
        expand: list[NodeId] = []
        named: set[NodeId] = set()
        for i, item in enumerate(ans.differ):
            node = item.summary.node
            where = f"digest_answer.differ[{i}]"
            if not self._asked_about(node):
                raise ProtocolError(f"{where} names a node global did not ask about")
            if node in named:
                # Each listed copy would be compared again: 250,000 copies of one node in an
                # answer under 4 MiB took global's memory past a gigabyte.
                raise ProtocolError(f"{where} names a node an earlier item named")
            named.add(node)
            if item.summary.count and len(item.summary.hash) != DIGEST_BYTES:
                raise ProtocolError(f"{where}.hash must be {DIGEST_BYTES} bytes")
            mine = self._asked.get(node, Summary(node, 0, b""))
            if (mine.count, mine.hash) == (item.summary.count, item.summary.hash):
                continue  # not a difference after all
            small = is_small(mine.count, item.summary.count, node)
            if item.listed:
                if not small:
                    raise ProtocolError(f"{where} lists the leaves of a node that is not small")
                if len(out.puts) + len(out.deletes) >= MAX_REPAIR:
                    out.deferred += 1  # enough to repair in this check: the next one
                    continue
                self._compare(node, item, where)
            elif small:
                out.deferred += 1  # the zone's answer was full: the next check
            else:
                expand.append(node)
        if len(out.puts) + len(out.deletes) > MAX_REPAIR:
            extra = len(out.puts) + len(out.deletes) - MAX_REPAIR
            out.deferred += 1
            del out.deletes[max(0, len(out.deletes) - extra) :]
            del out.puts[MAX_REPAIR - len(out.deletes) :]
        if expand and len(out.puts) + len(out.deletes) < MAX_REPAIR:
            out.deferred += max(0, len(expand) - MAX_EXPAND)
            return self._query(groups=False, parents=expand[:MAX_EXPAND])
        out.deferred += len(expand)
        if out.puts or out.deletes:
            out.result = "repair"
        elif out.differed or out.deferred:
            out.result = "differed"
        return out

    def _compare(self, node: NodeId, item: Listed, where: str) -> None:
        if len(item.leaves) != item.summary.count:
            raise ProtocolError(
                f"{where} lists {len(item.leaves)} leaves but counts {item.summary.count}"
            )
        theirs: dict[str, bytes] = {}
        for j, (name, digest) in enumerate(item.leaves):
            problem = check_key(node.kind, node.mesh, name, f"{where}.leaves[{j}]")
            if problem is not None:
                raise ProtocolError(str(problem))
            if not bucket_of(name).startswith(node.prefix) or len(digest) != DIGEST_BYTES:
                raise ProtocolError(f"{where}.leaves[{j}] does not belong to its node")
            if name in theirs:
                raise ProtocolError(f"{where}.leaves[{j}] lists a name twice")
            theirs[name] = digest
        mine = dict(self.tree.leaves(node))
        out = self.outcome
        out.differed.append(node)
        for name, digest in mine.items():
            if theirs.get(name) != digest:
                out.puts.append(Key(node.kind, node.mesh, name))
        for name in theirs.keys() - mine.keys():
            out.deletes.append(Key(node.kind, node.mesh, name))
