"""Single-write propagation: from global's API acknowledgement to applied on every zone.

Starts a real globalcp and N real zonecp processes on loopback, writes one secret at a time
through the HTTP API (paced so writes are not coalesced), and reads, from each zone's JSON
debug log, when the batch carrying each revision was applied. All processes share this host's
clock. Prints p50 / p99 / max per zone count. A seed for the full harness (issue: benchmarks).

    .venv/bin/python bench/propagation.py --zones 1 10 --writes 200
"""

from __future__ import annotations

import argparse
import base64
import bisect
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0], the repository is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIN, free_port, wait_http


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _applied(log: Path) -> tuple[list[int], list[float]]:
    """(revisions, times) of every final batch the zone applied, in order."""
    revs, times = [], []
    for line in log.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("event") == "applied batch" and e.get("final"):
            revs.append(int(e["revision"]))
            times.append(_ts(e["timestamp"]))
    return revs, times


def run(zones: int, writes: int, pace: float, workdir: Path) -> list[float]:
    kds, api = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    common = ["--log-format", "json", "--log-level", "debug"]
    try:
        with open(workdir / "global.log", "wb") as f:
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "globalcp"),
                        "run",
                        "--data-dir",
                        str(workdir / "g"),
                        "--api-address",
                        f"127.0.0.1:{api}",
                        "--kds-address",
                        f"127.0.0.1:{kds}",
                        "--log-level",
                        "warning",
                    ],
                    stdout=f,
                    stderr=f,
                )
            )
        wait_http(f"http://127.0.0.1:{api}/")
        auth = {"Authorization": f"Bearer {(workdir / 'g' / 'admin-token').read_text().strip()}"}
        for i in range(zones):
            zport = free_port()
            token = httpx.post(
                f"http://127.0.0.1:{api}/zone-tokens", json={"zone": f"z{i}"}, headers=auth
            ).json()["token"]
            (workdir / f"z{i}.token").write_text(token)
            with open(workdir / f"z{i}.log", "wb") as f:
                procs.append(
                    subprocess.Popen(
                        [
                            str(BIN / "zonecp"),
                            "run",
                            "--zone",
                            f"z{i}",
                            "--global-address",
                            f"grpcs://127.0.0.1:{kds}",
                            "--ca-file",
                            str(workdir / "g" / "ca.crt"),
                            "--token-file",
                            str(workdir / f"z{i}.token"),
                            "--data-dir",
                            str(workdir / f"z{i}"),
                            "--api-address",
                            f"127.0.0.1:{zport}",
                            *common,
                        ],
                        stdout=f,
                        stderr=f,
                    )
                )
            wait_http(f"http://127.0.0.1:{zport}/")
        time.sleep(1.0)  # every zone connected and snapshotted
        acks: dict[int, float] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{api}", headers=auth) as http:
            base = 1  # the default mesh
            for i in range(writes):
                data = base64.b64encode(f"value-{i}".encode()).decode()
                r = http.put(
                    "/meshes/default/secrets/bench",
                    json={"type": "Secret", "mesh": "default", "name": "bench", "data": data},
                )
                acks[base + i + 1] = time.time()
                r.raise_for_status()
                time.sleep(pace)
        time.sleep(1.0)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    latencies = []
    per_zone = [_applied(workdir / f"z{i}.log") for i in range(zones)]
    for rev, acked in acks.items():
        worst = 0.0
        for revs, times in per_zone:
            k = bisect.bisect_left(revs, rev)
            if k == len(revs):
                raise SystemExit(f"revision {rev} never applied on a zone")
            worst = max(worst, times[k] - acked)
        latencies.append(worst * 1000)
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--zones", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--pace", type=float, default=0.02, help="seconds between writes")
    args = ap.parse_args()
    print("| zones | writes | p50 ms | p99 ms | max ms | arrived before the ack |")
    print("|---|---|---|---|---|---|")
    for n in args.zones:
        work = Path(tempfile.mkdtemp(prefix=f"kds-bench-{n}-"))
        try:
            lat = run(n, args.writes, args.pace, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        early = sum(1 for x in lat if x < 0)
        print(
            f"| {n} | {len(lat)} | {statistics.median(lat):.1f} | {p99:.1f} | {lat[-1]:.1f} | {early} |"
        )


if __name__ == "__main__":
    main()
