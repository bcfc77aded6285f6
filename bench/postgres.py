"""PostgreSQL against SQLite, and failover times with several instances (figures, never
asserted).

    .venv/bin/python -m bench.postgres [--repeats 5] [--writes 200] [--out docs]

Writes docs/benchmarks-postgres.{json,md}. Every process is real (globalcp, zonecp as the
daemons, JSON logs); PostgreSQL is a throwaway server on loopback (tests/pgserver.py, fsync
on). Measured:

  throughput    sequential API writes (one client, each acknowledged before the next) on one
                global on SQLite, one on PostgreSQL, and two PostgreSQL instances written to
                at once (one client each): writes per second.
  propagation   one write at a time, from its acknowledgement to the zone's "applied batch"
                log line for that revision (the zone's own clock, same host): on SQLite; on
                PostgreSQL with the write made on the instance the zone is connected to; and on
                the other instance (the wake-up crosses instances by LISTEN/NOTIFY).
  failover      global: the instance holding the zone's stream SIGKILLed, a write made on the
                other at once; time from the kill to the zone applying it. Zone leader: the
                leading zonecp SIGKILLed, a write made on global at once; time from the kill to
                the standby applying it. A killed process's connections are reset at once by
                its host; a lost host is noticed after the keepalive (3 s + 2 s by default).
Medians over the repeats.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import BIN, ROOT, free_port, wait_http

sys.path.insert(0, str(ROOT))
from tests.pgserver import PgServer, find_bindir  # the tests' throwaway server


class Proc:
    def __init__(self, work: Path, name: str, argv: list[str], api: int):
        self.name, self.work, self.api = name, work, f"http://127.0.0.1:{api}"
        self.log = work / f"{name}.log"
        self.data = work / name
        self.argv = argv
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(self.argv, stdout=f, stderr=f)
        wait_http(self.api + "/")
        token = (self.data / "admin-token").read_text().strip()
        self.http = httpx.Client(
            base_url=self.api, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )

    def events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def put(self, name: str) -> int:
        body = {"type": "Secret", "mesh": "default", "name": name,
                "data": base64.b64encode(os.urandom(32)).decode()}  # fmt: skip
        r = self.http.put(f"/meshes/default/secrets/{name}", json=body)
        r.raise_for_status()
        return int(r.headers.get("X-Kds-Revision", 0))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.http.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.http.close()


def _global(work: Path, name: str, store: list[str]) -> Proc:
    api = free_port()
    argv = [str(BIN / "globalcp"), "run", "--data-dir", str(work / name), "--api-address",
            f"127.0.0.1:{api}", "--kds-address", f"127.0.0.1:{free_port()}", "--log-format",
            "json", *store]  # fmt: skip
    p = Proc(work, name, argv, api)
    p.kds = next(int(e["kds"].rsplit(":", 1)[1]) for e in p.events("global started"))  # type: ignore[attr-defined]
    return p


def _zone(work: Path, name: str, zone: str, globals_: list[Proc], token: Path,
          store: list[str]) -> Proc:  # fmt: skip
    api = free_port()
    addresses = ",".join(f"grpcs://127.0.0.1:{g.kds}" for g in globals_)  # type: ignore[attr-defined]
    argv = [str(BIN / "zonecp"), "run", "--zone", zone, "--global-address", addresses,
            "--ca-file", str(globals_[0].data / "ca.crt"), "--token-file", str(token),
            "--data-dir", str(work / name), "--api-address", f"127.0.0.1:{api}",
            "--log-format", "json", "--log-level", "debug", "--reconnect-max-delay", "1s",
            *store]  # fmt: skip
    return Proc(work, name, argv, api)


def _token(g: Proc, zone: str) -> Path:
    r = g.http.post("/zone-tokens", json={"zone": zone})
    r.raise_for_status()
    path = g.work / f"{zone}.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(r.json()["token"])
    return path


def _applied_at(z: Proc, revision: int, timeout: float = 30) -> float:
    """When the zone logged applying ``revision`` (its wall clock, seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in reversed(z.events("applied batch")):
            if e.get("revision", 0) >= revision:
                return _ts(e["timestamp"])
        time.sleep(0.005)
    raise TimeoutError(f"{z.name} did not apply revision {revision}")


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _head(g: Proc) -> int:
    return int(g.http.get("/readyz").json().get("revision", 0))


def _write_timed(g: Proc, z: Proc, name: str) -> float:
    """ms from the write's acknowledgement to the zone applying it."""
    g.put(name)
    acked = time.time()
    return (_applied_at(z, _head(g)) - acked) * 1000


def _throughput(gs: list[Proc], n: int) -> float:
    import threading

    start = time.monotonic()
    per = n // len(gs)
    threads = [
        threading.Thread(target=lambda g=g, i=i: [g.put(f"t{i}-{k}") for k in range(per)])
        for i, g in enumerate(gs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per * len(gs) / (time.monotonic() - start)


def run(work: Path, repeats: int, writes: int) -> dict[str, Any]:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL's server binaries are missing: run scripts/setup-postgres")
    server = PgServer(bindir, fsync=True)
    server.start()
    out: dict[str, Any] = {}
    procs: list[Proc] = []
    try:
        # SQLite: one global, one zone.
        g = _global(work, "sqlite-g", [])
        z = _zone(work, "sqlite-z", "zs", [g], _token(g, "zs"), [])
        procs += [g, z]
        out["throughput_sqlite"] = _throughput([g], writes)
        out["propagation_sqlite_ms"] = [_write_timed(g, z, f"p{i}") for i in range(repeats * 4)]
        for p in (z, g):
            p.stop()
        # PostgreSQL: two globals, a zone of two instances.
        pg = ["--store", "postgres", "--postgres-url", server.url,
              "--postgres-schema", "b" + uuid.uuid4().hex[:8]]  # fmt: skip
        zpg = ["--store", "postgres", "--postgres-url", server.url,
               "--postgres-schema", "bz" + uuid.uuid4().hex[:8]]  # fmt: skip
        a, b = _global(work, "pg-a", pg), _global(work, "pg-b", pg)
        token = _token(a, "zp")
        z1 = _zone(work, "pg-z1", "zp", [a, b], token, zpg)
        z2 = _zone(work, "pg-z2", "zp", [a, b], token, zpg)
        procs += [a, b, z1, z2]
        out["throughput_pg_one"] = _throughput([a], writes)
        out["throughput_pg_two"] = _throughput([a, b], writes)

        def leader() -> tuple[Proc, Proc]:
            while True:
                for x, y in ((z1, z2), (z2, z1)):
                    if x.http.get("/status").json()["leader"]["thisInstance"]:
                        return x, y
                time.sleep(0.05)

        def holder(zl: Proc) -> tuple[Proc, Proc]:
            while True:
                st = zl.http.get("/status").json()
                inst = st["global"]["instanceId"] if st["connected"] else None
                for x, y in ((a, b), (b, a)):
                    if inst and x.events("global started")[-1]["instance"] == inst:
                        return x, y
                time.sleep(0.05)

        zl, _ = leader()
        on, other = holder(zl)
        out["propagation_pg_same_ms"] = [_write_timed(on, zl, f"q{i}") for i in range(repeats * 4)]
        out["propagation_pg_other_ms"] = [
            _write_timed(other, zl, f"r{i}") for i in range(repeats * 4)
        ]
        out["failover_global_s"] = []
        out["failover_zone_leader_s"] = []
        for i in range(repeats):
            zl, _ = leader()
            on, other = holder(zl)
            killed = time.time()
            on.kill()
            other.put(f"fg{i}")
            out["failover_global_s"].append(_applied_at(zl, _head(other)) - killed)
            on.start()
            zl, standby = leader()
            on, other = holder(zl)
            killed = time.time()
            zl.kill()
            on.put(f"fz{i}")
            out["failover_zone_leader_s"].append(_applied_at(standby, _head(on)) - killed)
            zl.start()
    finally:
        for p in procs:
            try:
                p.stop()
            except Exception:  # stopping what is left; the figures are kept
                p.proc.kill()
        server.remove()
    return out


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def write(out: dict[str, Any], where: Path, repeats: int, writes: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": os.getloadavg()[0], "cpus": os.cpu_count(), "repeats": repeats,
            "writes": writes}  # fmt: skip
    (where / "benchmarks-postgres.json").write_text(json.dumps({**meta, **out}, indent=1) + "\n")
    lines = [
        "# PostgreSQL against SQLite; failover with several instances",
        "",
        f"Run {meta['date']} by `python -m bench.postgres` on {meta['cpus']} CPUs (load "
        f"{meta['load']:.1f} at the end); medians. Method: bench/postgres.py's docstring.",
        "",
        "| measure | SQLite | PostgreSQL |",
        "|---|---|---|",
        f"| sequential API writes/s, one global ({writes} writes) | "
        f"{out['throughput_sqlite']:.0f} | {out['throughput_pg_one']:.0f} |",
        f"| API writes/s, two globals written at once | - | {out['throughput_pg_two']:.0f} |",
        f"| write acknowledged -> applied on the zone, ms ({len(out['propagation_sqlite_ms'])} "
        f"writes) | {_median(out['propagation_sqlite_ms']):.1f} | "
        f"{_median(out['propagation_pg_same_ms']):.1f} (zone on the writing instance), "
        f"{_median(out['propagation_pg_other_ms']):.1f} (on the other instance) |",
        f"| global instance SIGKILLed -> zone applied a write on the other, s "
        f"({len(out['failover_global_s'])} runs) | - | {_median(out['failover_global_s']):.2f} |",
        f"| zone leader SIGKILLed -> standby applied the next write, s "
        f"({len(out['failover_zone_leader_s'])} runs) | - | "
        f"{_median(out['failover_zone_leader_s']):.2f} |",
        "",
    ]
    (where / "benchmarks-postgres.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kds-bench-pg-") as tmp:
        out = run(Path(tmp), args.repeats, args.writes)
    write(out, args.out, args.repeats, args.writes)


if __name__ == "__main__":
    main()
