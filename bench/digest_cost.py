"""What the row digests of the SQLite store cost: a zone applying one large batch, with the
digest and with it stubbed out, and the start-up check of every row.

    .venv/bin/python bench/digest_cost.py --secrets 10000 --rows 100000

Prints a Markdown table; figures are not asserted (CI runs it once, small, so it cannot rot).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0], the repository is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kds.store._rows as rowsmod
import kds.store._sealing as sealmod
import kds.store.sqlite._digest as digmod
from bench.common import final_batch, synced_put
from kds.model import Kind, Resource
from kds.protocol.applier import DecodedBatch
from kds.store.sqlite import ZoneEngine

NOW = "2026-11-30T00:00:00Z"


def _batch(n: int) -> DecodedBatch:
    changes = [synced_put(Resource(Kind.MESH, "default"), 1, NOW)] + [
        synced_put(Resource(Kind.SECRET, f"s{i}", mesh="default", data=b"v%06d" % i), i + 2, NOW)
        for i in range(n)
    ]
    return final_batch(1, 0, changes)


def _apply(path: Path, n: int) -> float:
    z = ZoneEngine(path)
    started = time.perf_counter()
    z.apply_batch(_batch(n), "bench-store", NOW)
    took = time.perf_counter() - started
    z.close()
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secrets", type=int, default=10_000, help="secrets in the applied batch")
    p.add_argument("--rows", type=int, default=100_000, help="rows the start-up check reads")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with_digest = _apply(work / "with.db", args.secrets)
        real = digmod.row_digest
        rowsmod.row_digest = sealmod.row_digest = lambda values: b""
        try:
            stubbed = _apply(work / "stubbed.db", args.secrets)
        finally:
            rowsmod.row_digest = sealmod.row_digest = real
        big = work / "big.db"
        _apply(big, args.rows)
        conn = sqlite3.connect(big)
        started = time.perf_counter()
        damaged = digmod.scan(conn)
        scan = time.perf_counter() - started
        conn.close()
    if damaged:
        print(f"unexpected: {len(damaged)} damaged rows in a fresh store", file=sys.stderr)
        return 1
    print("| what | ms |")
    print("|---|---|")
    print(f"| apply_batch of {args.secrets} secrets, with row digests | {with_digest * 1000:.0f} |")
    print(f"| same, digest stubbed out | {stubbed * 1000:.0f} |")
    print(f"| start-up check of {args.rows} rows | {scan * 1000:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
