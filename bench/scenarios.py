"""The benchmark scenarios, each one run of kds-sync or of etcd, returning its figures.

bench.harness runs them in repeats and writes the report; each function here starts what it
measures (a real globalcp, zone fleets, an etcd member), drives it and stops it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    CountingProxy,
    Fleet,
    RssSampler,
    cpu_s,
    dir_size_mb,
    peak_rss_mb,
    percentile,
    rss_mb,
    start_fleet,
)
from bench.etcd import EtcdServer
from bench.kds_global import VALUE_BYTES, KdsGlobal, secret_items, secret_value
from kds import grpc_env
from kds._pb import sync_pb2 as pb


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
        *g.zone_args([f"{prefix}{m}" for m in range(first, first + n)]),
    ]
    if seed:
        args += ["--seed-db", str(seed)]
    return start_fleet("bench.fleet", n, procs, args, work, f"fleet-{prefix}{first}", first)


def _watchers(server: EtcdServer, work: Path, n: int, procs: int) -> Fleet:
    args = ["--endpoint", server.endpoint, "--prefix", "/kds/"]
    # grpc at its defaults, as an etcd client program has it: kds's own setting of grpc's
    # environment (kds.grpc_env) is the product's, not etcd's.
    return start_fleet("bench.etcd", n, procs, args, work, "watchers", environ=grpc_env.as_given())


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
    """Latency from the write's answer (negative: a member had it first), from sending the
    write (its commit too), and of the write itself (sending to answer: what a writer waits)."""
    answer_ms = [s - a for a, s in zip(lat_ms, from_send_ms, strict=True)]
    return {
        "writes": len(lat_ms),
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2),
        "before_ack": sum(1 for x in lat_ms if x < 0),
        "from_send_p50_ms": round(percentile(from_send_ms, 50), 2),
        "from_send_p99_ms": round(percentile(from_send_ms, 99), 2),
        "answer_p50_ms": round(percentile(answer_ms, 50), 2),
        "answer_p99_ms": round(percentile(answer_ms, 99), 2),
    }


class _CpuPerWrite:
    """CPU time (user + system) the server (global, or etcd) and the members (zones, or
    watchers: every fleet process) spend per write, over a run of single writes. Idle costs
    are in it too, and are small: with 10 zones connected and nothing written, global used
    0.02 s and the fleets 0.09 s of CPU in 5 s."""

    def __init__(self, server_pid: int, fleet: Fleet):
        self.server_pid, self.fleet = server_pid, fleet
        self.server0, self.members0 = cpu_s(server_pid), self._members()
        self.harness0 = time.process_time()

    def _members(self) -> float:
        return sum(cpu_s(p.pid) for p in self.fleet.procs)

    def per_write(self, writes: int, members: int) -> dict[str, float]:
        server = (cpu_s(self.server_pid) - self.server0) / writes
        each = (self._members() - self.members0) / writes / members
        harness = (time.process_time() - self.harness0) / writes
        return {
            "server_cpu_ms_per_write": round(server * 1000, 3),
            "member_cpu_ms_per_write": round(each * 1000, 3),
            # The harness's own process (its writes, and reading every member's reports):
            # not part of either side's figures, but it shares the machine with them.
            "harness_cpu_ms_per_write": round(harness * 1000, 3),
        }


# ---------------------------------------------------------------------- scenarios


def propagation_kds(
    zones: int, writes: int, pace: float, procs: int, keep: bool, tls: bool = True
) -> dict:
    with _workdir(f"prop-kds-{zones}", keep) as work:
        g = KdsGlobal(work, tls=tls)
        fleet = _zones(g, work, zones, procs)
        try:
            fleet.wait_connected()
            fleet.wait_revision(g.head())
            lat, full = [], []
            cpu = _CpuPerWrite(g.proc.pid, fleet)
            for i in range(writes):
                sent = time.time()
                g.put_secret("bench", secret_value(i, "prop"))
                acked = time.time()
                rev = g.head()
                fleet.wait_revision(rev, 60)
                last = max(fleet.first_at(m, rev) for m in range(zones))
                lat.append((last - acked) * 1000)
                full.append((last - sent) * 1000)
                time.sleep(pace)
            return {
                "zones": zones,
                "tls": tls,
                **_summary(lat, full),
                **cpu.per_write(writes, zones),
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
            cpu = _CpuPerWrite(server.pid(), fleet)
            for i in range(writes):
                sent = time.time()
                rev = server.put(b"/kds/secrets/default/bench", secret_value(i, "prop"))
                acked = time.time()
                fleet.wait_revision(rev, 60)
                last = max(fleet.first_at(m, rev) for m in range(watchers))
                lat.append((last - acked) * 1000)
                full.append((last - sent) * 1000)
                time.sleep(pace)
            return {
                "zones": watchers,
                **_summary(lat, full),
                **cpu.per_write(writes, watchers),
                "etcd_rss_mb": _mb(rss_mb(server.pid())),
            }
        finally:
            fleet.stop()
            server.stop()


def bulk_kds(zones: int, n: int, procs: int, keep: bool, tls: bool = True) -> dict:
    with _workdir(f"bulk-kds-{zones}", keep) as work:
        g = KdsGlobal(work, tls=tls)
        fleet = _zones(g, work, zones, procs)
        try:
            fleet.wait_connected()
            head0 = g.head()
            fleet.wait_revision(head0)
            path = work / "bulk.yaml"
            path.write_text(
                "".join(
                    f"---\ntype: Secret\nmesh: default\nname: {it['name']}\ndata: {it['data']}\n"
                    for it in secret_items(n, "bulk")
                )
            )
            errors = work / "kdsctl.err"
            t0, g_cpu0 = time.time(), cpu_s(g.proc.pid)
            with open(errors, "wb") as err:
                kdsctl = subprocess.Popen(
                    [str(BIN / "kdsctl"), "--api-url", g.api, "apply", "-f", str(path)],
                    env={**os.environ, "KDSCTL_TOKEN": g.admin_token},
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
                # wait4 gives the child's own CPU time (user + system).
                _, status, usage = os.wait4(kdsctl.pid, 0)
                kdsctl.returncode = os.waitstatus_to_exitcode(status)
            acked = time.time()
            assert kdsctl.returncode == 0, errors.read_text()[-2000:]
            target = head0 + n
            fleet.wait_revision(target, 1200)
            done = max(fleet.first_at(m, target) for m in range(zones))
            global_cpu = cpu_s(g.proc.pid) - g_cpu0
            assert g.head() == target, (g.head(), target)
            return {
                "zones": zones,
                "tls": tls,
                "secrets": n,
                "apply_s": round(acked - t0, 3),
                "all_zones_s": round(done - t0, 3),
                "per_s": round(n / (done - t0)),
                "kdsctl_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "global_cpu_s": round(global_cpu, 2),
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
            items = [
                (f"/kds/secrets/default/s{i}".encode(), secret_value(i, "bulk")) for i in range(n)
            ]
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
            g.apply_items(secret_items(total, "v1"))
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
            items = secret_items(total, "v2")[::step][:changed]
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
            # Each resumed zone is checked (anti-entropy) at connect: RSS is taken 5 s after
            # they connected, while those checks run, and again once every check is done.
            with RssSampler(pid) as connecting:
                fleet = _zones(
                    g, work, idle_zones, procs, seed=seed, prefix="idle-", data=work / "idle"
                )
                fleet.wait_connected(300)
                time.sleep(5)
                rss_checking = rss_mb(pid)
                _wait_checks(g, idle_zones, 900)
            time.sleep(2)
            rss_idle = rss_mb(pid)
            more = _zones(
                g, work, extra_zones, 1, seed=seed, prefix="idle-", data=work / "idle",
                first=idle_zones,
            )  # fmt: skip
            more.wait_connected(300)
            _wait_checks(g, idle_zones + extra_zones, 600)
            time.sleep(2)
            rss_more = rss_mb(pid)
            more.stop()
            fleet.stop()
            fleet = None
            # Snapshot storm: new zones (empty stores) all needing the whole store at once,
            # as after a global's store is replaced; global's RSS sampled throughout.
            g.zone_args([f"new-{m}" for m in range(storm_zones)])  # tokens issued before timing
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
                    "global_rss_mb_idle_checking": _mb(rss_checking),
                    "global_rss_mb_idle_connect_peak": _mb(connecting.peak),
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


_CHECK_DONE = (
    "anti-entropy: the zone's synced copies are equal to global's",
    "anti-entropy: repairing the zone's synced copies",
    "anti-entropy check",
)


def _wait_checks(g: KdsGlobal, zones: int, timeout: float, prefix: str = "idle-") -> None:
    """Until global logged a check's outcome for ``zones`` zones named ``prefix``..."""
    deadline = time.time() + timeout

    def checked() -> int:
        events = (e for name in _CHECK_DONE for e in g.log_events(name))
        return len({e.get("zone") for e in events if str(e.get("zone", "")).startswith(prefix)})

    while checked() < zones:
        if time.time() > deadline:
            raise RuntimeError(f"fewer than {zones} anti-entropy checks done in {timeout} s")
        time.sleep(1)


def _mb(x: float) -> float:
    return round(x, 1)
