"""Global's resident memory across many zone reconnects (grpcio has leaked native memory per
RPC whose batch failed or whose awaiter was cancelled, which every reconnect does).

Starts a real globalcp, then opens and abandons sync streams in a loop, the way zones that
restart or lose their link do: hello, welcome, snapshot, ack, then the zone side cancels
mid-stream. Samples global's RSS from /proc every ``--every`` streams and prints the curve,
the growth after warm-up, and the growth per 1,000 streams.

    .venv/bin/python bench/reconnect_memory.py --streams 2000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx

from kds._pb import sync_pb2 as pb

BIN = Path(sys.executable).parent
METHOD = "/kds.v1.SecretSync/Sync"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _one_stream(channel: grpc.aio.Channel, i: int) -> None:
    call = channel.stream_stream(
        METHOD,
        request_serializer=pb.ZoneMessage.SerializeToString,
        response_deserializer=pb.GlobalMessage.FromString,
    )()
    await call.write(
        pb.ZoneMessage(
            hello=pb.Hello(zone=f"bench-{i % 50}", instance_id=f"i-{i}", protocol_version=1)
        )
    )
    welcome = await call.read()
    assert isinstance(welcome, pb.GlobalMessage) and welcome.WhichOneof("msg") == "welcome", welcome
    batch = await call.read()
    assert isinstance(batch, pb.GlobalMessage), batch
    await call.write(
        pb.ZoneMessage(ack=pb.Ack(seq=batch.batch.seq, applied_revision=batch.batch.revision))
    )
    call.cancel()  # the zone goes away mid-stream


async def _run(streams: int, every: int, kds: int, pid: int) -> list[tuple[int, int]]:
    samples = [(0, _rss_kib(pid))]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{kds}") as channel:
        for i in range(1, streams + 1):
            await _one_stream(channel, i)
            if i % every == 0:
                await asyncio.sleep(0.2)  # let global finish tearing the streams down
                samples.append((i, _rss_kib(pid)))
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--secrets", type=int, default=100, help="resources in each snapshot")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kds-reconnect-"))
    kds, api = _port(), _port()
    proc = subprocess.Popen(
        [str(BIN / "globalcp"), "run", "--data-dir", str(work / "g"), "--api-address",
         f"127.0.0.1:{api}", "--kds-address", f"127.0.0.1:{kds}", "--log-level", "warning",
         # Plaintext, no tokens: this measures stream teardown, which TLS does not change.
         "--kds-insecure"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{api}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        token = (work / "g" / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{api}", headers=auth) as http:
            for i in range(args.secrets):
                http.put(
                    f"/meshes/default/secrets/s{i}",
                    json={"type": "Secret", "mesh": "default", "name": f"s{i}", "data": "eHl6"},
                ).raise_for_status()
        t0 = time.monotonic()
        samples = asyncio.run(_run(args.streams, args.every, kds, proc.pid))
        elapsed = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print("| streams | global RSS MiB |")
    print("|---|---|")
    for n, kib in samples:
        print(f"| {n} | {kib / 1024:.1f} |")
    warm = samples[1] if len(samples) > 2 else samples[0]
    last = samples[-1]
    per_k = (last[1] - warm[1]) / 1024 / max(1, (last[0] - warm[0])) * 1000
    print(
        f"\n{args.streams} streams in {elapsed:.1f}s; growth after the first {warm[0]}: "
        f"{(last[1] - warm[1]) / 1024:.1f} MiB ({per_k:.2f} MiB per 1,000 streams)"
    )


if __name__ == "__main__":
    main()
