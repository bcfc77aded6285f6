"""The benchmark harness: kds-sync end to end, side by side with etcd's watch.

    scripts/bench                 # full run: writes docs/benchmarks.{json,md,png}
                                  # (any other run must name its --out)
    scripts/bench --quick --out /tmp/b   # the small run CI does (tests/integration)

Every kds process is real: globalcp runs as its own process (the daemon, default settings,
JSON logs); zones run as fleets (bench.fleet), each zone a real ZoneClient over its own
SQLite store. Sync runs as in production: TLS with global's own CA, each zone presenting a
zone token issued through the API. Scenarios 1 and 2 also run kds in plaintext without tokens
(--kds-insecure), as an extra column showing what TLS costs (--no-plaintext skips it); etcd
runs plaintext. Writes go through global's HTTP API (single writes) or kdsctl (bulk), as a user's
would. etcd (Debian's etcd-server) runs on loopback with a temp data dir; its watchers
(bench.etcd) use grpc.aio and protobuf like the zones. Each repeat runs kds, then etcd, so the
ratio of the two is taken from the same minutes of a noisy machine.

Scenarios:
  1 propagation  one write at a time (the next after every member has it), from the write's
                 acknowledgement to applied on every zone / received by every watcher.
  2 bulk         N secrets in one kdsctl apply (etcd: one transaction) until every member
                 holds them.
  3 resume       a zone offline while 1% of the secrets change: bytes global sends it on
                 reconnect (on the wire, counted by a proxy) against the changed resources'
                 bytes (protobuf Resource encoding).
  4 footprint    global's resident memory with idle zones connected and the secrets held, what
                 each further zone adds, and the stores' size on disk.
  5 etcd         scenarios 1 and 2 against etcd, in the same run.
  6 anti_entropy bytes to check an equal N-secret store; time and bytes to find and repair
                 one damaged secret among N (in one process, bench.anti_entropy).
  7 components   the component tools (bench/write_cost.py, digest_cost.py, tree_cost.py,
                 kdsctl_calls.py, reconnect_memory.py), once each, their tables kept verbatim
                 (bench.components): every figure the report gives comes from this one run.
                 They run first, before the scenarios above load the machine.

The scenarios themselves are in bench.scenarios; this module plans the repeats, runs them and
writes the report (bench.report).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import anti_entropy, components, report
from bench.common import ROOT, profile_into, samplers_done
from bench.etcd import etcd_binary
from bench.scenarios import (
    bulk_etcd,
    bulk_kds,
    propagation_etcd,
    propagation_kds,
    resume_and_footprint,
)

SCENARIOS = ["propagation", "bulk", "resume", "anti_entropy", "components"]

PLANS = {
    "full": {
        "prop_zones": [1, 10, 100],
        # Zone counts whose propagation also runs with each zone, and each etcd watcher, in a
        # process of its own, as zones are deployed (the scenario packs several per process).
        "spread_zones": [10, 100],
        # A p99 of 200 writes is their second slowest, which one stall decides; of 500 it is
        # the fifth slowest.
        "writes": 500,
        "bulk_zones": [10, 100],
        "bulk_n": 10_000,
        "resume_total": 100_000,
        "idle_zones": 100,
        "extra_zones": 10,
        "storm_zones": 100,
        "ae_total": 100_000,
        "plaintext": True,
        "components": "full",
        "repeats": 3,
    },
    "quick": {
        # Five zones share one fleet process: more streams than global lets one connection
        # hold, so a change that made a process's zones share a connection fails here.
        "prop_zones": [1, 5],
        "spread_zones": [5],
        "writes": 20,
        "bulk_zones": [2],
        "bulk_n": 300,
        "resume_total": 2_000,
        "idle_zones": 3,
        "extra_zones": 2,
        "storm_zones": 3,
        "ae_total": 2_000,
        "plaintext": True,
        "components": "small",
        "repeats": 1,
    },
}


def _procs(zones: int, requested: int) -> int:
    return requested if requested else (1 if zones < 10 else 2)


def _commit() -> str:
    """The checked-out commit, with "+changes" if the work tree differs from it: a published
    run names what it measured."""
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head.stdout.strip() + ("+changes" if dirty else "")


def run(plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "etcd": subprocess.run(
                [etcd_binary() or "etcd", "--version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
            "note": "shared 2-core machine; other jobs may run at the same time",
            "load_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "commit": _commit(),
        "plan": plan,
        "propagation": [],
        "bulk": [],
    }
    only = set(args.only or SCENARIOS)
    # The component tools first, on the machine as quiet as the run finds it: after the
    # snapshot storm the load stays high for minutes and moves kdsctl's per-call figures.
    if "components" in only:
        results["components"] = components.run_all(plan["components"] == "small", _log)
    for rep in range(plan["repeats"]):
        if "propagation" in only:
            for z in plan["prop_zones"]:
                p = _procs(z, args.procs)
                _log(f"repeat {rep + 1}: propagation, {z} zone(s)")
                k = propagation_kds(z, plan["writes"], args.pace, p, args.keep)
                row: dict[str, Any] = {"repeat": rep + 1, "kds": k}
                if plan["plaintext"]:
                    row["kds_plain"] = propagation_kds(
                        z, plan["writes"], args.pace, p, args.keep, tls=False
                    )
                e = row["etcd"] = propagation_etcd(z, plan["writes"], args.pace, p, args.keep)
                plain = row.get("kds_plain")
                _log(
                    f"  kds p50 {k['p50_ms']} p99 {k['p99_ms']}"
                    + (f" (plaintext p99 {plain['p99_ms']})" if plain else "")
                    + f"; etcd p50 {e['p50_ms']} p99 {e['p99_ms']}"
                )
                if z in plan.get("spread_zones", ()) and z != p:
                    _log(f"repeat {rep + 1}: propagation, {z} zone(s), a process each")
                    k = row["kds_spread"] = propagation_kds(
                        z, plan["writes"], args.pace, z, args.keep
                    )
                    e = row["etcd_spread"] = propagation_etcd(
                        z, plan["writes"], args.pace, z, args.keep
                    )
                    _log(
                        f"  kds p50 {k['p50_ms']} p99 {k['p99_ms']}; "
                        f"etcd p50 {e['p50_ms']} p99 {e['p99_ms']}"
                    )
                results["propagation"].append(row)
        if "bulk" in only:
            for z in plan["bulk_zones"]:
                p = _procs(z, args.procs)
                _log(f"repeat {rep + 1}: bulk {plan['bulk_n']}, {z} zone(s)")
                k = bulk_kds(z, plan["bulk_n"], p, args.keep)
                row = {"repeat": rep + 1, "kds": k}
                if plan["plaintext"]:
                    row["kds_plain"] = bulk_kds(z, plan["bulk_n"], p, args.keep, tls=False)
                e = row["etcd"] = bulk_etcd(z, plan["bulk_n"], p, args.keep)
                results["bulk"].append(row)
                plain = row.get("kds_plain")
                _log(
                    f"  kds {k['all_zones_s']} s (apply {k['apply_s']} s)"
                    + (f" (plaintext {plain['all_zones_s']} s)" if plain else "")
                    + f"; etcd {e['all_zones_s']} s"
                )
    if "resume" in only:
        _log(f"resume and footprint: {plan['resume_total']} secrets, {plan['idle_zones']} zones")
        p = _procs(plan["idle_zones"], args.procs)
        resume, foot = resume_and_footprint(
            plan["resume_total"],
            plan["idle_zones"],
            plan["extra_zones"],
            plan["storm_zones"],
            p,
            args.keep,
        )
        results["resume"] = resume
        results["footprint"] = foot
        _log(f"  {json.dumps(resume)}\n  {json.dumps(foot)}")
    if "anti_entropy" in only:
        _log(f"anti-entropy: {plan['ae_total']} secrets, one damaged")
        results["anti_entropy"] = asyncio.run(anti_entropy.measure(plan["ae_total"]))
        _log(f"  {json.dumps(results['anti_entropy'])}")
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="the small run CI does")
    ap.add_argument(
        "--out",
        type=Path,
        help="where results go (default: docs/, for a full run only: a partial run must "
        "name another place, so the published report is never replaced by one)",
    )
    ap.add_argument("--repeats", type=int, help="override the plan's repeats")
    ap.add_argument("--pace", type=float, default=0.01, help="pause between single writes (s)")
    ap.add_argument("--procs", type=int, default=0, help="fleet processes (0: by zone count)")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        help="run only these",
    )
    ap.add_argument("--keep", action="store_true", help="keep work dirs (logs, stores)")
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample global and every fleet process with py-spy into DIR (collapsed stacks, "
        "one file per process); the run's figures then include py-spy's cost",
    )
    ap.add_argument("--prop-zones", type=int, nargs="+", help="override propagation zone counts")
    ap.add_argument("--bulk-zones", type=int, nargs="+", help="override bulk zone counts")
    ap.add_argument("--writes", type=int, help="override single writes per run")
    ap.add_argument(
        "--no-plaintext", action="store_true", help="skip the plaintext kds runs (TLS only)"
    )
    args = ap.parse_args(argv)
    partial = [
        flag
        for flag, given in (
            ("--quick", args.quick),
            ("--only", args.only),
            ("--repeats", args.repeats),
            ("--prop-zones", args.prop_zones),
            ("--bulk-zones", args.bulk_zones),
            ("--writes", args.writes),
            ("--no-plaintext", args.no_plaintext),
            ("--profile", args.profile),
            ("--procs", args.procs),
            ("--pace", args.pace != 0.01),
        )
        if given
    ]
    if args.out is None:
        if partial:
            ap.error(
                f"{', '.join(partial)}: a partial run does not replace the published report "
                "in docs/: give --out DIR"
            )
        args.out = ROOT / "docs"
    plan = dict(PLANS["quick" if args.quick else "full"])
    if args.no_plaintext:
        plan["plaintext"] = False
    for key in ("repeats", "prop_zones", "bulk_zones", "writes"):
        if getattr(args, key):
            plan[key] = getattr(args, key)
    if etcd_binary() is None:
        print(
            "etcd not found: run scripts/setup-bench (installs Debian's etcd-server)",
            file=sys.stderr,
        )
        return 2
    if args.profile:
        profile_into(args.profile)
    results = run(plan, args)
    samplers_done()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write(results, args.out)
    _log(f"wrote {args.out / 'benchmarks.json'}, benchmarks.md, benchmarks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
