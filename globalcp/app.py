"""Composition root of globalcp: builds store, hub, sync servicer and API, runs until stopped."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import structlog
from aiohttp import web

from globalcp.hub import Hub
from globalcp.servicer import SyncServicer
from kds.api import ApiContext, serve_api
from kds.clock import rfc3339
from kds.config import GlobalConfig
from kds.errors import ConfigError
from kds.grpc_options import server_options
from kds.model import Key, Kind, Limits, Resource
from kds.runtime import ensure_private_dir
from kds.store import AsyncStore, SqliteStore
from kds.version import __version__

__all__ = ["run_global"]

log = structlog.get_logger("globalcp")


async def run_global(cfg: GlobalConfig, stop: asyncio.Event) -> int:
    data_dir = ensure_private_dir(cfg.data_dir)
    store = AsyncStore(
        SqliteStore(
            data_dir / "global.db",
            "global",
            log_size=cfg.log_size,
            max_message_bytes=cfg.max_message_bytes,
        )
    )
    sync_store = store.sync
    if (
        sync_store.head() == 0
        and await store.read(sync_store.get, Key(Kind.MESH, "", "default")) is None
    ):
        await store.write(sync_store.put, Resource(Kind.MESH, "default"), rfc3339())
        log.info("created the default mesh on a fresh store")
    hub = Hub(sync_store.head(), sync_store.log_floor(), cfg.log_size)
    loop = asyncio.get_running_loop()
    sync_store.on_commit = lambda records: loop.call_soon_threadsafe(hub.publish_many, records)
    instance_id = f"global-{uuid.uuid4().hex[:8]}"
    servicer = SyncServicer(
        store,
        hub,
        instance_id=instance_id,
        software_version=__version__,
        max_unacked=cfg.max_unacked,
        max_message_bytes=cfg.max_message_bytes,
        heartbeat_interval=cfg.heartbeat_interval,
    )
    server = grpc.aio.server(
        options=server_options(cfg.max_message_bytes, cfg.keepalive_interval, cfg.keepalive_timeout)
    )
    server.add_generic_rpc_handlers([servicer.handler()])
    host, port = cfg.kds_address
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(f"--kds-address {host}:{port}: cannot listen there (in use or invalid)")
    await server.start()
    runner: web.AppRunner | None = None
    try:
        runner = await _start_api(cfg, store)
        log.info(
            "global started",
            version=__version__,
            instance=instance_id,
            api=f"http://{cfg.api_address[0]}:{cfg.api_address[1]}",
            kds=f"grpc://{host}:{bound}",
            store=str(sync_store.path),
            store_id=sync_store.store_id,
            revision=hub.head,
        )
        await stop.wait()
    finally:
        servicer.stop()
        await server.stop(grace=2)
        if runner is not None:
            await runner.cleanup()
        store.close()
    log.info("global stopped", revision=hub.head)
    return 0


async def _start_api(cfg: GlobalConfig, store: AsyncStore) -> web.AppRunner:
    ctx = ApiContext(
        store=store,
        role="global",
        limits=Limits(max_data_bytes=cfg.max_data_bytes),
        max_message_bytes=cfg.max_message_bytes,
        now=rfc3339,
    )
    return await serve_api(ctx, cfg.api_address)
