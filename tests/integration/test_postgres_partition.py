"""A partition between global and PostgreSQL that sends nothing back: packets to the server
dropped by a firewall, as when a host or a network path is gone. (A proxy that closes the
connections, tests/integration/test_postgres_lease.py, is the easy case: both ends hear it.)

Every connection to the server sets TCP's user timeout and keepalives
(kds.store.postgres._db.CONNECTION_DEFAULTS), so a write on a connection into the silence
fails within about 5 s, and the writes queued behind it fail fast. Before, each write waited
for the kernel to give up (about 15 minutes): no answer to the API for a minute and more,
and SIGTERM did not stop global.

The server runs in a network namespace the test makes (tests/netns.py), reached over a veth
pair; the firewall is that namespace's.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import wait_for
from tests.integration.test_postgres_globals import Pg, _secret
from tests.netns import NetNs, available
from tests.pgserver import PgServer, find_bindir

# The user timeout (5 s), then the API's answer; the rest is a loaded machine's margin.
FIRST_503_WITHIN = 12.0
# Each next write waits 0.5 s for a connection (the server known away).
NEXT_503_WITHIN = 3.0
STOP_WITHIN = 15.0


def test_writes_fail_fast_and_global_stops_when_postgresql_goes_silent(tmp_path: Path) -> None:
    why = available()
    if why is not None:
        pytest.skip(why)
    bindir = find_bindir()
    assert bindir is not None, "run scripts/setup-postgres"
    ns = NetNs()
    server: PgServer | None = None
    pg = Pg(tmp_path)
    try:
        server = PgServer(bindir, netns=ns.name, host=ns.host)
        server.start()
        pg.url = server.url
        g = pg.start_global("ga")
        assert g.put("/meshes/default/secrets/a", _secret("a", "1")).status_code == 201

        ns.drop(server.port)
        start = time.monotonic()
        r = g.http.put("/meshes/default/secrets/b0", json=_secret("b0", "x"), timeout=60)
        took = time.monotonic() - start
        assert r.status_code == 503 and "PostgreSQL" in r.json()["detail"], r.text
        assert took < FIRST_503_WITHIN, f"first write answered after {took:.1f} s"
        for i in range(1, 4):
            start = time.monotonic()
            r = g.http.put(f"/meshes/default/secrets/b{i}", json=_secret(f"b{i}", "x"), timeout=60)
            took = time.monotonic() - start
            assert r.status_code == 503, r.text
            assert took < NEXT_503_WITHIN, f"write {i} answered after {took:.1f} s"
        # The connection for wake-ups, which only waits, notices through keepalives.
        g.wait_event("PostgreSQL unreachable: writes refused, wake-ups paused", 20)

        ns.heal()
        wait_for(
            lambda: g.put("/meshes/default/secrets/c", _secret("c", "y")).status_code == 201,
            20,
            "a write once the partition healed",
        )
        g.wait_event("PostgreSQL reachable again", 20)
        assert g.get_json("/meshes/default/secrets/a")["name"] == "a"

        # Silent again, a write in flight: SIGTERM still stops global, within the user timeout
        # and the shutdown's own bounds.
        ns.drop(server.port)
        assert g.proc is not None
        with pytest.raises(httpx.TimeoutException):  # global waits on the silent server
            g.http.put("/meshes/default/secrets/d", json=_secret("d", "z"), timeout=0.5)
        start = time.monotonic()
        assert g.stop(signal.SIGTERM, STOP_WITHIN) == 0
        assert time.monotonic() - start < STOP_WITHIN
    finally:
        try:
            pg.close()
        finally:
            if server is not None:
                ns.heal()
                server.remove()
            ns.remove()
