"""The issue's topology under faults: two globals on one PostgreSQL store, a zone of two
instances on PostgreSQL and a zone on SQLite, both given both global addresses. Random
writes go through both globals while the global holding a zone's stream and the zone's
leader are SIGKILLed and restarted; at the end every zone instance serves exactly what both
globals serve, and the zones resumed rather than took snapshots after their first sync."""

from __future__ import annotations

import random
import signal
import uuid
from typing import Any

from tests.integration.conftest import b64, wait_for
from tests.integration.test_chaos import _state
from tests.integration.test_postgres_globals import Pg
from tests.integration.test_postgres_globals import pg as pg  # the fixture
from tests.integration.test_postgres_zone_leader import _start_zone_instance


def test_writes_through_both_globals_converge_under_kills(pg: Pg) -> None:
    rng = random.Random(20261130)
    a, b = pg.start_global("g"), pg.start_global("gb")
    ids = {pg.instance_id(a): a, pg.instance_id(b): b}
    _, token = pg.token(a, "zz")
    schema = "c" + uuid.uuid4().hex[:12]
    zz = [_start_zone_instance(pg, f"zz-{i}", token, schema, ("g", "gb")) for i in (1, 2)]
    _, token_y = pg.token(b, "zy")
    zy = pg.start_zone("zy", token_y, "gb", "g")
    zones = [*zz, zy]
    names = [f"s{i}" for i in range(12)]

    def write(n: int) -> None:
        for _ in range(n):
            g = rng.choice([d for d in (a, b) if d.proc and d.proc.poll() is None])
            name = rng.choice(names)
            if rng.random() < 0.25:
                g.http.delete(f"/meshes/default/secrets/{name}")
            else:
                body = {"type": "Secret", "mesh": "default", "name": name,
                        "data": b64(f"{name}-{rng.random()}")}  # fmt: skip
                assert g.put(f"/meshes/default/secrets/{name}", body).status_code in (200, 201)

    def leader() -> Any:
        # None until an instance leads (right after a start, or a kill, none may yet).
        return next((z for z in zz if z.get_json("/status")["leader"]["thisInstance"]), None)

    write(40)
    for _ in range(2):
        # The global holding zone zz's stream, killed mid-writes and started again.
        holder = ids[wait_for(lambda: (lead := leader()) and lead.get_json("/status")["global"]["instanceId"],
                              10, "zz connected")]  # fmt: skip
        holder.stop(signal.SIGKILL)
        write(30)
        holder.start()
        ids = {pg.instance_id(a): a, pg.instance_id(b): b}
        # The zone's leader, killed and started again.
        lead = wait_for(leader, 15, "zz's leader")
        lead.stop(signal.SIGKILL)
        write(30)
        lead.start()
    write(20)

    expected = _state(a)
    assert _state(b) == expected
    for z in zones:
        wait_for(lambda z=z: _state(z) == expected, 30, f"{z.name} converged")
    assert zy.get_json("/status")["snapshots"] == 1  # its first sync only: resumes after
    # Two leaders killed: the third epoch at least (the first leader's, then a new one each).
    assert zz[0].get_json("/status")["leader"]["epoch"] >= 3
