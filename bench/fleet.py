"""Many zones in one process, each the real thing: a zonecp.client.ZoneClient (its own gRPC
channel and stream to global) over its own SQLite zone store in its own data dir, wired as
zonecp.app wires a zone (minus the HTTP API, which sync does not use), with the collector
tuned as both daemons tune it (kds.runtime.tune_gc, settle_heap).

The only addition is ``TimedEngine``: the real zone engine, which also reports when each final
batch committed (revision, time) as a JSON line on stdout for the harness (bench.common.Fleet),
from the thread that applied it (the writer thread, or the event loop's for a small batch)
right after the commit.
Stops when stdin closes.

    python -m bench.fleet --first 0 --count 50 --global-address grpc://127.0.0.1:5685 \
        --data-dir /tmp/zones (--ca-file G/ca.crt --token-dir TOKENS | --insecure) \
        [--seed-db zone.db]

With --ca-file and --token-dir each zone dials over TLS, verifying global against that CA, and
presents the zone token in TOKENS/<zone>.token, as production zones do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import time
from pathlib import Path

import structlog

from bench.common import report_line, stdin_closed
from kds.logging import configure_logging
from kds.protocol.applier import DecodedBatch
from kds.runtime import ensure_private_dir, settle_heap, tune_gc
from kds.store import ZoneApplyResult, ZoneStore
from kds.store.sqlite import SqliteZoneStore, ZoneEngine
from kds.version import __version__
from zonecp.client import ZoneClient


class TimedEngine(ZoneEngine):
    """The real zone engine; reports each committed final batch."""

    def __init__(self, path: Path, member: int):
        super().__init__(path)
        self.member = member

    def apply_batch(self, batch: DecodedBatch, global_store_id: str, now: str) -> ZoneApplyResult:
        return self._report(batch, super().apply_batch(batch, global_store_id, now))

    def apply_batch_now(
        self, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        return self._report(batch, super().apply_batch_now(batch, global_store_id, now))

    def _report(self, batch: DecodedBatch, result: ZoneApplyResult) -> ZoneApplyResult:
        t = time.time()
        report_line(m=self.member, rev=result.applied_revision, n=len(batch.changes), t=t)
        return result


async def _zone(client: ZoneClient, stop: asyncio.Event) -> None:
    structlog.contextvars.bind_contextvars(zone=client.zone)
    await client.run(stop)


async def _watch_connected(clients: list[ZoneClient], stop: asyncio.Event) -> None:
    # Ends once every zone has connected: polling on would wake the process 20 times a
    # second for the whole run (4-5 ms of CPU a second for one idle zone in its own
    # process, against 1 ms without), which the harness would count as the zone's.
    seen: set[int] = set()
    while not stop.is_set() and len(seen) < len(clients):
        new = {i for i, c in enumerate(clients) if c.status.connected} - seen
        if new:
            seen |= new
            report_line(connected=len(new))
        await asyncio.sleep(0.05)


async def main_async(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    ca_pem = Path(args.ca_file).read_bytes() if args.ca_file else None
    token_dir = Path(args.token_dir) if args.token_dir else None
    stores: list[ZoneStore] = []
    clients: list[ZoneClient] = []
    for m in range(args.first, args.first + args.count):
        data_dir = ensure_private_dir(Path(args.data_dir) / f"z{m}")
        if args.seed_db and not (data_dir / "zone.db").exists():
            shutil.copyfile(args.seed_db, data_dir / "zone.db")
        store = SqliteZoneStore(TimedEngine(data_dir / "zone.db", m))
        zone = f"{args.zone_prefix}{m}"
        stores.append(store)
        clients.append(
            ZoneClient(
                store,
                zone=zone,
                global_address=args.global_address,
                software_version=__version__,
                max_message_bytes=4 << 20,
                keepalive_interval=3.0,
                keepalive_timeout=2.0,
                reconnect_max_delay=2.0,
                ca_pem=ca_pem,
                token_file=token_dir / f"{zone}.token" if token_dir else None,
                insecure=args.insecure,
            )
        )
    settle_heap()  # as zonecp's app does once loaded
    tasks = [asyncio.create_task(_zone(c, stop)) for c in clients]
    watcher = asyncio.create_task(_watch_connected(clients, stop))
    await stdin_closed()
    stop.set()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(t, 10)
    watcher.cancel()
    for s in stores:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--first", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--global-address", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--zone-prefix", default="zone-")
    ap.add_argument("--seed-db", default="", help="copy this zone.db into each new zone's dir")
    ap.add_argument("--ca-file", default="", help="global's CA (PEM): dial over TLS")
    ap.add_argument("--token-dir", default="", help="holds <zone>.token for each zone")
    ap.add_argument("--insecure", action="store_true", help="plaintext, no token")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    if args.insecure == bool(args.ca_file and args.token_dir):
        ap.error("give either --ca-file and --token-dir (TLS) or --insecure (plaintext)")
    configure_logging(args.log_level, "json")
    tune_gc()  # as zonecp's run_daemon does
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
