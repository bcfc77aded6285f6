"""A global instance cut off from PostgreSQL while another still reaches it: the cut-off one
cannot renew its claims on its zones' streams, so it ends those streams before the claims
lapse (saying why, which the zone logs) and refuses new ones until it can save again; the
zone resumes on the other instance and gets the writes made there."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.conftest import wait_for
from tests.integration.proxy import Proxy
from tests.integration.test_postgres_globals import Pg, _secret
from tests.integration.test_postgres_globals import pg as pg  # the fixture


def test_a_global_cut_off_from_postgresql_gives_up_its_zones(pg: Pg, tmp_path: Path) -> None:
    server_url = pg.url
    port = int(server_url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = Proxy(port)
    try:
        pg.url = server_url.replace(f":{port}/", f":{proxy.port}/")
        a = pg.start_global("ga")  # reaches PostgreSQL through the proxy only
        pg.url = server_url
        b = pg.start_global("gb")
        ids = {pg.instance_id(a): "ga", pg.instance_id(b): "gb"}
        _, token = pg.token(b, "zl")
        z = pg.start_zone("zl", token, "ga", "gb")  # dials a first
        st = wait_for(lambda: (s := z.get_json("/status"))["connected"] and s, 10, "zone synced")
        assert ids[st["global"]["instanceId"]] == "ga", st
        snapshots = st["snapshots"]

        proxy.down()  # a loses PostgreSQL; b and the zone do not
        cut = time.monotonic()
        ended = a.wait_event("ending the zone's stream", 20)
        assert "cannot renew" in ended["reason"], ended
        # The zone saw global end the stream, and why.
        logged = z.wait_event("sync stream ended", 10)
        assert "UNAVAILABLE" in logged["error"] and "cannot renew" in logged["error"], logged
        st = wait_for(
            lambda: (
                (s := z.get_json("/status"))["connected"]
                and ids[s["global"]["instanceId"]] == "gb"
                and s
            ),
            20,
            "the zone on the instance that still reaches PostgreSQL",
        )
        # Before the claim a saved could lapse (10 s lease), with a loaded machine's margin.
        assert time.monotonic() - cut < 15
        assert st["snapshots"] == snapshots and st["lastSync"]["mode"] == "resume", st
        assert b.put("/meshes/default/secrets/on-b", _secret("on-b", "1")).status_code == 201
        wait_for(lambda: z.secret("default", "on-b"), 10, "b's write on the zone")
        view = b.get_json("/zones/zl")
        assert view["status"] == "Online" and ids[view["globalInstance"]] == "gb", view

        proxy.up()  # a reaches PostgreSQL again and serves as before: writes are shared
        wait_for(
            lambda: a.put("/meshes/default/secrets/on-a", _secret("on-a", "2")).status_code == 201,
            20,
            "a write through a once PostgreSQL is reachable again",
        )
        wait_for(lambda: z.secret("default", "on-a"), 10, "a's write on the zone")
    finally:
        proxy.close()
