"""grpc's own settings that only its environment can carry, set before grpc is loaded.

grpc's C core reads ``GRPC_EXPERIMENTS`` once, as the ``grpc`` module loads, so this runs
from ``kds``'s package import (every daemon's code imports ``kds`` before ``grpc``): set
later, it does nothing.

``-event_engine_client``: the connections a process dials (a zone's to global) use grpc's
older I/O layer instead of its EventEngine. With the EventEngine, a message a zone reads
passes through a thread of the engine's pool before the completion queue's poller thread
and the event loop; without it the poller thread reads the socket itself. Measured on a
2-core machine (grpcio 1.85, the benchmark's propagation of 200 single writes, TLS, one
zone per process, two runs each way, interleaved, the machine loaded):

- 100 zones: each zone's CPU per write 1.32 / 1.43 ms against 1.70 / 1.75, its context
  switches per write 4.2 against 12.3; global's CPU per write 22.1 / 24.7 ms against
  25.8 / 26.3; from sending a write to the last zone holding it, p50 77 / 87 ms against
  99 / 101 and p99 150 / 145 against 161 / 169.
- 10 zones (accepted connections off the EventEngine too): each zone 1.22 / 1.20 ms of
  CPU per write against 1.33 / 1.31.
- A bare stream reading one small message every 5 ms: 280 us of CPU per message against
  345; 30 such processes at once, 352 / 360 against 436 / 459.

Accepted connections (global's side, the experiment ``event_engine_listener``) keep the
EventEngine: turning it off there as well changed nothing beyond the noise.

An operator's own ``GRPC_EXPERIMENTS`` is kept as given; this only adds the setting
when it does not name the experiment at all. grpc names experiments for a while, then
removes them: an unknown one is logged at start-up ("Unknown experiment") and ignored, and
a test fails when the installed grpc no longer knows this one.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["EXPERIMENTS", "apply", "as_given"]

EXPERIMENTS = ("-event_engine_client",)
_UNSET = object()
_given: object = _UNSET  # GRPC_EXPERIMENTS before apply() first changed os.environ


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Add EXPERIMENTS to ``environ``'s GRPC_EXPERIMENTS (os.environ by default), each one
    unless the variable already names that experiment, enabled or not."""
    global _given
    env = os.environ if environ is None else environ
    if environ is None and _given is _UNSET:
        _given = env.get("GRPC_EXPERIMENTS")
    given = [e.strip() for e in env.get("GRPC_EXPERIMENTS", "").split(",") if e.strip()]
    named = {e.lstrip("-") for e in given}
    added = [e for e in EXPERIMENTS if e.lstrip("-") not in named]
    if added:
        env["GRPC_EXPERIMENTS"] = ",".join(given + added)


def as_given() -> dict[str, str]:
    """os.environ with GRPC_EXPERIMENTS as the process was given it, before apply(): for a
    child process that is to run grpc at its defaults (the benchmark's etcd watchers)."""
    env = dict(os.environ)
    if _given is not _UNSET:
        if isinstance(_given, str):
            env["GRPC_EXPERIMENTS"] = _given
        else:
            env.pop("GRPC_EXPERIMENTS", None)
    return env
