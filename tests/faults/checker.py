"""The history checker of the fault suite: what kds-sync promises, checked on a recorded run.

A run (tests.faults.runner) drives random operations against global and the zones while it
injects faults, and records a ``History``: every operation with its outcome, what each zone
applied (its "applied batch" log lines, per process lifetime), polls of each zone's state,
and, at the end, global's and every zone's synced resources read from their stores. This
module judges that history, in the spirit of etcd's robustness tests: it does not replay a
script, it checks guarantees.

Guarantees (one ``Violation`` kind each):

  lost-write     every acknowledged write on global is in global's final state, unless a
                 later operation on the same key replaced it (an unacknowledged operation
                 may or may not have happened: either outcome is accepted).
  not-reached    every zone connected at the end holds global's final revision: every
                 acknowledged write reached it.
  gap            within one zone process, each batch starts at the revision the zone recorded
                 last (a range), or is a snapshot; a process resumes from where the last one
                 left off or later (it may have applied a batch it did not live to log),
                 unless its store was replaced (restored from a copy, or damaged rows
                 cleared at start: a snapshot follows).
  backwards      a zone's recorded revision never goes down within one process.
  resurrected    a zone that has applied a secret's delete never serves that secret again
                 from sync, unless a later put of it was made.
  local-changed  a zone's own secrets are never changed or removed by sync: every poll and
                 the end show the value the zone's API last acknowledged.
  diverged       at the end, every zone's synced resources equal global's, byte for byte (by
                 anti-entropy leaf digest), the copies kept aside by name conflicts included.
  refused-made   a put the API refused as not made (507, a full disk) is never seen: not in
                 any poll of a zone, nor in global's or a zone's final state (values are
                 unique per operation, so a value names the put that wrote it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Applied",
    "History",
    "Observation",
    "Op",
    "Violation",
    "check",
]

SKey = tuple[str, str]  # a secret: (mesh, name)


@dataclass(frozen=True)
class Op:
    """One operation: ``target`` "global" or a zone's name; ``kind`` put or delete (secret),
    mesh-put or mesh-delete (key ("", mesh)); ``acked`` whether the API answered 2xx;
    ``revision`` global's head right after an acknowledged global operation; ``refused``
    when the answer said the write was not made (a full disk's 507), where no answer at
    all (a crash, a timeout) leaves it unknown."""

    seq: int
    target: str
    kind: str
    key: SKey
    value: str = ""
    acked: bool = True
    revision: int | None = None
    refused: bool = False  # the answer said it was not made (507: a full disk)


@dataclass(frozen=True)
class Applied:
    """One "applied batch" line of a zone: which process (``life``) applied it. A ``start``
    record is a stream's welcome: the revision the zone's store held then (from and to)."""

    zone: str
    life: int
    from_revision: int
    revision: int
    snapshot: bool
    final: bool
    repair: bool = False
    start: bool = False


@dataclass(frozen=True)
class Observation:
    """A poll of a zone: its applied revision (read first), then its secrets by key, each
    (value, origin) with origin "global" (a synced copy) or "zone" (its own)."""

    zone: str
    after_op: int  # the seq of the last operation finished before the poll
    applied_revision: int
    secrets: dict[SKey, tuple[str, str]]


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    # Zone process lives whose store was replaced or cleared before they started.
    reset_lives: set[tuple[str, int]] = field(default_factory=set)
    # Zones whose data dir was replaced by an older copy, with the last op before each time:
    # the zone's own writes until then are whatever that copy held.
    local_resets: dict[str, list[int]] = field(default_factory=dict)
    # The end: global's head, each zone's recorded revision and whether it was connected.
    final_head: int = 0
    final_revisions: dict[str, int] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)
    # The end, read from the stores: anti-entropy leaf digests by (kind, mesh, name).
    global_leaves: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    zone_leaves: dict[str, dict[tuple[str, str, str], bytes]] = field(default_factory=dict)
    # The end: global's secrets (value by key) and each zone's own secrets.
    global_secrets: dict[SKey, str] = field(default_factory=dict)
    zone_local: dict[str, dict[SKey, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str


def check(h: History) -> list[Violation]:
    """Every guarantee the history breaks (empty: none)."""
    return [
        *_lost_writes(h),
        *_not_reached(h),
        *_revisions(h),
        *_resurrected(h),
        *_local_changed(h),
        *_diverged(h),
        *_refused_made(h),
    ]


def _global_ops(h: History, key: SKey, kinds: Iterable[str]) -> list[Op]:
    return [o for o in h.ops if o.target == "global" and o.key == key and o.kind in kinds]


def _lost_writes(h: History) -> Iterable[Violation]:
    keys = {o.key for o in h.ops if o.target == "global" and o.kind in ("put", "delete")}
    for key in sorted(keys):
        ops = _global_ops(h, key, ("put", "delete"))
        last_acked = max((i for i, o in enumerate(ops) if o.acked), default=None)
        if last_acked is None:
            continue
        # The last acknowledged op, or any unacknowledged one after it, may be the outcome.
        allowed = {_effect(o) for o in ops[last_acked:]}
        final = h.global_secrets.get(key)
        if final not in allowed:
            o = ops[last_acked]
            yield Violation(
                "lost-write",
                f"global's final state of {key[0]}/{key[1]} is {_shown(final)}, but op "
                f"{o.seq} ({o.kind}) was acknowledged and nothing later replaced it",
            )


def _effect(o: Op) -> str | None:
    return o.value if o.kind == "put" else None


def _shown(value: str | None) -> str:
    return "absent" if value is None else "a value"


def _not_reached(h: History) -> Iterable[Violation]:
    for zone in sorted(h.connected):
        rev = h.final_revisions.get(zone, 0)
        if rev != h.final_head:
            yield Violation(
                "not-reached",
                f"{zone} ended connected at revision {rev}, global at {h.final_head}",
            )


def _revisions(h: History) -> Iterable[Violation]:
    last_of_zone: dict[str, int | None] = {}
    by_life: dict[tuple[str, int], list[Applied]] = {}
    for a in h.applied:
        by_life.setdefault((a.zone, a.life), []).append(a)
    # A life whose store was replaced counts even if it recorded nothing (it died before it
    # connected): the lives after it start from that replaced store, wherever it was.
    for reset in h.reset_lives:
        by_life.setdefault(reset, [])
    for (zone, life), batches in sorted(by_life.items()):
        recorded = last_of_zone.get(zone)
        if (zone, life) in h.reset_lives:
            recorded = None  # its store was replaced: it starts wherever that store was
        first = True
        for a in batches:
            if a.start:
                # A process may have applied a batch it did not live to log: a new life may
                # start ahead of the last logged revision, never behind; a stream within a
                # life starts exactly where the last one left off.
                if recorded is not None and (
                    a.revision < recorded or (a.revision > recorded and not first)
                ):
                    kind = "backwards" if a.revision < recorded else "gap"
                    yield Violation(
                        kind,
                        f"{zone} (life {life}) opened a stream at {a.revision} after "
                        f"recording {recorded}",
                    )
                recorded = a.revision
                first = False
                continue
            first = False
            if a.snapshot:
                if a.final and recorded is not None and a.revision < recorded:
                    yield Violation(
                        "backwards",
                        f"{zone} (life {life}) applied a snapshot at {a.revision} after "
                        f"recording {recorded}",
                    )
            elif recorded is not None and a.from_revision != recorded:
                kind = "gap" if a.from_revision > recorded else "backwards"
                yield Violation(
                    kind,
                    f"{zone} (life {life}) applied a batch from {a.from_revision} while at "
                    f"{recorded}",
                )
            if a.final:
                if recorded is not None and a.revision < recorded and not a.snapshot:
                    yield Violation(
                        "backwards",
                        f"{zone} (life {life}) recorded {a.revision} after {recorded}",
                    )
                recorded = a.revision
        last_of_zone[zone] = recorded


def _resurrected(h: History) -> Iterable[Violation]:
    global_ops = [o for o in h.ops if o.target == "global" and o.kind in ("put", "delete")]
    for obs in h.observations:
        for key, (_, origin) in sorted(obs.secrets.items()):
            if origin != "global":
                continue
            ops = [o for o in global_ops if o.key == key]
            # The key's last operation global had made at the zone's revision...
            done = [o for o in ops if o.acked and o.revision is not None]
            at = [o for o in done if o.revision <= obs.applied_revision]  # type: ignore[operator]
            if not at or at[-1].kind != "delete":
                continue
            # ...was a delete; a later put (even unacknowledged, or after the poll began)
            # may explain the copy.
            if any(o.kind == "put" and o.seq > at[-1].seq for o in ops):
                continue
            yield Violation(
                "resurrected",
                f"{obs.zone} at revision {obs.applied_revision} serves {key[0]}/{key[1]} "
                f"from sync after its delete (op {at[-1].seq}, revision {at[-1].revision})",
            )


def _local_changed(h: History) -> Iterable[Violation]:
    zones = {o.target for o in h.ops if o.target != "global"}
    for zone in sorted(zones):
        ops = [o for o in h.ops if o.target == zone]
        resets = h.local_resets.get(zone, [])
        for obs in [x for x in h.observations if x.zone == zone]:
            since = max((r for r in resets if r <= obs.after_op), default=0)
            yield from _local_at(zone, ops, obs.after_op, obs.secrets, "a poll", since)
        final = {k: (v, "zone") for k, v in h.zone_local.get(zone, {}).items()}
        yield from _local_at(zone, ops, 1 << 60, final, "the end", max(resets, default=0))


def _local_at(
    zone: str,
    ops: list[Op],
    after_op: int,
    seen: dict[SKey, tuple[str, str]],
    when: str,
    since: int = 0,
) -> Iterable[Violation]:
    for key in sorted({o.key for o in ops}):
        mine = [o for o in ops if o.key == key]
        done = [o for o in mine if o.seq <= after_op]
        acked = [o for o in done if o.acked]
        if not acked or acked[-1].seq <= since:
            continue  # never written, or last written before its data dir was replaced
        last = acked[-1]
        # An unacknowledged op after it, or one still running, may have happened.
        if any(o.seq > last.seq for o in mine if not o.acked or o.seq > after_op):
            continue
        have = seen.get(key)
        own = have[0] if have is not None and have[1] == "zone" else None
        if own != _effect(last):
            yield Violation(
                "local-changed",
                f"{zone}'s own {key[0]}/{key[1]} at {when}: expected "
                f"{_shown(_effect(last))}, found {_shown(own)}"
                + ("" if own is None or _effect(last) is None else " that differs"),
            )


def _diverged(h: History) -> Iterable[Violation]:
    for zone, leaves in sorted(h.zone_leaves.items()):
        # Synced copies a name conflict keeps aside are leaves too: they must equal global's.
        for key in sorted(set(leaves) | set(h.global_leaves)):
            if leaves.get(key) != h.global_leaves.get(key):
                yield Violation(
                    "diverged",
                    f"{zone}'s synced {key[0]} {key[1] + '/' if key[1] else ''}{key[2]} "
                    f"differs from global's ({'missing' if key not in leaves else 'present'}"
                    f"{'' if key in h.global_leaves else ', global has none'})",
                )


def _refused_made(h: History) -> Iterable[Violation]:
    refused = {o.value: o for o in h.ops if o.refused and o.kind == "put"}
    if not refused:
        return
    seen: list[tuple[str, str]] = [(v, "global's final state") for v in h.global_secrets.values()]
    for zone, local in sorted(h.zone_local.items()):
        seen += [(v, f"{zone}'s final state") for v in local.values()]
    for obs in h.observations:
        seen += [(v, f"a poll of {obs.zone}") for v, _ in obs.secrets.values()]
    for value, where in seen:
        o = refused.get(value)
        if o is not None:
            yield Violation(
                "refused-made",
                f"op {o.seq} ({o.target} put {o.key[0]}/{o.key[1]}) was refused as not made, "
                f"but its value is in {where}",
            )
            del refused[value]  # once per op
