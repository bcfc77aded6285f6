"""What one write costs each store, by how many meshes and secrets it already holds: global
writing one Secret (its whole transaction: rows, change log, durable commit), and a zone
applying the one-change batch that brings it (inline, as a zone applies a small batch).

    .venv/bin/python bench/write_cost.py --meshes 1 1000 --secrets 0 50000 --writes 300

CPU time of the calling thread per write (the store runs in-process, no network), median of
--repeats passes. A cost that grows with the store's size is a bug: each write touches only
its own resource, its mesh and the store's own bookkeeping. Prints a Markdown table;
figures are not asserted (CI runs it once, small, so it cannot rot).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0], the repository is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import final_batch, synced_put
from kds.model import Kind, Resource
from kds.store.sqlite import GlobalEngine, ZoneEngine

NOW = "2026-11-30T00:00:00Z"
FILL = 5_000  # secrets per filling transaction


def _secret(name: str, mesh: str, data: bytes) -> Resource:
    return Resource(Kind.SECRET, name, mesh=mesh, data=data)


def _global_cost(work: Path, meshes: int, secrets: int, writes: int, repeats: int) -> float:
    g = GlobalEngine(work / "global.db", log_size=1_000, max_message_bytes=4 << 20)
    try:
        g.put_many([Resource(Kind.MESH, f"m{i}") for i in range(meshes)], NOW)
        for start in range(0, secrets, FILL):
            names = range(start, min(secrets, start + FILL))
            g.put_many([_secret(f"s{i}", "m0", b"v%06d" % i) for i in names], NOW)
        passes = []
        for p in range(repeats):
            started = time.thread_time()
            for i in range(writes):
                g.put(_secret("bench", "m0", b"w%d-%d" % (p, i)), NOW)
            passes.append((time.thread_time() - started) / writes)
        return statistics.median(passes)
    finally:
        g.close()


def _zone_cost(work: Path, meshes: int, secrets: int, writes: int, repeats: int) -> float:
    z = ZoneEngine(work / "zone.db")
    try:
        held = [synced_put(Resource(Kind.MESH, f"m{i}"), i + 1, NOW) for i in range(meshes)]
        held += [
            synced_put(_secret(f"s{i}", "m0", b"v%06d" % i), meshes + i + 1, NOW)
            for i in range(secrets)
        ]
        z.apply_batch(final_batch(1, 0, held, snapshot=True), "bench-store", NOW)
        rev = len(held)
        passes = []
        for p in range(repeats):
            batches = []
            for i in range(writes):
                change = synced_put(_secret("bench", "m0", b"w%d-%d" % (p, i)), rev + i + 1, NOW)
                batches.append(final_batch(rev + i + 2, rev + i, [change]))
            started = time.thread_time()
            for b in batches:
                z.apply_batch_now(b, "bench-store", NOW)
            passes.append((time.thread_time() - started) / writes)
            rev += writes
        return statistics.median(passes)
    finally:
        z.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--meshes", type=int, nargs="+", default=[1, 1000], help="meshes held")
    p.add_argument("--secrets", type=int, nargs="+", default=[0, 50_000], help="secrets held")
    p.add_argument("--writes", type=int, default=300, help="writes timed per pass")
    p.add_argument("--repeats", type=int, default=3, help="passes; the median is printed")
    args = p.parse_args(argv)
    if min(args.meshes) < 1 or min(args.secrets) < 0 or args.writes < 1 or args.repeats < 1:
        p.error("--meshes and --writes and --repeats must be at least 1, --secrets at least 0")
    print(
        "| meshes | secrets | global: one Secret written, CPU us | zone: its batch applied, CPU us |"
    )
    print("|---|---|---|---|")
    for meshes in args.meshes:
        for secrets in args.secrets:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                g = _global_cost(work, meshes, secrets, args.writes, args.repeats)
                z = _zone_cost(work, meshes, secrets, args.writes, args.repeats)
            print(f"| {meshes} | {secrets} | {g * 1e6:.0f} | {z * 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
