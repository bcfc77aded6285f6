"""What anti-entropy costs: bytes exchanged to check an equal N-secret store, and the time
and bytes to find and repair one damaged secret among N.

    .venv/bin/python bench/anti_entropy.py --secrets 100000

In one process, with the code the daemons run: global's SQLite store and the check's driver
(globalcp.checks.ZoneChecks), a zone's SQLite store and its answers (kds.protocol.anti_entropy
and kds.wire, as zonecp.client does), the repair packed and applied through the zone's normal
apply path. Bytes are the encoded messages as written on the stream (gRPC adds 5 bytes per
message and HTTP/2 framing); time is the work on both sides with no network in between (a
real link adds one round trip per round). Also run by the harness (scripts/bench, scenario
anti_entropy), small in its CI run. Figures are not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0], the repository is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from globalcp.checks import ZoneChecks
from kds import wire
from kds._pb import sync_pb2 as pb
from kds.model import Kind, Resource
from kds.protocol.anti_entropy import Outcome, Query, answer
from kds.protocol.applier import DecodedBatch, Incoming
from kds.protocol.batching import pack
from kds.protocol.digest_tree import DigestTree
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore, SqliteZoneStore, ZoneEngine

NOW = "2026-11-30T00:00:00Z"


def _fill(g: GlobalEngine, n: int) -> None:
    g.put(Resource(Kind.MESH, "default"), NOW)
    for start in range(0, n, 10_000):
        g.put_many(
            [
                Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"value-%08d" % i)
                for i in range(start, min(n, start + 10_000))
            ],
            NOW,
        )


def _copy_to_zone(g: GlobalEngine, z: ZoneEngine) -> None:
    snap = g.snapshot()
    changes = tuple(
        Incoming(c.revision, c.key, wire.resource_from_pb(pb.Change.FromString(c.change).put))
        for c in snap.changes
    )
    z.apply_batch(
        DecodedBatch(1, 0, snap.revision, True, True, snap.revision, changes, snap.chain),
        g.store_id,
        NOW,
    )


async def _check(
    checks: ZoneChecks, zone: SqliteZoneStore, revision: int
) -> tuple[Outcome, dict[str, int]]:
    """One check, global and zone taking turns as over the stream: its outcome and bytes."""
    sent = {"queries": 0, "answers": 0, "rounds": 0}
    first = await checks.start(revision)
    assert first is not None
    sent["queries"] += len(first)
    zleaves = await zone.sync_leaves()
    ztree = await asyncio.to_thread(DigestTree, zleaves.leaves)
    message = pb.GlobalMessage.FromString(first)
    while True:
        query = wire.query_from_pb(message.digest_query)
        reply = wire.answer_to_pb(answer(ztree, query, zleaves.revision)).SerializeToString()
        sent["answers"] += len(reply)
        sent["rounds"] += 1
        checks.on_answer(pb.ZoneMessage.FromString(reply).digest_answer)
        step = await checks.advance()
        if not isinstance(step, Query):
            return step, sent
        data = wire.query_to_pb(step)
        sent["queries"] += len(data)
        message = pb.GlobalMessage.FromString(data)


async def _repair(
    checks: ZoneChecks, zone: SqliteZoneStore, out: Outcome, revision: int, store_id: str
) -> int:
    """Send and apply the repair as SendLoop and the zone client do; its bytes."""
    records = await checks.repairs(out)
    total = 0
    for seq, part in enumerate(pack(records, 4 << 20, wire.PART_BYTES), start=1):
        data = wire.assemble_batch(
            seq=seq,
            from_revision=revision,
            revision=revision,
            snapshot=False,
            final=True,
            head_revision=revision,
            framed_changes=[r.framed for r in part.records],
            repair=True,
        )
        total += len(data)
        batch, _ = wire.decode_batch(pb.GlobalMessage.FromString(data).batch)
        await zone.apply_batch(batch, store_id, NOW)
    return total


async def measure(secrets: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        g, z = GlobalEngine(work / "global.db"), ZoneEngine(work / "zone.db")
        _fill(g, secrets)
        _copy_to_zone(g, z)
        gstore, zstore = SqliteGlobalStore(g), SqliteZoneStore(z)
        try:
            revision = await gstore.head()
            checks = ZoneChecks(gstore, 300.0, time.monotonic)
            started = time.perf_counter()
            equal, equal_bytes = await _check(checks, zstore, revision)
            equal_s = time.perf_counter() - started
            victim = f"s{secrets // 2}"

            def damage() -> None:
                z.db.conn().execute(
                    "UPDATE resources SET data=X'00' WHERE name=? AND origin='global'", (victim,)
                )

            await zstore._threads.write(damage)
            started = time.perf_counter()
            found, found_bytes = await _check(checks, zstore, revision)
            repair_bytes = await _repair(checks, zstore, found, revision, g.store_id)
            repair_s = time.perf_counter() - started
            after, _ = await _check(checks, zstore, revision)
        finally:
            gstore.close()
            zstore.close()
    return {
        "secrets": secrets,
        "equal": {
            "result": equal.result,
            "rounds": equal_bytes["rounds"],
            "bytes": equal_bytes["queries"] + equal_bytes["answers"],
            "seconds": round(equal_s, 3),
        },
        "one_damaged": {
            "result": found.result,
            "repaired": [str(k) for k in found.puts],
            "rounds": found_bytes["rounds"],
            "check_bytes": found_bytes["queries"] + found_bytes["answers"],
            "repair_bytes": repair_bytes,
            "seconds": round(repair_s, 3),
            "after": after.result,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secrets", type=int, default=100_000, help="secrets in the store")
    args = p.parse_args(argv)
    r = asyncio.run(measure(args.secrets))
    e, d = r["equal"], r["one_damaged"]
    print(f"| anti-entropy, {r['secrets']} secrets | result | rounds | bytes | s |")
    print("|---|---|---|---|---|")
    print(
        f"| equal stores: check | {e['result']} | {e['rounds']} | {e['bytes']} | {e['seconds']} |"
    )
    print(
        f"| one damaged secret: check and repair | {d['result']} {d['repaired']}, then "
        f"{d['after']} | {d['rounds']} | {d['check_bytes']} + {d['repair_bytes']} "
        f"| {d['seconds']} |"
    )
    return 0 if d["after"] == "equal" and d["repaired"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
