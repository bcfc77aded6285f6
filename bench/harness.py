"""The benchmark harness (issue 7): kds-sync end to end, side by side with etcd's watch.

    scripts/bench                 # full run: writes docs/benchmarks.{json,md,png}
    scripts/bench --quick --out /tmp/b   # the small run CI does (tests/integration)

Every kds process is real: globalcp runs as its own process (the daemon, default settings,
JSON logs); zones run as fleets (bench.fleet), each zone a real ZoneClient over its own
SQLite store. Writes go through global's HTTP API (single writes) or kdsctl (bulk), as a user's
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
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.common import (
    BIN,
    ROOT,
    CountingProxy,
    Fleet,
    RssSampler,
    dir_size_mb,
    free_port,
    peak_rss_mb,
    percentile,
    rss_mb,
    start_fleet,
    stop_process,
    wait_http,
)
from bench.etcd import EtcdServer, etcd_binary
from kds._pb import sync_pb2 as pb

VALUE_BYTES = 48  # each secret's decoded data (64 base64 characters)


def _value(i: int, salt: str) -> bytes:
    seed = f"{salt}-{i}-".encode()
    return (seed * (VALUE_BYTES // len(seed) + 1))[:VALUE_BYTES]


# ---------------------------------------------------------------------- kds global


class KdsGlobal:
    """A real globalcp process on loopback ports."""

    def __init__(self, work: Path, name: str = "global"):
        self.dir = work / name
        self.api_port, self.kds_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.log = work / f"{name}.log"
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "globalcp"),
                    "run",
                    "--data-dir",
                    str(self.dir),
                    "--api-address",
                    f"127.0.0.1:{self.api_port}",
                    "--kds-address",
                    f"127.0.0.1:{self.kds_port}",
                    "--log-format",
                    "json",
                    # Plaintext sync without zone tokens, as etcd runs here: the side-by-side
                    # compares like with like (TLS is the default in production).
                    "--kds-insecure",
                ],
                stdout=f,
                stderr=f,
            )
        wait_http(self.api + "/")
        self.admin_token = (self.dir / "admin-token").read_text().strip()
        self.http = httpx.Client(
            base_url=self.api,
            timeout=600,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        self._db = sqlite3.connect(f"file:{self.dir / 'global.db'}?mode=ro", uri=True)

    @property
    def address(self) -> str:
        return f"grpc://127.0.0.1:{self.kds_port}"

    def head(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='head'").fetchone()[0])

    def changes(self, after: int, upto: int) -> list[bytes]:
        cur = self._db.execute(
            "SELECT change FROM changelog WHERE revision > ? AND revision <= ? ORDER BY revision",
            (after, upto),
        )
        return [bytes(c) for (c,) in cur]

    def put_secret(self, name: str, value: bytes) -> None:
        r = self.http.put(
            f"/meshes/default/secrets/{name}",
            json={
                "type": "Secret",
                "mesh": "default",
                "name": name,
                "data": base64.b64encode(value).decode(),
            },
        )
        r.raise_for_status()

    def apply_items(self, items: list[dict[str, Any]], chunk: int = 10_000) -> None:
        for i in range(0, len(items), chunk):
            self.http.post("/_apply", json={"items": items[i : i + chunk]}).raise_for_status()

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if e.get("event") == event:
                out.append(e)
        return out

    def stop(self) -> None:
        self.http.close()
        self._db.close()
        stop_process(self.proc)


def _secret_items(n: int, salt: str, prefix: str = "s") -> list[dict[str, Any]]:
    return [
        {
            "type": "Secret",
            "mesh": "default",
            "name": f"{prefix}{i}",
            "data": base64.b64encode(_value(i, salt)).decode(),
        }
        for i in range(n)
    ]


def _zones(g: KdsGlobal, work: Path, n: int, procs: int, *, address: str = "", **kw: Any) -> Fleet:
    seed = kw.pop("seed", "")
    prefix = kw.pop("prefix", "zone-")
    first = kw.pop("first", 0)
    data = kw.pop("data", work / "zones")
    args = [
        "--global-address",
        address or g.address,
        "--data-dir",
        str(data),
        "--zone-prefix",
        prefix,
    ]
    if seed:
        args += ["--seed-db", str(seed)]
    return start_fleet("bench.fleet", n, procs, args, work, f"fleet-{prefix}{first}", first)


def _watchers(server: EtcdServer, work: Path, n: int, procs: int) -> Fleet:
    args = ["--endpoint", server.endpoint, "--prefix", "/kds/"]
    return start_fleet("bench.etcd", n, procs, args, work, "watchers")


@contextmanager
def _workdir(name: str, keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix=f"kds-bench-{name}-"))
    try:
        yield work
    finally:
        if keep:
            print(f"  (kept {work})", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _summary(lat_ms: list[float], from_send_ms: list[float]) -> dict[str, Any]:
    """Latency figures from the write's acknowledgement (negative: a member had it before
    the writer heard the answer), and from sending the write (the write's own commit too)."""
    return {
        "writes": len(lat_ms),
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2),
        "before_ack": sum(1 for x in lat_ms if x < 0),
        "from_send_p50_ms": round(percentile(from_send_ms, 50), 2),
        "from_send_p99_ms": round(percentile(from_send_ms, 99), 2),
    }


# ---------------------------------------------------------------------- scenarios


def propagation_kds(zones: int, writes: int, pace: float, procs: int, keep: bool) -> dict:
    with _workdir(f"prop-kds-{zones}", keep) as work:
        g = KdsGlobal(work)
        fleet = _zones(g, work, zones, procs)
        try:
            fleet.wait_connected()
            fleet.wait_revision(g.head())
            lat, full = [], []
            for i in range(writes):
                sent = time.time()
                g.put_secret("bench", _value(i, "prop"))
                acked = time.time()
                rev = g.head()
                fleet.wait_revision(rev, 60)
                last = max(fleet.first_at(m, rev) for m in range(zones))
                lat.append((last - acked) * 1000)
                full.append((last - sent) * 1000)
                time.sleep(pace)
            return {
                "zones": zones,
                **_summary(lat, full),
                "global_peak_rss_mb": _mb(peak_rss_mb(g.proc.pid)),
            }
        finally:
            fleet.stop()
            g.stop()


def propagation_etcd(watchers: int, writes: int, pace: float, procs: int, keep: bool) -> dict:
    with _workdir(f"prop-etcd-{watchers}", keep) as work:
        server = EtcdServer(work / "etcd", work / "etcd.log")
        fleet = _watchers(server, work, watchers, procs)
        try:
            fleet.wait_connected()
            lat, full = [], []
            for i in range(writes):
                sent = time.time()
                rev = server.put(b"/kds/secrets/default/bench", _value(i, "prop"))
                acked = time.time()
                fleet.wait_revision(rev, 60)
                last = max(fleet.first_at(m, rev) for m in range(watchers))
                lat.append((last - acked) * 1000)
                full.append((last - sent) * 1000)
                time.sleep(pace)
            return {
                "zones": watchers,
                **_summary(lat, full),
                "etcd_rss_mb": _mb(rss_mb(server.pid())),
            }
        finally:
            fleet.stop()
            server.stop()


def bulk_kds(zones: int, n: int, procs: int, keep: bool) -> dict:
    with _workdir(f"bulk-kds-{zones}", keep) as work:
        g = KdsGlobal(work)
        fleet = _zones(g, work, zones, procs)
        try:
            fleet.wait_connected()
            head0 = g.head()
            fleet.wait_revision(head0)
            path = work / "bulk.yaml"
            path.write_text(
                "".join(
                    f"---\ntype: Secret\nmesh: default\nname: {it['name']}\ndata: {it['data']}\n"
                    for it in _secret_items(n, "bulk")
                )
            )
            t0 = time.time()
            subprocess.run(
                [str(BIN / "kdsctl"), "--api-url", g.api, "apply", "-f", str(path)],
                env={**os.environ, "KDSCTL_TOKEN": g.admin_token},
                check=True,
                capture_output=True,
            )
            acked = time.time()
            target = head0 + n
            fleet.wait_revision(target, 1200)
            done = max(fleet.first_at(m, target) for m in range(zones))
            assert g.head() == target, (g.head(), target)
            return {
                "zones": zones,
                "secrets": n,
                "apply_s": round(acked - t0, 3),
                "all_zones_s": round(done - t0, 3),
                "per_s": round(n / (done - t0)),
                "global_peak_rss_mb": _mb(peak_rss_mb(g.proc.pid)),
            }
        finally:
            fleet.stop()
            g.stop()


def bulk_etcd(watchers: int, n: int, procs: int, keep: bool) -> dict:
    with _workdir(f"bulk-etcd-{watchers}", keep) as work:
        server = EtcdServer(work / "etcd", work / "etcd.log")
        fleet = _watchers(server, work, watchers, procs)
        try:
            fleet.wait_connected()
            items = [(f"/kds/secrets/default/s{i}".encode(), _value(i, "bulk")) for i in range(n)]
            t0 = time.time()
            server.put_all(items)
            acked = time.time()
            fleet.wait_count(n, 1200)
            done = max(fleet.last_time(m) for m in range(watchers))
            return {
                "zones": watchers,
                "secrets": n,
                "apply_s": round(acked - t0, 3),
                "all_zones_s": round(done - t0, 3),
                "per_s": round(n / (done - t0)),
                "etcd_rss_mb": _mb(rss_mb(server.pid())),
            }
        finally:
            fleet.stop()
            server.stop()


def resume_and_footprint(
    total: int, idle_zones: int, extra_zones: int, storm_zones: int, procs: int, keep: bool
) -> tuple[dict, dict]:
    """Scenario 3, then scenario 4 on the same global (it already holds the secrets)."""
    with _workdir("resume", keep) as work:
        g = KdsGlobal(work)
        pid = g.proc.pid
        fleet: Fleet | None = None
        proxy = CountingProxy(g.kds_port)
        try:
            foot: dict[str, Any] = {"secrets": total, "global_rss_mb_empty": _mb(rss_mb(pid))}
            t0 = time.time()
            g.apply_items(_secret_items(total, "v1"))
            prefill_s = time.time() - t0
            time.sleep(1)
            foot["global_rss_mb_no_zones"] = _mb(rss_mb(pid))
            # One zone takes the snapshot, through the counting proxy.
            via = f"grpc://127.0.0.1:{proxy.port}"
            fleet = _zones(g, work, 1, 1, address=via)
            t0 = time.time()
            fleet.wait_revision(g.head(), 1200)
            snapshot_s = fleet.first_at(0, g.head()) - t0
            snapshot_bytes = proxy.down_bytes
            fleet.stop()
            fleet = None
            foot["global_peak_rss_mb_after_snapshot"] = _mb(peak_rss_mb(pid))
            # 1% of the secrets change while the zone is away.
            changed = max(1, total // 100)
            step = total // changed
            before = g.head()
            items = _secret_items(total, "v2")[::step][:changed]
            g.apply_items(items)
            after = g.head()
            res_bytes = 0
            for c in g.changes(before, after):
                res_bytes += pb.Change.FromString(c).put.ByteSize()
            proxy.reset()
            fleet = _zones(g, work, 1, 1, address=via)
            t0 = time.time()
            fleet.wait_revision(after, 600)
            resume_s = fleet.first_at(0, after) - t0
            fleet.stop()
            fleet = None
            logged = [e for e in g.log_events("resumed zone from its revision")]
            resume = {
                "secrets": total,
                "changed": len(items),
                "changed_resource_bytes": res_bytes,
                "changed_data_bytes": VALUE_BYTES * len(items),
                "wire_bytes_to_zone": proxy.down_bytes,
                "wire_bytes_from_zone": proxy.up_bytes,
                "batch_bytes_logged": logged[-1]["bytes"] if logged else None,
                "ratio": round(proxy.down_bytes / res_bytes, 3),
                "resume_s": round(resume_s, 3),
                "snapshot_s": round(snapshot_s, 3),
                "snapshot_wire_bytes": snapshot_bytes,
                "prefill_apply_s": round(prefill_s, 3),
            }
            # Scenario 4: idle zones, each starting from a copy of the synced zone's store
            # (so they resume; 100 snapshots of 100,000 secrets would take a quarter hour).
            seed = work / "zones" / "z0" / "zone.db"
            fleet = _zones(
                g, work, idle_zones, procs, seed=seed, prefix="idle-", data=work / "idle"
            )
            fleet.wait_connected(300)
            time.sleep(5)
            rss_idle = rss_mb(pid)
            more = _zones(
                g, work, extra_zones, 1, seed=seed, prefix="idle-", data=work / "idle",
                first=idle_zones,
            )  # fmt: skip
            more.wait_connected(300)
            time.sleep(5)
            rss_more = rss_mb(pid)
            more.stop()
            fleet.stop()
            fleet = None
            # Snapshot storm: new zones (empty stores) all needing the whole store at once,
            # as after a global's store is replaced; global's RSS sampled throughout.
            with RssSampler(pid) as sampler:
                t0 = time.time()
                fleet = _zones(g, work, storm_zones, procs, prefix="new-", data=work / "storm")
                fleet.wait_revision(g.head(), 3600)
                storm_s = max(fleet.first_at(m, g.head()) for m in range(storm_zones)) - t0
            fleet.stop()
            fleet = None
            foot.update(
                {
                    "idle_zones": idle_zones,
                    "global_rss_mb_idle_zones": _mb(rss_idle),
                    "extra_zones": extra_zones,
                    "global_rss_mb_more_zones": _mb(rss_more),
                    "per_zone_kb": round((rss_more - rss_idle) * 1024 / extra_zones, 1),
                    "storm_zones": storm_zones,
                    "storm_s": round(storm_s, 1),
                    "global_rss_mb_storm_peak": _mb(sampler.peak),
                    "global_peak_rss_mb": _mb(peak_rss_mb(pid)),
                    "global_store_mb": round(dir_size_mb(g.dir), 1),
                    "zone_store_mb": round(dir_size_mb(work / "zones" / "z0"), 1),
                }
            )
            return resume, foot
        finally:
            if fleet is not None:
                fleet.stop()
            proxy.close()
            g.stop()


def _mb(x: float) -> float:
    return round(x, 1)


# ---------------------------------------------------------------------- driver


PLANS = {
    "full": {
        "prop_zones": [1, 10, 100],
        "writes": 200,
        "bulk_zones": [10, 100],
        "bulk_n": 10_000,
        "resume_total": 100_000,
        "idle_zones": 100,
        "extra_zones": 10,
        "storm_zones": 100,
        "repeats": 3,
    },
    "quick": {
        "prop_zones": [1, 3],
        "writes": 20,
        "bulk_zones": [2],
        "bulk_n": 300,
        "resume_total": 2_000,
        "idle_zones": 3,
        "extra_zones": 2,
        "storm_zones": 3,
        "repeats": 1,
    },
}


def _procs(zones: int, requested: int) -> int:
    return requested if requested else (1 if zones < 10 else 2)


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
            "note": "shared 2-core machine; other jobs ran at the same time",
        },
        "plan": plan,
        "propagation": [],
        "bulk": [],
    }
    only = set(args.only or ["propagation", "bulk", "resume"])
    for rep in range(plan["repeats"]):
        if "propagation" in only:
            for z in plan["prop_zones"]:
                p = _procs(z, args.procs)
                _log(f"repeat {rep + 1}: propagation, {z} zone(s)")
                k = propagation_kds(z, plan["writes"], args.pace, p, args.keep)
                e = propagation_etcd(z, plan["writes"], args.pace, p, args.keep)
                results["propagation"].append({"repeat": rep + 1, "kds": k, "etcd": e})
                _log(
                    f"  kds p50 {k['p50_ms']} p99 {k['p99_ms']}; etcd p50 {e['p50_ms']} p99 {e['p99_ms']}"
                )
        if "bulk" in only:
            for z in plan["bulk_zones"]:
                p = _procs(z, args.procs)
                _log(f"repeat {rep + 1}: bulk {plan['bulk_n']}, {z} zone(s)")
                k = bulk_kds(z, plan["bulk_n"], p, args.keep)
                e = bulk_etcd(z, plan["bulk_n"], p, args.keep)
                results["bulk"].append({"repeat": rep + 1, "kds": k, "etcd": e})
                _log(
                    f"  kds {k['all_zones_s']} s (apply {k['apply_s']} s); etcd {e['all_zones_s']} s"
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
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where results go")
    ap.add_argument("--repeats", type=int, help="override the plan's repeats")
    ap.add_argument("--pace", type=float, default=0.01, help="pause between single writes (s)")
    ap.add_argument("--procs", type=int, default=0, help="fleet processes (0: by zone count)")
    ap.add_argument(
        "--only", nargs="+", choices=["propagation", "bulk", "resume"], help="run only these"
    )
    ap.add_argument("--keep", action="store_true", help="keep work dirs (logs, stores)")
    ap.add_argument("--prop-zones", type=int, nargs="+", help="override propagation zone counts")
    ap.add_argument("--bulk-zones", type=int, nargs="+", help="override bulk zone counts")
    ap.add_argument("--writes", type=int, help="override single writes per run")
    args = ap.parse_args(argv)
    plan = dict(PLANS["quick" if args.quick else "full"])
    for key in ("repeats", "prop_zones", "bulk_zones", "writes"):
        if getattr(args, key):
            plan[key] = getattr(args, key)
    if etcd_binary() is None:
        print(
            "etcd not found: run scripts/setup-bench (installs Debian's etcd-server)",
            file=sys.stderr,
        )
        return 2
    results = run(plan, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write(results, args.out)
    _log(f"wrote {args.out / 'benchmarks.json'}, benchmarks.md, benchmarks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
