"""Composition root of zonecp: store, API and the sync client, run until stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from kds.api import ApiContext, api_ssl_context, serve_api
from kds.api.auth import load_api_tokens, token_changes
from kds.api.observe import health_routes, metrics_route
from kds.clock import rfc3339
from kds.config import ZoneConfig
from kds.config_files import check_files_given
from kds.crypto import load_key_file
from kds.errors import ConfigError
from kds.model import Limits
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
from kds.store import WriteResult, open_zone_store
from kds.store.target import store_location
from kds.store_start import StartRetry
from kds.version import __version__
from zonecp.client import ZoneClient
from zonecp.status import ZoneMetrics, status_route

if TYPE_CHECKING:
    from kds.store.postgres import PgZoneStore

__all__ = ["run_zone"]

log = structlog.get_logger("zonecp")


# Options a reload (SIGHUP) applies while running; the others need a restart. The token
# file and keepalive settings are used from the next dial on (the file's content is read at
# every dial anyway); a live stream keeps its own.
LIVE_OPTIONS = frozenset(
    {
        "admin_token_file",
        "read_only_token_file",
        "max_data_bytes",
        "token_file",
        "keepalive_interval",
        "keepalive_timeout",
    }
)


async def run_zone(cfg: ZoneConfig, service: Service) -> int:
    stop = service.stop
    ca_pem = check_options(cfg)
    structlog.contextvars.bind_contextvars(zone=cfg.zone)
    check_secret_files(
        {
            "--token-file": None if cfg.insecure else cfg.token_file,
            "--api-tls-key-file": cfg.api_tls_key_file,
        }
    )
    check_ports_free({"--api-address": cfg.api_address})
    data_dir = ensure_private_dir(cfg.data_dir)
    api_tokens = load_api_tokens(data_dir, cfg.admin_token_file, cfg.read_only_token_file)
    cipher = load_key_file(cfg.encryption_key_file) if cfg.encryption_key_file else None
    loop = asyncio.get_running_loop()
    client: ZoneClient | None = None
    guard = Guard(stop)

    def on_commit(results: Sequence[WriteResult]) -> None:
        # The store's writer thread, after a zone-local write: it may start or end a name
        # conflict, so the client re-reads them and tells global.
        if client is not None:
            loop.call_soon_threadsafe(refresh_conflicts, client)

    def refresh_conflicts(client: ZoneClient) -> None:
        guard.start("refresh-conflicts", client.try_refresh_conflicts())

    location = store_location(cfg, data_dir)
    start = StartRetry(location, cfg.postgres_start_wait, stop, service.notifier)
    opened = await start.open(
        lambda: open_zone_store(
            location, cipher=cipher, on_commit=on_commit, new_store=cfg.new_store
        )
    )
    if opened is None:  # stopped while waiting for PostgreSQL
        return 0
    store = opened
    # The zone's first read, tried again as the open is if PostgreSQL goes away meanwhile.
    state = await start.run(store.sync_state, "reading the store")
    bound = None
    if state is not None:  # the zone the store serves, recorded at its first start
        bound = await start.run(lambda: store.bind_zone(cfg.zone), "reading the store")
    if state is None or bound is None:  # stopped while waiting for PostgreSQL
        store.close()
        return 0
    if bound != cfg.zone:
        store.close()
        raise ConfigError(_another_zone(cfg.zone, bound, store.location))
    client = ZoneClient(
        store,
        zone=cfg.zone,
        global_address=cfg.global_address,
        software_version=__version__,
        max_message_bytes=cfg.max_message_bytes,
        keepalive_interval=cfg.keepalive_interval,
        keepalive_timeout=cfg.keepalive_timeout,
        reconnect_max_delay=cfg.reconnect_max_delay,
        ca_pem=ca_pem,
        token_file=cfg.token_file,
        insecure=cfg.insecure,
    )
    ctx = ApiContext(
        store=store,
        role="zone",
        zone=cfg.zone,
        limits=Limits(max_data_bytes=cfg.max_data_bytes),
        max_message_bytes=cfg.max_message_bytes,
        now=rfc3339,
        tokens=api_tokens,
        on_write=client.local_write,
    )
    metrics = ZoneMetrics(client.status, store)
    # Several instances of this zone on one PostgreSQL store: one leader holds the stream.
    pg: PgZoneStore | None = None
    if store.backend == "postgres":
        # Imported here: psycopg is loaded only for a store on PostgreSQL (kds.store.pg_target).
        from kds.store.postgres import PgZoneStore

        assert isinstance(store, PgZoneStore)
        pg = store
    leadership = pg.leadership(client.instance_id) if pg is not None else None

    async def leader() -> dict[str, Any]:
        assert pg is not None
        who, epoch = await pg.leader()
        return {"instanceId": who or None, "thisInstance": who == client.instance_id,
                "epoch": epoch}  # fmt: skip

    async def on_shared_change(what: str) -> None:
        # Another instance of this zone wrote a zone-local resource: conflicts may have
        # changed, and the leader is the one that tells global.
        if leadership is not None and leadership.leading and what in ("local", ""):
            await client.try_refresh_conflicts()

    async def lead(lost: asyncio.Event) -> None:
        # Sync until this instance stops leading or the daemon stops.
        stop_leading = asyncio.Event()
        ended = asyncio.create_task(_first_of(stop, lost))
        ended.add_done_callback(lambda _: stop_leading.set())
        try:
            await client.run(stop_leading)
        finally:
            ended.cancel()

    def alive() -> tuple[bool, dict[str, object]]:
        # The sync client runs as a guarded task; if it died the zone can no longer sync.
        return guard.failed is None, {"connected": client.status.connected}

    def ready() -> tuple[bool, dict[str, object]]:
        st = client.status
        if leadership is not None and not leadership.leading and leadership.leader_seen:
            # Standing by: it serves the shared store, which the leader keeps synced.
            return True, {"connected": False, "leader": leadership.leader_seen}
        details: dict[str, object] = {
            "connected": st.connected,
            "appliedRevision": st.applied_revision,
            "globalRevision": st.global_head,
        }
        if not st.ready:
            details["reason"] = (
                "not caught up with global yet"
                if st.connected
                else "has not connected to global and caught up since it started"
            )
        return st.ready, details

    extra = [
        status_route(cfg.zone, client, store, leader if leadership is not None else None),
        *health_routes(alive, ready),
        metrics_route(metrics.registry, metrics.before_scrape),
    ]

    def apply(new: ZoneConfig) -> list[str]:
        tokens = load_api_tokens(data_dir, new.admin_token_file, new.read_only_token_file)
        if new.token_file is None and not new.insecure:
            raise ConfigError("--token-file is required")
        notes = token_changes(ctx.tokens, tokens)
        ctx.tokens = tokens
        ctx.limits = Limits(max_data_bytes=new.max_data_bytes)
        client.token_file = new.token_file
        client.keepalive = (new.keepalive_interval, new.keepalive_timeout)
        return notes

    def sync_status() -> tuple[bool, str]:
        st = client.status
        if st.connected and st.ready:
            return True, f"synced to revision {st.applied_revision}"
        if st.ready:
            return True, "global unreachable, serving last state"
        if st.connected:
            return False, f"catching up with global (revision {st.applied_revision})"
        return False, "connecting to global"

    tls = api_ssl_context(cfg.api_tls_cert_file, cfg.api_tls_key_file)
    settle_heap()  # loaded: what is alive now lives as long as the daemon
    guard.start("memory-keeper", keep_memory_trimmed(stop))
    runner = await serve_api(ctx, cfg.api_address, extra, tls)
    log.info(
        "zone started",
        version=__version__,
        instance=client.instance_id,
        api=f"{'https' if cfg.api_tls_cert_file else 'http'}://{cfg.api_address[0]}:{cfg.api_address[1]}",
        global_address=cfg.global_address,
        admin_token_file=str(api_tokens.admin_file),
        store=store.location,
        revision=state.applied_revision,
    )
    if leadership is not None:
        assert pg is not None
        guard.start("sync-client", leadership.run(lead, stop))
        guard.start("shared-store", pg.follow(on_shared_change, fallback=5.0))
    else:
        guard.start("sync-client", client.run(stop))
    # READY=1 once the zone is ready as /readyz defines it (synced once since start).
    service.notifier.status(sync_status()[1])
    guard.start("notify", service.notifier.run(lambda: guard.failed is None, sync_status))
    if service.load_config is not None:
        reloader = Reloader(cfg, service.load_config, LIVE_OPTIONS, apply, service.notifier)
        service.on_reload = reloader.reload
    await stop.wait()
    service.on_reload = None
    service.notifier.stopping()
    await guard.cancel_all()
    log.debug("stopping: tasks ended; closing the API")  # each step logged: a slow one shows
    await runner.cleanup()
    log.debug("stopping: API closed; closing the store")
    store.close()
    log.info("zone stopped")
    return 1 if guard.failed else 0


async def _first_of(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def check_options(cfg: ZoneConfig) -> bytes | None:
    """What a zone's start refuses of its options beyond each one's own rule (zonecp run and
    check-config): a zone name, the API's certificate files and the encryption key file
    (kds.config_files), and transport options that agree; the CA to verify global with."""
    if not cfg.zone:
        raise ConfigError("--zone is required (env ZONECP_ZONE or 'zone:' in the config file)")
    check_files_given(cfg)
    return _check_transport(cfg)


def _check_transport(cfg: ZoneConfig) -> bytes | None:
    """Refuse contradictory transport options; return the CA to verify global with."""
    scheme = cfg.global_address.partition("://")[0]
    if cfg.insecure:
        if scheme != "grpc":
            raise ConfigError("--insecure dials plaintext: give --global-address grpc://HOST:PORT")
        log.warning(
            "INSECURE: dialling global in plaintext without a token (--insecure); secrets "
            "cross the network unencrypted and global cannot tell this zone from another"
        )
        return None
    if scheme != "grpcs":
        raise ConfigError(
            f"--global-address {cfg.global_address} is plaintext: use grpcs://HOST:PORT "
            "(or pass --insecure, for tests on one host only)"
        )
    if cfg.token_file is None:
        raise ConfigError(
            "--token-file is required: on global, run "
            f"'kdsctl generate zone-token --zone {cfg.zone} --output-file {cfg.zone}.token' "
            "and give the zone that file"
        )
    if cfg.ca_file is None:
        return None  # verify global with the system's trusted CAs
    try:
        return cfg.ca_file.read_bytes()
    except OSError as e:
        raise ConfigError(f"--ca-file {cfg.ca_file}: cannot read it: {e.strerror}") from None


def _another_zone(zone: str, held: str, location: str) -> str:
    """Serving another zone's store would serve that zone's own resources (its secrets) as
    this zone's, and resume its sync: a data dir copied from another zone, or --zone
    changed, is refused."""
    return (
        f"--zone {zone}: the store {location} belongs to zone {held!r}: start it with --zone "
        f"{held}, or give this zone a store of its own (another --data-dir, or on PostgreSQL "
        "another --postgres-schema); a new store takes a full snapshot from global"
    )
