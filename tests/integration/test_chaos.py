"""Zones converge on global's state while they are killed, cut off and frozen mid-stream."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import pytest

from tests.integration.conftest import Cluster, Daemon, b64, wait_for
from tests.integration.proxy import Proxy

pytestmark = pytest.mark.integration


def _state(d: Daemon) -> dict[tuple[str, str, str], str]:
    """What a control plane serves: (type, mesh, name) -> data, meshes included."""
    out: dict[tuple[str, str, str], str] = {}
    for m in d.get_json("/meshes")["items"]:
        out[("Mesh", "", m["name"])] = ""
        for s in d.get_json(f"/meshes/{m['name']}/secrets")["items"]:
            out[("Secret", m["name"], s["name"])] = s["data"]
    for s in d.get_json("/global-secrets")["items"]:
        out[("GlobalSecret", "", s["name"])] = s["data"]
    return out


def test_zones_converge_under_kills_cuts_and_freezes(cluster: Cluster) -> None:
    """400 random writes while one zone is SIGKILLed and restarted, one loses its link (resets
    and a partition through a proxy) and one is frozen: every zone ends equal to global, with
    no rejection. A small change log makes some reconnects take snapshots."""
    rng = random.Random(int(os.environ.get("KDS_CHAOS_SEED", "20261129")))
    g = cluster.start_global("--log-size", "40", "--max-unacked", "2")
    proxy = Proxy(cluster.kds_port)
    try:
        killed = cluster.start_zone("zone-killed")
        frozen = cluster.start_zone("zone-frozen")
        cut = cluster.start_zone("zone-cut", "--global-address", f"grpcs://127.0.0.1:{proxy.port}")
        assert g.put("/meshes/blue", {"type": "Mesh", "name": "blue"}).status_code == 201
        names = [f"s{i}" for i in range(25)]
        events: dict[int, Any] = {
            40: lambda: killed.signal(signal.SIGKILL),
            60: lambda: (wait_for(lambda: proxy.live > 0, what="link up"), proxy.cut()),
            100: lambda: frozen.signal(signal.SIGSTOP),
            130: lambda: killed.start(),
            150: proxy.cut,
            180: proxy.down,
            230: lambda: frozen.signal(signal.SIGCONT),
            260: proxy.up,
            300: proxy.cut,
            320: lambda: killed.signal(signal.SIGKILL),
            340: lambda: killed.start(),
        }
        for op in range(400):
            if op in events:
                events[op]()
            roll = rng.random()
            mesh = rng.choice(["default", "blue"])
            name = rng.choice(names)
            if roll < 0.55:
                body = {"type": "Secret", "mesh": mesh, "name": name, "data": b64(f"{op}")}
                assert g.put(f"/meshes/{mesh}/secrets/{name}", body).status_code in (200, 201)
            elif roll < 0.75:
                g.http.delete(f"/meshes/{mesh}/secrets/{name}")  # 404 when absent: fine
            elif roll < 0.85:
                body = {"type": "GlobalSecret", "name": name, "data": b64(f"g{op}")}
                assert g.put(f"/global-secrets/{name}", body).status_code in (200, 201)
            elif roll < 0.9:
                g.http.delete(f"/global-secrets/{name}")
            else:
                items = [
                    {"type": "Secret", "mesh": mesh, "name": n, "data": b64(f"bulk{op}")}
                    for n in rng.sample(names, 8)
                ]
                r = g.http.post("/_apply", json={"items": items})
                assert r.status_code == 200, r.text
        want = _state(g)
        assert len(want) > 20
        for z in (killed, frozen, cut):
            wait_for(lambda z=z: _state(z) == want, timeout=40, what=f"{z.name} converged")
        assert not g.events("zone rejected a resource")
        # Cuts really killed live links (one landing between reconnect attempts kills nothing),
        # and the zone came back through the proxy after the last of them.
        assert proxy.resets >= 1, proxy.resets
        wait_for(lambda: proxy.live > 0, what="zone reconnected through the proxy")
        modes = {c["mode"] for c in g.events("zone connected")}
        assert modes == {"SNAPSHOT", "RESUME"}, modes
    finally:
        proxy.close()
