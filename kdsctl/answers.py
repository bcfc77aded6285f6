"""What kdsctl accepts of an answer: its size, how long it may take to arrive, and no
redirect (``redirected`` says why).

An answer over MAX_ANSWER_BYTES is refused (``too_large`` says so), and so is one whose
status lines and headers (interim 1xx answers included) add more than HEAD_BYTES to it. An
answer is read against one deadline (``paced``): --timeout from the moment kdsctl starts
waiting for it, plus one second for each MiB received, so a large answer on a slow link
still arrives (the largest, 256 MiB, may take --timeout and 256 s) and one a server trickles
ends after about --timeout. A socket timeout alone bounds each read, not the answer: a
server that sent its answer a byte at a time, each within --timeout, held kdsctl for as long
as it liked (139 bytes at one every 0.5 s held ``kdsctl --timeout 2s get meshes`` 69 s).
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from typing import Any

from kds import text

__all__ = [
    "BYTES_PER_SECOND",
    "HEAD_BYTES",
    "MAX_ANSWER_BYTES",
    "AnswerTooLarge",
    "SlowAnswer",
    "paced",
    "redirected",
    "too_large",
]

# The largest answer kdsctl reads: a page of 1000 secrets at the default 1 MiB value limit
# is about 1.4 GB, but lists of large secrets are paged smaller (--size); a server that
# sends more is refused rather than let fill kdsctl's memory.
MAX_ANSWER_BYTES = 256 * 1024 * 1024
# How much of an answer earns a second more than --timeout to arrive.
BYTES_PER_SECOND = 1024 * 1024
# What an answer's status lines and headers may add to MAX_ANSWER_BYTES: http.client skips
# any number of interim (1xx) answers, and a server sending them without end held kdsctl
# for as long as it did (60 s, at 90% of a CPU), each within --timeout and its pace.
HEAD_BYTES = 1024 * 1024


def too_large(method: str, url: str, limit: int, size: str) -> str:
    return (
        f"{method} {url}: the answer ({size}) is larger than {limit} bytes, kdsctl's limit "
        "for one answer; list large secrets a page at a time with --size"
    )


def redirected(location: str | None) -> str:
    """What a redirect answer (3xx) is told as: kdsctl follows none, which would carry the
    token to the address the server names, and takes none as the answer (a redirect with a
    JSON body made 'kdsctl delete' say it deleted what it never reached)."""
    where = text.safe_text(location or "no address", 512)
    return (
        f"the server redirects to {where}; kdsctl follows no redirect, which would carry the "
        "token there: give the API's own address as --api-url"
    )


class SlowAnswer(TimeoutError):
    """An answer began to arrive but not whole within its deadline."""


class AnswerTooLarge(http.client.HTTPException):
    """More came than MAX_ANSWER_BYTES and HEAD_BYTES, before the answer's end."""


class _PacedReader(io.RawIOBase):
    """The socket's reader (``raw``, which keeps the socket open while the answer is read),
    each read given only the time left before the deadline."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, timeout: float):
        self._raw = raw
        self._sock = sock
        self._deadline = time.monotonic() + timeout
        self._most = MAX_ANSWER_BYTES + HEAD_BYTES
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline + self.received / BYTES_PER_SECOND - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError()
            self._sock.settimeout(left)
            n = self._raw.readinto(buffer) or 0
        except TimeoutError:
            if self.received:
                message = f"{self.received} bytes of it came, too slowly: an answer gets "
                raise SlowAnswer(message + "the timeout and a second per MiB") from None
            raise
        self.received += n
        if self.received > self._most:
            raise AnswerTooLarge(
                f"the answer, with its headers and any interim (1xx) answers, is larger than "
                f"{self._most} bytes, kdsctl's limit"
            )
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class _PacedResponse(http.client.HTTPResponse):
    answer_timeout = 10.0  # paced() makes a class per timeout

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        # Detached: the buffer made above is dropped without closing the socket's reader.
        self.fp = io.BufferedReader(_PacedReader(self.fp.detach(), sock, self.answer_timeout))


def paced(timeout: float) -> type[http.client.HTTPResponse]:
    """An HTTPConnection's ``response_class`` whose answers are read against one deadline,
    ``timeout`` seconds from when one starts to be read and a second more per MiB of it."""
    return type("PacedResponse", (_PacedResponse,), {"answer_timeout": timeout})
