"""What global's anti-entropy tree costs: reading every row into a tree, and bringing a held
tree forward by the keys written since (what each zone's check at a new head pays).

    .venv/bin/python bench/tree_cost.py --secrets 100000 --writes 1 100 1000 10000

Prints a Markdown table of CPU seconds (the process's, medians of --repeats); figures are
not asserted (CI runs it once, small, so it cannot rot).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0], the repository is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from globalcp.checks import GlobalTrees
from kds.model import Kind, Resource
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

NOW = "2026-11-30T00:00:00Z"
_CHUNK = 10_000


def _fill(engine: GlobalEngine, n: int) -> None:
    engine.put(Resource(Kind.MESH, "default"), NOW)
    for lo in range(0, n, _CHUNK):
        engine.put_many(
            [
                Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"v%08d" % i)
                for i in range(lo, min(n, lo + _CHUNK))
            ],
            NOW,
        )


async def _measure(store: SqliteGlobalStore, writes: list[int], repeats: int) -> list[str]:
    rows = []
    full = []
    leaves = 0
    for _ in range(repeats):
        started = time.process_time()
        tree = await GlobalTrees(store).at(await store.head())
        full.append(time.process_time() - started)
        assert tree is not None
        leaves = len(tree)
    rows.append(f"| read every row ({leaves} leaves) | {statistics.median(full):.3f} |")
    trees = GlobalTrees(store)
    await trees.at(await store.head())
    for n in writes:
        took = []
        for r in range(repeats):
            await store.put_many(
                [
                    Resource(Kind.SECRET, f"w{n}-{i}", mesh="default", data=b"%d" % r)
                    for i in range(n)
                ],
                NOW,
            )
            started = time.process_time()
            assert await trees.at(await store.head()) is not None
            took.append(time.process_time() - started)
        rows.append(
            f"| bring the held tree forward by {n} write{'s' if n != 1 else ''} | {statistics.median(took):.4f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secrets", type=int, default=100_000, help="secrets in the store")
    p.add_argument(
        "--writes",
        type=int,
        nargs="+",
        default=[1, 100, 1000, 10000],
        help="writes between two trees (each at most the change log's 10,000 entries)",
    )
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        engine = GlobalEngine(Path(tmp) / "global.db")
        _fill(engine, args.secrets)
        store = SqliteGlobalStore(engine)
        try:
            rows = asyncio.run(_measure(store, args.writes, args.repeats))
        finally:
            store.close()
    print("| what | CPU s |")
    print("|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
