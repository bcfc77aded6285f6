"""The zone's dial, before the protocol starts: waiting for global to admit a stream, how a
stream ends (StreamEnded) and how a dial's failure reads in the log and the zone's status."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from kds import wire
from kds.errors import KdsError

__all__ = ["ADMISSION_WAIT_S", "StreamEnded", "admitted", "call_ended", "describe", "hint"]

# How long a zone waits for global's headers admitting a stream before it writes the hello
# anyway (a global of an earlier release sends them only after the hello).
ADMISSION_WAIT_S = 3.0


class StreamEnded(KdsError):
    """The sync stream closed (global ended it, the network dropped it, global went silent):
    nobody's mistake to report, a reason to dial again; the dial loop retries."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


async def admitted(call: Any) -> None:
    """Wait for global's headers admitting the stream before the hello is written; raise
    StreamEnded with global's status and reason when it refused the stream instead. A hello
    written as a refusal arrived failed as grpc's "INTERNAL: Internal error from Core", the
    reason lost. A global that sends no headers within ADMISSION_WAIT_S (a release that
    answers only after the hello) is written the hello anyway."""
    try:
        async with asyncio.timeout(ADMISSION_WAIT_S):
            headers = await asyncio.shield(call.initial_metadata())
            if any(key == wire.ADMITTED_METADATA for key, _ in headers or ()):
                return
            ended = await asyncio.shield(call_ended(call))  # refused: its status follows
    except TimeoutError:
        return
    raise ended


async def call_ended(call: Any) -> StreamEnded:
    """The ended ``call``'s status and reason, as the StreamEnded to raise."""
    code = await call.code()
    return StreamEnded(f"{code.name}: {await call.details()}", code)


def describe(exc: BaseException | None) -> str:
    # A refusal reads the same whichever way it came: as the call's error, or as StreamEnded
    # when global ended the call before the zone's first write (a token refused before the
    # hello is read), which was logged as "StreamEnded('PERMISSION_DENIED: ...')".
    if isinstance(exc, grpc.aio.AioRpcError):
        text = f"{exc.code().name}: {exc.details()}"
        return text + hint(text)
    if isinstance(exc, StreamEnded):
        text = str(exc)
        return text + hint(text)
    return repr(exc) if exc else ""


def hint(text: str) -> str:
    """What to do about a dial error an operator can fix, as a sentence to add to it."""
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (
            " (global's certificate is not trusted: pass global's DATA_DIR/ca.crt with --ca-file)"
        )
    if "WRONG_VERSION_NUMBER" in text or "HTTP_REQUEST" in text:
        return (
            " (this looks like an HTTP port, not the sync port"
            " (global's --kds-address, default 5685))"
        )
    if "Hostname Verification Check failed" in text:
        return (
            " (global's certificate does not name the host dialled: dial a name it holds (global's"
            " --tls-names; its own certificate is DATA_DIR/tls/server.crt) or add this host there)"
        )
    return ""
