"""The zone's side of the sync stream: dial global, say hello, apply batches, acknowledge.

This module does the I/O only; the protocol's decisions (what the hello says, that the welcome
comes first, the ack, readiness, when a silent global is given up on) are the pure
kds.protocol.zone_session.ZoneSession's, which this client feeds with what it reads.

The dial loop retries with exponential backoff and jitter (tenacity), logging each attempt;
after a stream that was welcomed ends, backoff starts again from its shortest delay. Each
batch is decoded (kds.wire), planned and applied in one store transaction
(kds.protocol.applier via ZoneStore.apply_batch), then acknowledged. The zone sends global
nothing of its own resources: only the hello, acks (with per-resource rejections) and its
status: conflict names and its problem.

A batch the store cannot apply (its disk is full, the store failed) becomes the zone's
problem: the zone tells global in a status report, closes its side of the stream, and dials
again with backoff; every new stream reports the problem again until a batch applies, so an
operator looking at global sees why the zone is failing, not only that it went offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
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

from kds import failpoints, wire
from kds._pb import sync_pb2 as pb
from kds.clock import rfc3339
from kds.errors import ProtocolError, StoreError
from kds.grpc_options import client_options
from kds.logging import debug_enabled
from kds.protocol.zone_session import State, ZoneSession
from kds.store import ZoneStore
from kds.wire import ZONE_METADATA
from zonecp.batch_log import key_fields, log_rejections, log_repair
from zonecp.check_answers import CheckAnswers
from zonecp.dial import StreamEnded, admitted, call_ended, describe
from zonecp.read_waits import ReadWaits
from zonecp.sync_status import DISK_FULL, ZoneSyncStatus, store_problem

__all__ = ["ZoneClient", "ZoneSyncStatus", "store_problem"]

METHOD = "/kds.v1.SecretSync/Sync"
# A batch of more changes is decoded on a worker thread (a single write's stays on the loop,
# where the hop would cost more than the decoding).
DECODE_INLINE_CHANGES = 256
# A welcomed stream that ends sooner than this is dialed again with backoff, as a failure.
STABLE_STREAM_S = 1.0
# How long a zone whose store failed waits for global to take its report and end the stream.
REPORT_TIMEOUT = 2.0
log = structlog.get_logger("zonecp.sync")


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
        # Several global instances (sharing one store): each failed dial moves to the next.
        self.targets = [a.partition("://")[2] for a in global_address.split(",")]
        self._dial = 0
        self.insecure = insecure
        self.ca_pem = ca_pem
        self.token_file = token_file
        self.software_version = software_version
        self.max_message_bytes = max_message_bytes
        self.keepalive = (keepalive_interval, keepalive_timeout)
        self.reconnect_max_delay = reconnect_max_delay
        self.instance_id = f"{zone}-{uuid.uuid4().hex[:8]}"
        self.session = ZoneSession(
            zone=zone,
            instance_id=self.instance_id,
            software_version=software_version,
            max_message_bytes=max_message_bytes,
        )
        self.status = ZoneSyncStatus(self.session, global_address=global_address)
        self._write_lock = asyncio.Lock()
        self._status_dirty = asyncio.Event()
        self._ack_held = asyncio.Event()  # an ack is held back (kds.protocol.zone_session)
        self.answers = CheckAnswers(store, self.status)  # anti-entropy: answers to checks

    # ------------------------------------------------------------------ conflicts

    async def refresh_conflicts(self) -> None:
        """Re-read the conflict set; log the ones that ended; tell global if it changed."""
        current = await self.store.conflicts()
        ended = set(self.status.conflicts) - set(current)
        for k in sorted(ended):
            log.info("name conflict ended: the synced copy is now served", **key_fields(k))
        if current != self.status.conflicts:
            self.status.conflicts = current
            self._status_dirty.set()

    async def try_refresh_conflicts(self) -> None:
        """refresh_conflicts, for a zone-local write's aftermath: a store that fails just
        then (PostgreSQL gone after the commit, a disk error on SQLite) is logged, never the
        end of the daemon; the next write or stream reads the conflicts again."""
        try:
            await self.refresh_conflicts()
        except StoreError as e:
            log.warning("cannot re-read the zone's conflicts", error=str(e))
        except Exception as e:  # an error the store did not expect: with its traceback
            log.error("cannot re-read the zone's conflicts", error=repr(e), exc_info=e)

    def local_write(self, refused: BaseException | None) -> None:
        """A zone-local API write that a full disk ``refused`` (or None: one that went
        through): the full disk becomes the zone's problem, told to global as when a batch
        cannot be applied; a write that goes through again ends it."""
        if refused is None and not self.status.problem.startswith(DISK_FULL):
            return  # another problem (a damaged store) is not ended by a write
        problem = store_problem(refused) if refused is not None else ""
        if self.status.set_problem(problem):
            if problem:
                log.error("a zone-local write was refused: reported to global", problem=problem)
            else:
                log.info("zone-local writes go through again: problem over")
            self._status_dirty.set()

    # ------------------------------------------------------------------ dial loop

    async def run(self, stop: asyncio.Event) -> None:
        conflicts_read = False
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
                    if not conflicts_read:
                        # Inside the retried attempt: a store that is away when the sync
                        # starts (PostgreSQL restarting as this instance takes the lead) is
                        # waited for with the same backoff, never the end of the sync loop.
                        self.status.conflicts = await self.store.conflicts()
                        conflicts_read = True
                    dialed = time.monotonic()
                    welcomed = await self._stream_once(stop)
                    lasted = time.monotonic() - dialed
                    if welcomed and lasted < STABLE_STREAM_S and not stop.is_set():
                        # Welcomed, then ended at once (a global that closes every stream,
                        # or promises heartbeats every millisecond): backing off as for a
                        # failed dial, not dialing again within half a second forever.
                        welcomed = False
                        raise StreamEnded(
                            f"the stream ended {lasted:.2f}s after it was dialed, "
                            f"within {STABLE_STREAM_S:g}s"
                        )
                if welcomed:
                    break
            # A welcomed stream ended: reconnect soon, from the shortest backoff again, with
            # jitter so zones do not all dial a restarted global at the same instant.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(0.05, 0.5)):
                    await stop.wait()

    def _read_token(self) -> str:
        """The token as the file holds it now (read at every dial, so a replaced file is
        used without a restart)."""
        if self.token_file is None:
            return ""
        try:
            return self.token_file.read_text().strip()
        except OSError as e:
            raise StreamEnded(f"cannot read --token-file {self.token_file}: {e.strerror}") from None

    @property
    def target(self) -> str:
        """The global address the next dial goes to."""
        return self.targets[self._dial % len(self.targets)]

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.status.attempts = state.attempt_number
        self.status.error(describe(exc))
        expected = isinstance(
            exc, StreamEnded | grpc.aio.AioRpcError | ProtocolError | OSError | StoreError
        )
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else getattr(exc, "code", None)
        refused = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        # Refused credentials need an operator (a new token); say so louder than a blip.
        report = log.error if refused else log.warning
        report(
            "cannot sync with global: retrying",
            attempt=state.attempt_number,
            retry_in=round(delay, 2),
            error=describe(exc),
            global_address=self.target,
            exc_info=None if expected else exc,
        )
        self._dial += 1  # the next attempt tries the next global instance, if there are several

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
            metadata = (
                ("authorization", f"Bearer {self._read_token()}"),
                (ZONE_METADATA, self.zone),
            )
        async with channel:
            call = channel.stream_stream(
                METHOD,
                request_serializer=pb.ZoneMessage.SerializeToString,
                response_deserializer=pb.GlobalMessage.FromString,
            )(metadata=metadata)
            waits = ReadWaits(self.session)
            stopper = asyncio.create_task(stop.wait())
            stopper.add_done_callback(lambda _: waits.interrupt("stop"))
            try:
                return await self._converse(call, waits)
            except asyncio.InvalidStateError:
                # A write after the call ended (e.g. global refused the connection).
                raise await call_ended(call) from None
            finally:
                stopper.cancel()
                waits.close()
                self.answers.reset()
                if self.session.state is not State.DISCONNECTED and self.session.on_end():
                    log.info("disconnected from global")
                    self.status.disconnected_at = time.time()
                call.cancel()

    async def _converse(self, call: Any, waits: ReadWaits) -> bool:
        state = await self.store.sync_state()
        hello = self.session.on_open(
            state.global_store_id,
            state.applied_revision,
            state.chain,
            store_backend=self.store.backend,
        )
        await admitted(call)
        await call.write(wire.hello_to_pb(hello))
        first = await self._read(call, waits)
        if first is None:
            return True
        await self._receive(call, first)  # the session refuses anything but the welcome here
        waits.watch()
        status_task = asyncio.create_task(self._status_sender(call))
        ack_task = asyncio.create_task(self._ack_sender(call))
        self._status_dirty.set()  # report current conflicts on every new stream
        try:
            while True:
                msg = await self._read(call, waits)
                if msg is None:
                    return True
                await self._receive(call, msg)
        except (StreamEnded, grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
            self.status.error(describe(e) if not isinstance(e, StreamEnded) else str(e))
            log.warning("sync stream ended", error=self.status.last_error)
            return True
        finally:
            status_task.cancel()
            ack_task.cancel()
            # Their own failure (a write on a dead call) is the stream ending, handled above.
            for task in (status_task, ack_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _receive(self, call: Any, msg: Any) -> None:
        """Feed one message from global to the session and carry out what it decides."""
        kind = msg.WhichOneof("msg")
        if kind == "welcome":
            w = msg.welcome
            self.session.on_welcome(wire.welcome_from_pb(w), time.monotonic())
            st = self.status
            st.attempts = 0
            st.connected_since = st.last_message_at = time.time()
            log.info(
                "connected to global",
                global_instance=w.global_instance_id,
                mode=pb.Welcome.Mode.Name(w.mode),
                revision=self.session.sync_from_revision,
                head=w.head_revision,
            )
        elif kind == "batch":
            await self._apply(call, msg.batch)
        elif kind == "heartbeat":
            self.session.on_heartbeat(msg.heartbeat.head_revision, time.monotonic())
            self.status.last_message_at = time.time()
        elif kind == "digest_query":
            self.session.on_digest_query(time.monotonic())
            self.status.last_message_at = time.time()
            await self._answer_digest(call, msg.digest_query)
        else:
            self.session.on_unknown(str(kind))

    async def _read(self, call: Any, waits: ReadWaits) -> Any:
        """The next message; None when the zone is stopping. Raises StreamEnded when global
        ended the stream or, as the session's watchdog decides, went silent too long."""
        if waits.why is None:
            self.session.on_listening(time.monotonic())
            waits.reading = True
            try:
                msg = await call.read()
            except asyncio.CancelledError:
                if waits.why is None:
                    raise  # not ours: the zone is being torn down
                task = asyncio.current_task()
                if task is not None and task.uncancel() > 0:
                    raise  # cancelled from outside as well
            else:
                if msg is grpc.aio.EOF:
                    code = await call.code()
                    details = await call.details()
                    raise StreamEnded(f"global ended the stream: {code.name}: {details}", code)
                return msg
            finally:
                waits.reading = False
        if waits.why == "stop":
            return None
        silence = self.session.silence_limit
        log.warning("global went silent: reconnecting", silent_for=silence)
        raise StreamEnded(f"global sent nothing for {silence:g}s (heartbeats expected)")

    async def _apply(self, call: Any, b: pb.Batch) -> None:
        if len(b.changes) <= DECODE_INLINE_CHANGES:
            batch, undecodable = wire.decode_batch(b)
        else:  # a snapshot part or a bulk range: decoded off the event loop
            batch, undecodable = await asyncio.to_thread(wire.decode_batch, b)
        self.session.on_batch(batch, undecodable, time.monotonic(), b.ByteSize())
        self.status.last_message_at = time.time()
        global_store_id = self.session.global_store_id
        now = rfc3339()
        self.answers.applying()
        try:
            result = await self.store.apply_batch(batch, global_store_id, now)
        except ProtocolError:
            raise  # a batch that does not follow on: the stream ends, the zone resumes
        except Exception as e:
            await self._report_and_close(call, store_problem(e))
            raise
        if self.status.set_problem(""):
            log.info("the store applies batches again: problem over")
            self._status_dirty.set()
        for k in result.new_conflicts:
            log.warning(
                "name conflict: this zone keeps its own resource; global's copy is kept aside",
                zone=self.zone,
                **key_fields(k),
            )
        applied = self.session.on_applied(result, time.monotonic())
        log_rejections(log, result.rejected, undecodable, applied.repeated)
        if b.repair:
            log_repair(log, self.status, batch, result.rejected, result.already_gone)
        if result.removed_stale:
            log.info("removed synced copies global no longer has", count=result.removed_stale)
        if applied.error:
            self.status.error(applied.error)
        if applied.complete:
            self.status.applied_at = now  # as the store recorded it
        if debug_enabled():  # asked first: this runs for every batch
            log.debug("applied batch", seq=b.seq, from_revision=b.from_revision,
                      revision=result.applied_revision, changes=len(batch.changes),
                      snapshot=b.snapshot, final=b.final, repair=b.repair)  # fmt: skip
        if b.snapshot and not b.final:
            failpoints.reach("zone-snapshot-part-applied")
        failpoints.reach("zone-batch-before-ack")
        if applied.ack is not None:
            async with self._write_lock:
                await call.write(wire.ack_to_pb(applied.ack))
        else:
            self._ack_held.set()  # _ack_sender sends it when due, unless an ack covers it first
        if applied.refresh_conflicts:
            await self.refresh_conflicts()

    async def _answer_digest(self, call: Any, m: pb.DigestQuery) -> None:
        # Read off the event loop: the groups round names one node per type and mesh.
        ans = await self.answers.answer(await asyncio.to_thread(wire.query_from_pb, m))
        async with self._write_lock:
            await call.write(wire.answer_to_pb(ans))

    def _status_message(self) -> pb.ZoneMessage:
        return wire.status_to_pb(self.status.conflicts, self.status.problem)

    async def _ack_sender(self, call: Any) -> None:
        """Send a held ack once it is due (kds.protocol.zone_session), unless a later ack
        covered it meanwhile."""
        session = self.session
        while True:
            await self._ack_held.wait()
            self._ack_held.clear()
            due = session.ack_due()
            if due is None:
                continue
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            async with self._write_lock:
                ack = session.take_ack(time.monotonic())
                if ack is not None:
                    await call.write(wire.ack_to_pb(ack))

    async def _status_sender(self, call: Any) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            async with self._write_lock:
                await call.write(self._status_message())

    async def _report_and_close(self, call: Any, problem: str) -> None:
        """The store failed: make ``problem`` the zone's, tell global, and close this side of
        the stream, waiting (briefly) for global to end it, so global reads the report before
        it sees the stream go. Best effort: the stream may be gone already."""
        if self.status.set_problem(problem):
            log.error("cannot apply what global sent: will retry", problem=problem)
        self.status.error(problem)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REPORT_TIMEOUT):
                async with self._write_lock:
                    await call.write(self._status_message())
                    await call.done_writing()
                await call.code()
