"""A real global (servicer, hub, tracker, SQLite store) and real zones (ZoneClient, SQLite
store) in one event loop, over a plaintext loopback gRPC port: the protocol end to end
without processes, for tests that need to reach inside a store (cap its size, damage a row)
while the sync runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from globalcp.hub import Hub
from globalcp.servicer import SyncServicer
from globalcp.zones import ZoneTracker
from kds._pb import sync_pb2 as pb
from kds.store import WriteResult
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore, SqliteZoneStore, ZoneEngine
from zonecp.client import ZoneClient

__all__ = [
    "CallAborted",
    "FakeCall",
    "Pair",
    "ZoneRun",
    "resume_hello",
    "running_pair",
    "wait_until",
]


async def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``pred`` (sync) until it is truthy; its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


@dataclass
class ZoneRun:
    client: ZoneClient
    store: SqliteZoneStore
    engine: ZoneEngine
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class Pair:
    tmp: Path
    port: int
    engine: GlobalEngine
    store: SqliteGlobalStore
    hub: Hub
    tracker: ZoneTracker
    servicer: SyncServicer
    zones: dict[str, ZoneRun] = field(default_factory=dict)

    def start_zone(self, name: str, **client_args: Any) -> ZoneRun:
        engine = ZoneEngine(self.tmp / f"{name}.db")
        store = SqliteZoneStore(engine)
        client = ZoneClient(
            store,
            zone=name,
            global_address=f"grpc://127.0.0.1:{self.port}",
            software_version="test",
            max_message_bytes=4 << 20,
            keepalive_interval=5,
            keepalive_timeout=5,
            reconnect_max_delay=client_args.pop("reconnect_max_delay", 0.5),
            insecure=True,
            **client_args,
        )
        stop = asyncio.Event()
        run = ZoneRun(client, store, engine, stop, asyncio.create_task(client.run(stop)))
        self.zones[name] = run
        return run

    async def stop_zone(self, name: str) -> None:
        run = self.zones.pop(name)
        run.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.task, 10)
        run.store.close()


@contextlib.asynccontextmanager
async def running_pair(tmp: Path, **servicer_args: Any) -> AsyncIterator[Pair]:
    loop = asyncio.get_running_loop()
    hub_box: list[Hub] = []

    def on_commit(results: Sequence[WriteResult]) -> None:
        records = [r.record for r in results if r.record is not None]
        if hub_box and records:
            loop.call_soon_threadsafe(hub_box[0].publish_many, records)

    engine = GlobalEngine(tmp / "global.db", on_commit=on_commit)
    store = SqliteGlobalStore(engine)
    hub = Hub(await store.head(), await store.log_floor(), 1000)
    hub_box.append(hub)
    tracker = ZoneTracker(store, hub, flush_interval=0.05)
    servicer = SyncServicer(
        store,
        hub,
        tracker,
        tokens=None,
        instance_id="global-test",
        software_version="test",
        max_unacked=servicer_args.pop("max_unacked", 4),
        max_message_bytes=4 << 20,
        heartbeat_interval=servicer_args.pop("heartbeat_interval", 1.0),
        **servicer_args,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([servicer.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    flusher = asyncio.create_task(tracker.run_flusher())
    pair = Pair(tmp, port, engine, store, hub, tracker, servicer)
    try:
        yield pair
    finally:
        for name in list(pair.zones):
            await pair.stop_zone(name)
        servicer.stop()
        await server.stop(grace=1)
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        store.close()


class CallAborted(Exception):
    """What grpc's abort raises, ending the handler."""


class FakeCall:
    """Just what the servicer asks of a grpc call: a hello to read, headers, writes, an
    abort."""

    def __init__(self, token: str, hello: bytes):
        self._token = token
        self._messages: asyncio.Queue[Any] = asyncio.Queue()
        self._messages.put_nowait(hello)
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.headers: tuple[tuple[str, str], ...] | None = None  # the headers sent, if any

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.headers = tuple(metadata)

    def invocation_metadata(self) -> Any:
        return (("authorization", f"Bearer {self._token}"),)

    async def read(self) -> Any:
        return await self._messages.get()

    async def write(self, data: bytes) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise CallAborted(details)


def resume_hello(zone: str, store_id: str) -> bytes:
    """A hello of ``zone`` (instance ``ZONE-1``) resuming from revision 0 of ``store_id``,
    encoded as a FakeCall hands it to the servicer."""
    return pb.ZoneMessage(
        hello=pb.Hello(
            zone=zone,
            instance_id=f"{zone}-1",
            software_version="t",
            protocol_version=1,
            resume=pb.ResumePoint(global_store_id=store_id, revision=0),
        )
    ).SerializeToString()
