"""etcd as the yardstick: the server (Debian's etcd-server, on loopback, a temp data dir), a
writer (KV Put / Txn) and watchers, all speaking etcd's gRPC API through grpc / grpc.aio
with protobuf messages, the same client machinery the zones use.

The watchers run as a fleet process like bench.fleet: ``python -m bench.etcd --first 0
--count 50 --endpoint 127.0.0.1:2379 --prefix /kds/``. Each watcher has its own channel and
Watch stream on the prefix, decodes every event and keeps key -> value in a dict (the
watcher's "store"; nothing is written to disk, where a zone commits to SQLite), and reports
each response as a JSON line (member, revision, events, time).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.common import free_port, report_line, stdin_closed, wait_port

_PROTO_DIR = Path(__file__).resolve().parent / "etcdproto"
_PB: Any = None

PUT = "/etcdserverpb.KV/Put"
TXN = "/etcdserverpb.KV/Txn"
WATCH = "/etcdserverpb.Watch/Watch"
MAX_MSG = 64 << 20


def pb() -> Any:
    """etcd's messages, compiled from bench/etcdproto at run time (grpcio-tools)."""
    global _PB
    if _PB is None:
        if str(_PROTO_DIR) not in sys.path:
            sys.path.insert(0, str(_PROTO_DIR))
        _PB = grpc.protos("etcd_min.proto")
    return _PB


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdServer:
    """One etcd member on loopback ports with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, log_path: Path):
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd not found: install Debian's etcd-server (scripts/setup-bench)")
        self.client_port, peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{peer}"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--name=bench",
                    f"--data-dir={data_dir}",
                    f"--listen-client-urls=http://{self.endpoint}",
                    f"--advertise-client-urls=http://{self.endpoint}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=bench={peer_url}",
                    "--max-txn-ops=200000",  # one transaction per bulk apply, as kdsctl's
                    f"--max-request-bytes={32 << 20}",
                    f"--quota-backend-bytes={8 << 30}",
                    "--log-level=warn",
                    "--logger=zap",
                ],
                stdout=log,
                stderr=log,
            )
        wait_port(self.client_port)
        self.channel = grpc.insecure_channel(
            self.endpoint,
            options=[
                ("grpc.max_send_message_length", MAX_MSG),
                ("grpc.max_receive_message_length", MAX_MSG),
            ],
        )
        self._put = self.channel.unary_unary(
            PUT,
            request_serializer=pb().PutRequest.SerializeToString,
            response_deserializer=pb().PutResponse.FromString,
        )
        self._txn = self.channel.unary_unary(
            TXN,
            request_serializer=pb().TxnRequest.SerializeToString,
            response_deserializer=pb().TxnResponse.FromString,
        )
        deadline = time.monotonic() + 20
        while True:  # ready once a write goes through
            try:
                self.put(b"/ready", b"1")
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def put(self, key: bytes, value: bytes) -> int:
        """One write; returns its revision once etcd acknowledged it (committed, fsynced)."""
        return int(self._put(pb().PutRequest(key=key, value=value), timeout=30).header.revision)

    def put_all(self, items: list[tuple[bytes, bytes]]) -> int:
        """Every item in one transaction (one revision), as one kdsctl apply is."""
        ops = [pb().RequestOp(request_put=pb().PutRequest(key=k, value=v)) for k, v in items]
        return int(self._txn(pb().TxnRequest(success=ops), timeout=300).header.revision)

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------------- watcher fleet


async def _watcher(member: int, endpoint: str, prefix: bytes, connected: asyncio.Event) -> None:
    m = pb()
    # Its own connection, as a zone has (and as a watcher on another host would): grpc
    # otherwise shares one TCP connection among a process's channels to the same address, so
    # fifty watchers would cost etcd and this process one connection's work per write.
    opts = [("grpc.max_receive_message_length", MAX_MSG), ("grpc.use_local_subchannel_pool", 1)]
    cache: dict[bytes, bytes] = {}
    async with grpc.aio.insecure_channel(endpoint, options=opts) as channel:
        call = channel.stream_stream(
            WATCH,
            request_serializer=m.WatchRequest.SerializeToString,
            response_deserializer=m.WatchResponse.FromString,
        )()
        create = m.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix))
        await call.write(m.WatchRequest(create_request=create))
        async for resp in call:
            if resp.created:
                report_line(connected=1)
                continue
            if resp.canceled:
                report_line(error=f"watch canceled: {resp.cancel_reason}")
                return
            rev = 0
            for ev in resp.events:
                if ev.type == m.Event.DELETE:
                    cache.pop(ev.kv.key, None)
                else:
                    cache[ev.kv.key] = ev.kv.value
                rev = max(rev, ev.kv.mod_revision)
            if resp.events:
                report_line(m=member, rev=rev, n=len(resp.events), t=time.time())


async def main_async(args: argparse.Namespace) -> None:
    connected = asyncio.Event()
    prefix = args.prefix.encode()
    tasks = [
        asyncio.create_task(_watcher(i, args.endpoint, prefix, connected))
        for i in range(args.first, args.first + args.count)
    ]
    waiter = asyncio.ensure_future(stdin_closed())
    done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    for t in done:
        if t is not waiter and t.exception() is not None:
            report_line(error=repr(t.exception()))
    for t in tasks:
        t.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--first", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--prefix", default="/kds/")
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
