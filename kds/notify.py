"""The service manager's notify protocol, so systemd (``Type=notify``) knows how a daemon is.

A service manager that starts a daemon with ``NOTIFY_SOCKET`` set expects datagrams of
``KEY=VALUE`` lines on that UNIX socket: ``READY=1`` once the daemon really serves,
``STATUS=...`` for ``systemctl status``, ``STOPPING=1`` on shutdown and, when
``WATCHDOG_USEC`` is set, ``WATCHDOG=1`` at least that often. An address starting with ``@``
is in the abstract namespace. The protocol is one ``sendto`` per message, so it is written
here directly rather than pulling in libsystemd.

Without ``NOTIFY_SOCKET`` every method does nothing, so a daemon behaves as before. The
watchdog pings are sent from a task on the daemon's event loop and only while the daemon
says it is healthy: a loop that hangs, or a root task that died, stops the pings and the
service manager restarts the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger("kds.notify")


class Notifier:
    """Sends notify messages to ``address`` (None: disabled, every call a no-op)."""

    def __init__(self, address: str | None, watchdog_usec: int = 0):
        self.address = address
        # The watchdog interval systemd set; we ping every half of it, as sd_notify(3) advises.
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec > 0 else 0.0
        self._status = ""
        self._ready = False
        self._warned = False
        self._stopping = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec = 0
        # WATCHDOG_PID, when set, names the process the watchdog is meant for.
        pid = env.get("WATCHDOG_PID", "")
        if not pid or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "0"))
            except ValueError:
                usec = 0
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def is_ready(self) -> bool:
        return self._ready

    def send(self, **fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True when it was sent."""
        if self.address is None:
            return False
        # STATUS and friends are one line each: a newline would start a new field.
        text = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        # Never blocking: this runs on the event loop, and a service manager whose queue is
        # full (one that stopped reading) would otherwise hang the daemon in sendto. Such a
        # message is dropped instead (a watchdog ping comes again within half the interval).
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        try:
            with socket.socket(socket.AF_UNIX, kind) as s:
                s.sendto(text.encode(), addr)
        except OSError as e:
            if not self._warned:  # once: a gone service manager must not flood the log
                log.warning("cannot notify the service manager", socket=self.address, error=str(e))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> None:
        """READY=1 (once) with the first status line."""
        if self._ready:
            self.status(status)
            return
        self._ready = True
        self._status = status
        self.send(READY="1", STATUS=status)

    def status(self, text: str) -> None:
        """A STATUS line, sent only when it differs from the last one (and not once stopping:
        "stopping" stays the last word)."""
        if text != self._status and not self._stopping:
            self._status = text
            self.send(STATUS=text)

    def reloading(self) -> None:
        self.send(RELOADING="1", STATUS="reloading the configuration")

    def reloaded(self) -> None:
        # READY=1 ends the reload; the last status line is shown again.
        if not self._stopping:
            self.send(READY="1", STATUS=self._status)

    def stopping(self) -> None:
        self._stopping = True
        self.send(STOPPING="1", STATUS="stopping")

    async def run(
        self,
        healthy: Callable[[], bool],
        status: Callable[[], tuple[bool, str]],
        every: float = 1.0,
    ) -> None:
        """Until cancelled: ping the watchdog every half of WATCHDOG_USEC while ``healthy()``,
        and every ``every`` seconds send READY=1 once ``status()`` says ready, and its status
        line when it changed. Runs on the event loop, so a hung loop sends nothing."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        tick = min(every, self.watchdog_interval) if self.watchdog_interval else every
        next_ping = loop.time()
        while True:
            ok = healthy()
            if self.watchdog_interval and ok and loop.time() >= next_ping:
                self.send(WATCHDOG="1")
                next_ping = loop.time() + self.watchdog_interval
            if ok and not self._stopping:
                is_ready, line = status()
                if is_ready and not self._ready:
                    self.ready(line)
                else:
                    self.status(line)
            await asyncio.sleep(tick)
