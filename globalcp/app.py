"""Composition root of globalcp: builds store, hub, sync servicer and API, runs until stopped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import grpc
import structlog
from aiohttp import web

from globalcp.hub import Hub
from globalcp.inventory import inventory_routes
from globalcp.metrics import GlobalMetrics
from globalcp.security import check_options, server_credentials
from globalcp.servicer import SyncServicer
from globalcp.status_api import zone_routes
from globalcp.token_api import token_routes
from globalcp.tokens import ZoneTokens
from globalcp.zones import ZoneTracker
from kds import failpoints
from kds.api import ApiContext, api_ssl_context, serve_api
from kds.api.auth import load_api_tokens, token_changes
from kds.api.observe import health_routes, metrics_route
from kds.clock import rfc3339
from kds.config import GlobalConfig
from kds.crypto import load_key_file
from kds.errors import ConfigError
from kds.grpc_options import server_options
from kds.model import Key, Kind, Limits, Resource
from kds.reload import Reloader
from kds.runtime import (
    Guard,
    Service,
    check_ports_free,
    ensure_private_dir,
    keep_memory_trimmed,
    settle_heap,
)
from kds.secret_files import check_secret_files
from kds.store import WriteResult, open_global_store
from kds.store.target import store_location
from kds.store_start import StartRetry
from kds.tls import ReloadingServerCredentials as ServerCredentials
from kds.version import __version__

__all__ = ["run_global"]

log = structlog.get_logger("globalcp")


# Several instances on one store: how long an instance's claim on a zone's stream holds
# unless renewed (renewed every half of it); a dead instance's zones show Offline after it.
ZONE_LEASE = 10.0

# On shutdown, how long saving the zones' last status may take (the store may be away).
FINAL_FLUSH_WAIT = 2.0

# Options a reload (SIGHUP) applies while running; the others need a restart. Heartbeat
# interval, anti-entropy interval and window size reach streams that start after the reload;
# live streams keep theirs. A new snapshot-streams limit applies at once (a larger one lets
# waiting zones start; a smaller one as the zones sending now finish).
LIVE_OPTIONS = frozenset(
    {
        "admin_token_file",
        "read_only_token_file",
        "heartbeat_interval",
        "anti_entropy_interval",
        "max_unacked",
        "snapshot_streams",
        "ack_delay",
        "max_data_bytes",
    }
)


async def run_global(cfg: GlobalConfig, service: Service) -> int:
    stop = service.stop
    check_options(cfg)
    check_ports_free({"--kds-address": cfg.kds_address, "--api-address": cfg.api_address})
    data_dir = ensure_private_dir(cfg.data_dir)
    check_secret_files(
        {"--tls-key-file": cfg.tls_key_file, "--api-tls-key-file": cfg.api_tls_key_file}
    )
    api_tokens = load_api_tokens(data_dir, cfg.admin_token_file, cfg.read_only_token_file)
    cipher = load_key_file(cfg.encryption_key_file) if cfg.encryption_key_file else None
    loop = asyncio.get_running_loop()
    hub: Hub | None = None  # made once the store tells where the change log stands

    def on_commit(results: Sequence[WriteResult]) -> None:
        # The store's writer thread, after each commit: hand the records to the hub.
        records = [r.record for r in results if r.record is not None]
        failpoints.reach("global-commit-before-wake")
        if hub is not None and records:
            loop.call_soon_threadsafe(hub.publish_many, records)

    location = store_location(cfg, data_dir)
    start = StartRetry(location, cfg.postgres_start_wait, stop, service.notifier)
    opened = await start.open(
        lambda: open_global_store(
            location,
            log_size=cfg.log_size,
            max_message_bytes=cfg.max_message_bytes,
            cipher=cipher,
            on_commit=on_commit,
            new_store=cfg.new_store,
        )
    )
    if opened is None:  # stopped while waiting for PostgreSQL
        return 0
    store = opened
    instance_id = f"global-{uuid.uuid4().hex[:8]}"
    metrics = GlobalMetrics()
    shared = store.backend == "postgres"  # other instances may share the store

    async def load() -> tuple[Hub, ZoneTracker, ZoneTokens | None, ServerCredentials | None]:
        # What global reads (and on a new store, writes once) before it serves: all of it is
        # tried again if PostgreSQL goes away meanwhile, each try afresh.
        if await store.head() == 0 and await store.get(Key(Kind.MESH, "", "default")) is None:
            await store.put(Resource(Kind.MESH, "default"), rfc3339())
            log.info("created the default mesh on a fresh store")
        hub = Hub(await store.head(), await store.log_floor(), cfg.log_size)
        tracker = ZoneTracker(
            store,
            hub,
            observe_latency=metrics.observe_propagation,
            instance_id=instance_id,
            lease=ZONE_LEASE if shared else None,
        )
        await tracker.load()
        zone_tokens: ZoneTokens | None = None
        if not cfg.kds_insecure:
            zone_tokens = ZoneTokens(store, issuer=f"kds-sync global {store.store_id}")
            await zone_tokens.load()
        creds = None if cfg.kds_insecure else await server_credentials(cfg, store, data_dir)
        return hub, tracker, zone_tokens, creds

    loaded = await start.run(load, "reading the store")
    if loaded is None:  # stopped while waiting for PostgreSQL
        store.close()
        return 0
    # Nothing else writes until the API starts: every later commit reaches the hub.
    hub, tracker, zone_tokens, creds = loaded
    guard = Guard(stop)
    guard.start("zone-status-flusher", tracker.run_flusher())
    servicer = SyncServicer(
        store,
        hub,
        tracker,
        tokens=zone_tokens,
        instance_id=instance_id,
        software_version=__version__,
        max_unacked=cfg.max_unacked,
        ack_delay=cfg.ack_delay,
        max_message_bytes=cfg.max_message_bytes,
        heartbeat_interval=cfg.heartbeat_interval,
        anti_entropy_interval=cfg.anti_entropy_interval,
        snapshot_streams=cfg.snapshot_streams,
        spill_dir=data_dir,
        on_token_refused=metrics.token_refused,
    )
    if shared:
        # Imported here: psycopg is loaded only for a store on PostgreSQL (kds.store.pg_target).
        from globalcp.peers import Peers
        from kds.store.postgres import PgGlobalStore

        assert isinstance(store, PgGlobalStore)
        # Other global instances may share the store: follow their commits and key changes.
        peers = Peers(store, hub, zone_tokens, servicer.end_streams)
        servicer.catch_up = peers.catch_up
        guard.start("peers", peers.run())
        guard.start("zone-lease-watch", tracker.run_lease_watch(servicer.end_zone_stream))
    settle_heap()  # loaded: what is alive now lives as long as the daemon
    guard.start("memory-keeper", keep_memory_trimmed(stop))
    server = grpc.aio.server(
        options=server_options(
            cfg.max_message_bytes,
            cfg.keepalive_interval,
            cfg.keepalive_timeout,
            cfg.kds_max_connections,
        )
    )
    server.add_generic_rpc_handlers([servicer.handler()])
    host, port = cfg.kds_address
    try:
        if cfg.kds_insecure:
            log.warning(
                "INSECURE: the sync stream is plaintext and zones are not authenticated "
                "(--kds-insecure); never use this beyond one trusted host"
            )
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            assert creds is not None
            bound = server.add_secure_port(f"{host}:{port}", creds.credentials())
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(f"--kds-address {host}:{port}: cannot listen there (in use or invalid)")
    await server.start()
    serving = True
    runner: web.AppRunner | None = None

    def ready() -> tuple[bool, dict[str, object]]:
        # The store is open and the sync port listens for as long as ``serving`` holds.
        return serving, {"revision": hub.head, "zonesConnected": len(servicer.links)}

    def alive_now() -> bool:
        return guard.failed is None

    def alive() -> tuple[bool, dict[str, object]]:
        return alive_now(), {}

    async def before_scrape() -> None:
        turns = servicer.plans.turns
        metrics.update(hub.head, await tracker.views(), (turns.sending, turns.waiting))

    extra = [
        # Before zone_routes, whose /zones/{name} would take these paths.
        *inventory_routes(tracker, metrics.propagation_summary),
        *zone_routes(tracker),
        *(token_routes(zone_tokens, servicer.end_streams) if zone_tokens else []),
        *health_routes(alive, ready),
        metrics_route(metrics.registry, before_scrape),
    ]
    ctx = ApiContext(
        store=store,
        role="global",
        limits=Limits(max_data_bytes=cfg.max_data_bytes),
        max_message_bytes=cfg.max_message_bytes,
        now=rfc3339,
        tokens=api_tokens,
    )

    def apply(new: GlobalConfig) -> list[str]:
        tokens = load_api_tokens(data_dir, new.admin_token_file, new.read_only_token_file)
        notes = token_changes(ctx.tokens, tokens)
        ctx.tokens = tokens
        ctx.limits = Limits(max_data_bytes=new.max_data_bytes)
        servicer.heartbeat_interval = new.heartbeat_interval
        servicer.anti_entropy_interval = new.anti_entropy_interval
        servicer.max_unacked = new.max_unacked
        servicer.plans.turns.set_limit(new.snapshot_streams)
        servicer.ack_delay = new.ack_delay
        return notes

    def status() -> tuple[bool, str]:
        return serving, f"serving {len(servicer.links)} zones, revision {hub.head}"

    try:
        tls = api_ssl_context(cfg.api_tls_cert_file, cfg.api_tls_key_file)
        runner = await serve_api(ctx, cfg.api_address, extra, tls)
        # The store is open and both ports listen: tell the service manager, keep it posted.
        service.notifier.ready(status()[1])
        guard.start("notify", service.notifier.run(alive_now, status))
        if service.load_config is not None:
            reloader = Reloader(cfg, service.load_config, LIVE_OPTIONS, apply, service.notifier)
            service.on_reload = reloader.reload
        log.info(
            "global started",
            version=__version__,
            instance=instance_id,
            api=f"{'https' if cfg.api_tls_cert_file else 'http'}://{cfg.api_address[0]}:{cfg.api_address[1]}",
            kds=f"{'grpc' if cfg.kds_insecure else 'grpcs'}://{host}:{bound}",
            ca_file=None if cfg.kds_insecure or cfg.tls_cert_file else str(data_dir / "ca.crt"),
            admin_token_file=str(api_tokens.admin_file),
            store=store.location,
            store_id=store.store_id,
            revision=hub.head,
        )
        await stop.wait()
    finally:
        service.on_reload = None
        service.notifier.stopping()
        serving = False
        servicer.stop()
        # Each step is bounded, so a store that is away cannot hold the shutdown up: the
        # streams and the API's requests get 2 s (together), the last status save 2 s, and
        # closing the store fails at once whatever still waits on it.
        await asyncio.gather(
            server.stop(grace=2), runner.cleanup() if runner is not None else asyncio.sleep(0)
        )
        log.debug("stopping: streams and API closed; ending tasks")  # a slow step shows
        await guard.cancel_all()
        log.debug("stopping: tasks ended; saving the zones' last status")
        await _final_flush(tracker)
        store.close()
    log.info("global stopped", revision=hub.head)
    # A root task that died is a failure: the service manager restarts on a non-zero exit.
    return 1 if guard.failed else 0


async def _final_flush(tracker: ZoneTracker) -> None:
    """Save the disconnects of the streams just ended, if the store answers in time: a
    store that is away must not hold the shutdown up, nor make it a failure."""
    try:
        async with asyncio.timeout(FINAL_FLUSH_WAIT):
            await tracker.flush()
    except Exception as e:
        log.error(
            "cannot save the zones' last status while stopping",
            error_type=type(e).__name__,
            error=str(e) or f"no answer from the store within {FINAL_FLUSH_WAIT:g} s",
        )
