"""SIGTERM stops global and a zone on PostgreSQL within a bound whether the server is up, away
or coming back, even with API requests waiting on it: each shutdown step is bounded, and
closing the store fails at once what still waits for a connection (before, requests queued
on the store thread each waited the pool's 5 s, and global took 30 s and more to stop)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Daemon
from tests.integration.test_postgres_globals import Pg, _secret
from tests.integration.test_postgres_zone_leader import _start_zone_instance
from tests.pgserver import PgServer, find_bindir

# Every shutdown step's bound added up (globalcp.app, kds.api) is about 4 s; the rest is
# margin for a loaded machine.
STOP_WITHIN = 7.0


def _stop_in_time(d: Daemon) -> float:
    """Seconds from SIGTERM to exit, asserting exit code 0 within STOP_WITHIN."""
    assert d.proc is not None and d.proc.poll() is None, f"{d.name} exited:\n{d.log_text()[-3000:]}"
    start = time.monotonic()
    try:
        rc = d.stop(signal.SIGTERM, STOP_WITHIN)  # the exit itself is the event waited for
    except AssertionError as e:  # it did not stop: Daemon.stop had its stacks logged first
        raise AssertionError(f"{e}:\n{d.log_text()[-6000:]}") from None
    assert rc == 0, d.log_text()[-3000:]
    return time.monotonic() - start


@pytest.mark.parametrize("server_state", ["up", "away", "coming back"])
def test_daemons_stop_in_bounded_time_whatever_postgresql_does(
    tmp_path: Path, server_state: str
) -> None:
    bindir = find_bindir()
    assert bindir is not None, "run scripts/setup-postgres"
    server = PgServer(bindir)
    server.start()
    pg = Pg(tmp_path)
    pg.url = server.url
    waiting: list[threading.Thread] = []
    try:
        g = pg.start_global("g")
        _, token = pg.token(g, "zz")
        z = _start_zone_instance(pg, "zz-1", token, "z" + uuid.uuid4().hex[:12])
        assert g.put("/meshes/default/secrets/a", _secret("a", "1")).status_code == 201
        if server_state != "up":
            server.stop("immediate")
            g.wait_event("PostgreSQL unreachable: writes refused, wake-ups paused")

            def put(i: int) -> None:  # requests queued on the store while it is away
                # Cut off by the shutdown, or answered: what is asserted is the exit.
                with contextlib.suppress(httpx.HTTPError):
                    g.http.put(f"/meshes/default/secrets/w{i}", json=_secret(f"w{i}", "x"))

            waiting = [threading.Thread(target=put, args=(i,)) for i in range(8)]
            for t in waiting:
                t.start()
            g.wait_event("store unavailable")  # the first of them reached the store
            if server_state == "coming back":
                server.start()
        _stop_in_time(g)
        _stop_in_time(z)
    finally:
        for t in waiting:
            t.join(30)
        pg.close()
        server.remove()
