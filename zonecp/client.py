"""The zone's side of the sync stream: dial global, say hello, apply batches, acknowledge.

The dial loop retries with exponential backoff and jitter (tenacity), logging each attempt;
after a stream that was welcomed ends, backoff starts again from its shortest delay. Each
batch is decoded, planned and applied in one store transaction (kds.protocol.applier via
SqliteStore.apply_batch), then acknowledged. The zone sends global nothing of its own
resources: only the hello, acks (with per-resource rejections) and its conflict names.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from kds import wire
from kds._pb import sync_pb2 as pb
from kds.clock import rfc3339
from kds.errors import ProtocolError
from kds.grpc_options import client_options
from kds.model import Key
from kds.protocol.applier import DecodedBatch, Incoming
from kds.store import ZoneStore

__all__ = ["ZoneClient", "ZoneSyncStatus", "decode_batch"]

METHOD = "/kds.v1.SecretSync/Sync"
log = structlog.get_logger("zonecp.sync")


class StreamEnded(Exception):
    """The stream closed; retried by the dial loop."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


@dataclass
class ZoneSyncStatus:
    """The zone's own view of its sync, served by zonecp.status (times: wall-clock seconds)."""

    global_address: str = ""
    connected: bool = False
    # Ready once connected and caught up with global at least once since this process
    # started; it stays ready while global is away (the zone serves its last state).
    ready: bool = False
    global_instance_id: str = ""
    global_store_id: str = ""
    connected_since: float = 0.0
    disconnected_at: float = 0.0
    last_message_at: float = 0.0
    global_head: int = 0  # global's revision as last heard
    applied_revision: int = 0
    applied_at: str = ""  # when the last complete range or snapshot was applied
    last_error: str = ""
    last_error_at: float = 0.0
    attempts: int = 0  # failed dial attempts in a row
    connections: int = 0  # streams welcomed since start
    # How global answered the last hello: "resume" (only the changes after from_revision) or
    # "snapshot" (everything again); and how often each happened since start.
    sync_mode: str = ""
    sync_from_revision: int = 0
    resumes: int = 0
    snapshots: int = 0
    batches_applied: int = 0
    applied: Counter[str] = field(default_factory=Counter)  # resource changes, by type
    rejected: Counter[str] = field(default_factory=Counter)
    conflicts: list[Key] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()


def decode_batch(b: pb.Batch) -> tuple[DecodedBatch, list[pb.Rejection]]:
    """Decode a batch; changes this version cannot read (a kind from a newer global, a change
    with no operation) come back as rejections naming the key exactly as global sent it."""
    changes: list[Incoming] = []
    undecodable: list[pb.Rejection] = []
    for ch in b.changes:
        which = ch.WhichOneof("op")
        try:
            if which == "put":
                res = wire.resource_from_pb(ch.put)
                changes.append(Incoming(ch.revision, res.key, res))
            elif which == "delete":
                changes.append(Incoming(ch.revision, wire.key_from_pb(ch.delete)))
            else:
                undecodable.append(pb.Rejection(reason="change with no operation"))
        except (KeyError, ValueError) as e:
            raw = ch.put if which == "put" else ch.delete
            key = pb.ResourceKey(kind=raw.kind, mesh=raw.mesh, name=raw.name)
            reason = (
                f"unknown resource kind {raw.kind}: this zone runs an older version"
                if isinstance(e, KeyError)
                else f"cannot decode change: {e}"
            )
            undecodable.append(pb.Rejection(key=key, reason=reason))
    batch = DecodedBatch(
        seq=b.seq,
        from_revision=b.from_revision,
        revision=b.revision,
        snapshot=b.snapshot,
        final=b.final,
        head_revision=b.head_revision,
        changes=tuple(changes),
        chain=b.chain,
    )
    return batch, undecodable


def _key_name(k: Key) -> dict[str, str]:
    return {"type": str(k.kind), "mesh": k.mesh, "name": k.name}


class ZoneClient:
    def __init__(
        self,
        store: ZoneStore,
        *,
        zone: str,
        global_address: str,
        software_version: str,
        max_message_bytes: int,
        keepalive_interval: float,
        keepalive_timeout: float,
        reconnect_max_delay: float,
        ca_pem: bytes | None = None,
        token_file: Path | None = None,
        insecure: bool = False,
    ):
        self.store = store
        self.zone = zone
        self.target = global_address.partition("://")[2]
        self.insecure = insecure
        self.ca_pem = ca_pem
        self.token_file = token_file
        self.software_version = software_version
        self.max_message_bytes = max_message_bytes
        self.keepalive = (keepalive_interval, keepalive_timeout)
        self.reconnect_max_delay = reconnect_max_delay
        self.instance_id = f"{zone}-{uuid.uuid4().hex[:8]}"
        self.status = ZoneSyncStatus(global_address=global_address)
        self._write_lock = asyncio.Lock()
        self._status_dirty = asyncio.Event()

    # ------------------------------------------------------------------ conflicts

    async def refresh_conflicts(self) -> None:
        """Re-read the conflict set; log the ones that ended; tell global if it changed."""
        current = await self.store.conflicts()
        ended = set(self.status.conflicts) - set(current)
        for k in sorted(ended):
            log.info("name conflict ended: the synced copy is now served", **_key_name(k))
        if current != self.status.conflicts:
            self.status.conflicts = current
            self._status_dirty.set()

    # ------------------------------------------------------------------ dial loop

    async def run(self, stop: asyncio.Event) -> None:
        self.status.conflicts = await self.store.conflicts()
        while not stop.is_set():
            retrying = AsyncRetrying(
                # Exponential from 0.2 s up to the cap, plus jitter added after capping, so zones
                # that wait the longest (after a long outage) still spread their dials out.
                wait=wait_exponential(multiplier=0.1, min=0.2, max=self.reconnect_max_delay)
                + wait_random(0, max(0.5, self.reconnect_max_delay / 4)),
                # Every failure is retried with backoff: a dead sync loop in a live process is
                # the worst outcome. Unexpected errors are logged with their traceback.
                retry=retry_if_exception_type(Exception),
                before_sleep=self._log_retry,
                reraise=True,
            )
            async for attempt in retrying:
                welcomed = False
                with attempt:
                    if stop.is_set():
                        return
                    welcomed = await self._stream_once(stop)
                if welcomed:
                    break
            # A welcomed stream ended: reconnect soon, from the shortest backoff again, with
            # jitter so zones do not all dial a restarted global at the same instant.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), random.uniform(0.05, 0.5))

    def _read_token(self) -> str:
        """The token as the file holds it now (read at every dial, so a replaced file is
        used without a restart)."""
        if self.token_file is None:
            return ""
        try:
            return self.token_file.read_text().strip()
        except OSError as e:
            raise StreamEnded(f"cannot read --token-file {self.token_file}: {e.strerror}") from None

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.status.attempts = state.attempt_number
        self.status.error(_describe(exc))
        expected = isinstance(exc, StreamEnded | grpc.aio.AioRpcError | ProtocolError | OSError)
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else getattr(exc, "code", None)
        refused = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        # Refused credentials need an operator (a new token); say so louder than a blip.
        report = log.error if refused else log.warning
        report(
            "cannot sync with global: retrying",
            attempt=state.attempt_number,
            retry_in=round(delay, 2),
            error=_describe(exc),
            global_address=self.target,
            exc_info=None if expected else exc,
        )

    async def _stream_once(self, stop: asyncio.Event) -> bool:
        """One stream from dial to end. Returns True once welcomed (however it ended later);
        raises if it failed before the welcome, so the dial loop backs off."""
        opts = client_options(self.max_message_bytes, *self.keepalive)
        metadata: tuple[tuple[str, str], ...] = ()
        if self.insecure:
            channel = grpc.aio.insecure_channel(self.target, options=opts)
        else:
            creds = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
            channel = grpc.aio.secure_channel(self.target, creds, options=opts)
            metadata = (("authorization", f"Bearer {self._read_token()}"),)
        async with channel:
            call = channel.stream_stream(
                METHOD,
                request_serializer=pb.ZoneMessage.SerializeToString,
                response_deserializer=pb.GlobalMessage.FromString,
            )(metadata=metadata)
            stopper = asyncio.create_task(stop.wait())
            try:
                return await self._converse(call, stopper)
            except asyncio.InvalidStateError:
                # A write after the call ended (e.g. global refused the connection).
                code = await call.code()
                raise StreamEnded(f"{code.name}: {await call.details()}", code) from None
            finally:
                stopper.cancel()
                if self.status.connected:
                    log.info("disconnected from global")
                    self.status.disconnected_at = time.time()
                self.status.connected = False
                call.cancel()

    async def _converse(self, call: Any, stopper: asyncio.Task[Any]) -> bool:
        state = await self.store.sync_state()
        await call.write(
            pb.ZoneMessage(
                hello=pb.Hello(
                    zone=self.zone,
                    instance_id=self.instance_id,
                    software_version=self.software_version,
                    protocol_version=wire.PROTOCOL_VERSION,
                    resume=pb.ResumePoint(
                        global_store_id=state.global_store_id,
                        revision=state.applied_revision,
                        chain=state.chain,
                    ),
                    store_backend=self.store.backend,
                    max_message_bytes=self.max_message_bytes,
                )
            )
        )
        first = await self._read(call, stopper)
        if first is None:
            return True
        if first.WhichOneof("msg") != "welcome":
            raise ProtocolError("global did not answer the hello with a welcome")
        w = first.welcome
        global_store_id = w.global_store_id
        # Watchdog: global promises a message at least every heartbeat interval.
        silence = 3 * w.heartbeat_interval_ms / 1000 if w.heartbeat_interval_ms else None
        st = self.status
        st.connected = True
        st.connections += 1
        st.attempts = 0
        st.connected_since = st.last_message_at = time.time()
        st.global_instance_id = w.global_instance_id
        st.global_store_id = global_store_id
        st.global_head = w.head_revision
        st.applied_revision = st.sync_from_revision = state.applied_revision
        if w.mode == pb.Welcome.RESUME:
            st.sync_mode = "resume"
            st.resumes += 1
        else:
            st.sync_mode = "snapshot"
            st.snapshots += 1
        if w.mode == pb.Welcome.RESUME and state.applied_revision >= w.head_revision:
            st.ready = True
        log.info(
            "connected to global",
            global_instance=w.global_instance_id,
            mode=pb.Welcome.Mode.Name(w.mode),
            revision=state.applied_revision,
            head=w.head_revision,
        )
        status_task = asyncio.create_task(self._status_sender(call))
        self._status_dirty.set()  # report current conflicts on every new stream
        try:
            while True:
                msg = await self._read(call, stopper, silence)
                if msg is None:
                    return True
                self.status.last_message_at = time.time()
                kind = msg.WhichOneof("msg")
                if kind == "batch":
                    await self._apply(call, msg.batch, global_store_id)
                elif kind == "heartbeat":
                    self.status.global_head = msg.heartbeat.head_revision
                else:
                    raise ProtocolError(f"unexpected {kind} from global")
        except (StreamEnded, grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
            self.status.error(_describe(e) if not isinstance(e, StreamEnded) else str(e))
            log.warning("sync stream ended", error=self.status.last_error)
            return True
        finally:
            status_task.cancel()
            # Its own failure (a write on a dead call) is the stream ending, handled above.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await status_task

    async def _read(
        self, call: Any, stopper: asyncio.Task[Any], silence: float | None = None
    ) -> Any:
        """The next message; None when the zone is stopping. Raises StreamEnded when global
        ended the stream or, with ``silence``, sent nothing for that many seconds."""
        reader = asyncio.ensure_future(call.read())
        done, _ = await asyncio.wait(
            {reader, stopper}, timeout=silence, return_when=asyncio.FIRST_COMPLETED
        )
        if reader not in done:
            reader.cancel()
            if stopper in done:
                return None
            log.warning("global went silent: reconnecting", silent_for=silence)
            raise StreamEnded(f"global sent nothing for {silence:g}s (heartbeats expected)")
        msg = reader.result()
        if msg is grpc.aio.EOF:
            code = await call.code()
            details = await call.details()
            raise StreamEnded(f"global ended the stream: {code.name}: {details}", code)
        return msg

    async def _apply(self, call: Any, b: pb.Batch, global_store_id: str) -> None:
        batch, undecodable = decode_batch(b)
        result = await self.store.apply_batch(batch, global_store_id, rfc3339())
        for k in result.new_conflicts:
            log.warning(
                "name conflict: this zone keeps its own resource; global's copy is kept aside",
                zone=self.zone,
                **_key_name(k),
            )
        for k, reason in result.rejected:
            log.warning("rejected a synced resource", reason=reason, **_key_name(k))
        for rej in undecodable:
            log.warning(
                "rejected a synced resource",
                reason=rej.reason,
                kind=rej.key.kind,
                mesh=rej.key.mesh,
                name=rej.key.name,
            )
        if result.removed_stale:
            log.info("removed synced copies global no longer has", count=result.removed_stale)
        st = self.status
        st.applied_revision = result.applied_revision
        st.global_head = max(st.global_head, b.head_revision)
        st.batches_applied += 1
        refused = {k for k, _ in result.rejected}
        st.applied.update(
            str(c.key.kind) for c in batch.changes if c.key is not None and c.key not in refused
        )
        st.rejected.update(str(k.kind) for k, _ in result.rejected)
        st.rejected.update(
            str(wire.PB_TO_KIND.get(r.key.kind, f"kind-{r.key.kind}")) for r in undecodable
        )
        if result.rejected or undecodable:
            st.error(f"rejected {len(result.rejected) + len(undecodable)} synced resource(s)")
        if b.final:
            st.applied_at = rfc3339()
            if st.applied_revision >= st.global_head:
                st.ready = True
        log.debug(
            "applied batch",
            seq=b.seq,
            revision=result.applied_revision,
            changes=len(batch.changes),
            snapshot=b.snapshot,
            final=b.final,
        )
        ack = pb.Ack(
            seq=b.seq,
            applied_revision=result.applied_revision,
            rejected=[
                *(
                    pb.Rejection(key=wire.key_to_pb(k), reason=reason)
                    for k, reason in result.rejected
                ),
                *undecodable,
            ],
        )
        async with self._write_lock:
            await call.write(pb.ZoneMessage(ack=ack))
        if result.new_conflicts or result.resolved_conflicts:
            await self.refresh_conflicts()

    async def _status_sender(self, call: Any) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            msg = pb.ZoneMessage(
                status=pb.ZoneStatus(conflicts=[wire.key_to_pb(k) for k in self.status.conflicts])
            )
            async with self._write_lock:
                await call.write(msg)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc) if exc else ""
