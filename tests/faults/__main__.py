"""Run the fault suite: random seeded operations and faults against real daemons, then the
history checker (tests/faults/checker.py). Usage:

    scripts/faults --seed 7 --duration 300     # a long run
    scripts/faults --seed 7 --duration 20 --keep   # keep the daemons' logs and stores
    scripts/faults --postgres --seed 7 --duration 300   # two globals on PostgreSQL

Prints a summary (operations, faults, violations) and exits 1 if any guarantee was broken,
2 on bad arguments or if the run itself failed, 130 when stopped by SIGINT or SIGTERM (the
daemons are stopped either way, and the work dir removed unless --keep).
The same seed makes the same choices (the daemons' timing still varies).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.faults.pg_runner import PgFaultRun
from tests.faults.runner import FaultRun


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    return parse


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so every daemon is stopped on the way out, as with Ctrl-C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: a new one)")
    ap.add_argument("--duration", type=_positive(float), default=60.0, help="seconds of operations")
    ap.add_argument(
        "--zones", type=_positive(int), default=2, help="zones (default 2; SQLite topology)"
    )
    ap.add_argument(
        "--postgres",
        action="store_true",
        help="the PostgreSQL topology: two globals, a zone of two instances and a zone on "
        "SQLite, on a throwaway PostgreSQL server (needs scripts/setup-postgres)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    work = Path(tempfile.mkdtemp(prefix=f"kds-faults-{seed}-"))

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _interrupted)
    try:
        if args.postgres:
            say(f"seed {seed}, {args.duration:g} s, PostgreSQL topology, work dir {work}")
            summary = PgFaultRun(work, seed, args.duration, log=say).run()
        else:
            say(f"seed {seed}, {args.duration:g} s, {args.zones} zones, work dir {work}")
            summary = FaultRun(work, seed, args.duration, args.zones, log=say).run()
    except BaseException as e:
        # The runs stop their daemons in their own finally blocks; only the work dir is left.
        stopped = isinstance(e, KeyboardInterrupt)
        say(f"{'stopped' if stopped else f'the run failed: {e!r}'} (seed {seed})")
        if args.keep:
            say(f"kept {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        if stopped:
            return 130
        raise SystemExit(2) from e
    print(summary.text())
    if args.keep:
        import pickle

        (work / "history.pickle").write_bytes(pickle.dumps(summary.history))
        say(f"kept {work} (history.pickle: the recorded history)")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
