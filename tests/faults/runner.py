"""The fault suite's driver: random seeded operations against real daemons while faults are
injected, recorded as a history for tests.faults.checker.

One global and a few zones run as real processes (tests.integration.conftest's Cluster), each
zone dialling global through its own TCP proxy (tests.integration.proxy), global with a short
anti-entropy interval. One client, in one thread, makes operations one at a time: secret puts
and deletes and mesh creates and deletes on global, and zone-local secret puts and deletes on
the zones (some with names global uses, making name conflicts). Between operations it injects
faults, some healed after a random delay while operations go on:

  kill-zone, kill-global   SIGKILL, then a restart (the write and apply paths are busy: the
                           kill lands inside them at random points)
  partition                the zone's proxy refuses and cuts connections for a while
  stop-zone, stop-global   SIGSTOP for a while, then SIGCONT
  corrupt                  a synced row of a running zone altered behind the store's back
                           (its row digest no longer matches): anti-entropy must repair it
  restore                  a zone stopped and its data dir replaced by an older copy of it

A full disk is not simulated here: it cannot be made safely for a process without privileges
(tests/unit/test_zone_problem.py covers it with a capped store). Every operation's outcome
is recorded; zones are polled (revision first, then their secrets); at the end every fault is
healed, the run waits for the zones to catch up and for a clean anti-entropy check, reads
every store, and hands the history to the checker. Values are random per operation, so a
value names the operation that wrote it.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kds.model import stays_on_global
from kds.store.sqlite import GlobalEngine, ZoneEngine
from tests.faults.checker import Applied, History, Observation, Op, Violation, check
from tests.integration.conftest import Cluster, Daemon, wait_for
from tests.integration.proxy import Proxy

__all__ = ["FaultRun", "Summary"]

MESHES = ("default", "m1", "m2")
NAMES = tuple(f"s{i}" for i in range(8))
LOCAL_NAMES = ("l0", "l1", "s0", "s1")  # s0 and s1 collide with global's names: conflicts
FAULTS = ("kill-zone", "kill-global", "partition", "stop-zone", "stop-global", "corrupt", "restore")


@dataclass
class Summary:
    seed: int
    duration: float
    operations: int
    acknowledged: int
    faults: Counter[str]
    violations: list[Violation]
    history: History = field(repr=False)
    repairs: int = 0  # synced resources anti-entropy repaired on the zones

    def text(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        lines = [
            f"seed {self.seed}, {self.duration:.0f} s: {self.operations} operations "
            f"({self.acknowledged} acknowledged), faults: {faults}",
            f"recorded: {len(self.history.observations)} zone polls, "
            f"{sum(1 for a in self.history.applied if not a.start)} applied batches; "
            f"anti-entropy repaired {self.repairs} synced resources",
            f"violations: {len(self.violations)}",
            *(f"  {v.kind}: {v.detail}" for v in self.violations[:50]),
        ]
        return "\n".join(lines)


class _Zone:
    def __init__(self, name: str, daemon: Daemon, proxy: Proxy):
        self.name = name
        self.daemon = daemon
        self.proxy = proxy
        self.life = 1
        self.log_offsets = [(1, 0)]  # (life, the log's size when it started)
        self.saved: Path | None = None
        self.stopped = False

    @property
    def up(self) -> bool:
        proc = self.daemon.proc
        return proc is not None and proc.poll() is None and not self.stopped


class FaultRun:
    def __init__(self, work: Path, seed: int, duration: float, zones: int = 2, log: Any = None):
        self.work = work
        self.rng = random.Random(seed)
        self.seed = seed
        self.duration = duration
        self.zone_count = zones
        self.say = log or (lambda text: None)
        self.history = History()
        self.faults: Counter[str] = Counter()
        self._seq = 0
        self._heal: list[tuple[float, str, Any]] = []  # (when, what, whom)
        self._global_stopped = False
        self._meshes = {"default"}
        self._repairs = 0

    # ------------------------------------------------------------------ the run

    def run(self) -> Summary:
        cluster = Cluster(self.work)
        zones: list[_Zone] = []
        try:
            g = cluster.start_global("--anti-entropy-interval", "1s")
            for i in range(self.zone_count):
                name = f"zone-{i + 1}"
                proxy = Proxy(cluster.kds_port)
                d = cluster.start_zone(name, "--global-address", f"grpcs://127.0.0.1:{proxy.port}")
                zones.append(_Zone(name, d, proxy))
            self.cluster, self.g, self.zones = cluster, g, zones
            for c in (g.http, *(z.daemon.http for z in zones)):
                c.timeout = httpx.Timeout(2.0)
            ends = time.monotonic() + self.duration
            while time.monotonic() < ends:
                self._heal_due(time.monotonic())
                if self.rng.random() < 0.12:
                    self._fault()
                else:
                    self._operation()
                if self.rng.random() < 0.4:
                    self._poll(self.rng.choice(zones))
            self._heal_due(float("inf"))
            self._settle()
            self._final()
        finally:
            cluster.close()
            for z in zones:
                z.proxy.close()
        self._read_logs()
        self._read_stores()
        violations = check(self.history)
        return Summary(
            self.seed,
            self.duration,
            len(self.history.ops),
            sum(1 for o in self.history.ops if o.acked),
            self.faults,
            violations,
            self.history,
            self._repairs,
        )

    # ------------------------------------------------------------------ operations

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _value(self) -> str:
        return f"v{self.rng.getrandbits(48):012x}"

    def _operation(self) -> None:
        r = self.rng.random()
        if r < 0.45:
            self._global_secret("put")
        elif r < 0.65:
            self._global_secret("delete")
        elif r < 0.72:
            self._mesh("put")
        elif r < 0.77:
            self._mesh("delete")
        else:
            zone = self.rng.choice(self.zones)
            if zone.up:
                self._local_secret(zone, "put" if self.rng.random() < 0.75 else "delete")

    def _call(self, d: Daemon, method: str, path: str, body: Any = None) -> int | None:
        try:
            return d.http.request(method, path, json=body).status_code
        except httpx.HTTPError:
            return None  # refused or timed out: it may or may not have happened

    def _global_secret(self, kind: str) -> None:
        mesh = self.rng.choice(sorted(self._meshes))
        key = (mesh, self.rng.choice(NAMES))
        value = self._value() if kind == "put" else ""
        seq = self._next_seq()
        path = f"/meshes/{mesh}/secrets/{key[1]}"
        if kind == "put":
            body = {"data": base64.b64encode(value.encode()).decode()}
            code = self._call(self.g, "PUT", path, body)
        else:
            code = self._call(self.g, "DELETE", path)
        acked = code is not None and code < 300
        if code == 404 and kind == "delete":
            acked = False  # nothing to delete: no write happened
        self.history.ops.append(
            Op(seq, "global", kind, key, value, acked, self._head() if acked else None)
        )

    def _mesh(self, kind: str) -> None:
        name = self.rng.choice(("m1", "m2"))
        seq = self._next_seq()
        if kind == "put":
            code = self._call(self.g, "PUT", f"/meshes/{name}", {"name": name})
        else:
            code = self._call(self.g, "DELETE", f"/meshes/{name}")  # 409 while it holds secrets
        acked = code is not None and code < 300
        if acked:
            (self._meshes.add if kind == "put" else self._meshes.discard)(name)
        self.history.ops.append(
            Op(
                seq,
                "global",
                f"mesh-{kind}",
                ("", name),
                "",
                acked,
                self._head() if acked else None,
            )
        )

    def _local_secret(self, zone: _Zone, kind: str) -> None:
        key = ("default", self.rng.choice(LOCAL_NAMES))
        value = self._value() if kind == "put" else ""
        seq = self._next_seq()
        path = f"/meshes/default/secrets/{key[1]}"
        if kind == "put":
            body = {"data": base64.b64encode(value.encode()).decode()}
            code = self._call(zone.daemon, "PUT", path, body)
        else:
            code = self._call(zone.daemon, "DELETE", path)
        # 409: the name is held by a synced copy only (read-only here); 404: nothing to delete.
        acked = code is not None and code < 300
        if code in (404, 409):
            return  # refused before any write: not an operation on the zone's own secrets
        self.history.ops.append(Op(seq, zone.name, kind, key, value, acked))

    def _head(self) -> int | None:
        try:
            r = self.g.http.get("/readyz")
            return int(r.json()["revision"]) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def _poll(self, zone: _Zone) -> None:
        if not zone.up:
            return
        try:
            st = zone.daemon.http.get("/status").json()
            secrets: dict[tuple[str, str], tuple[str, str]] = {}
            for mesh in MESHES:
                r = zone.daemon.http.get(f"/meshes/{mesh}/secrets")
                if r.status_code != 200:
                    continue
                for item in r.json()["items"]:
                    value = base64.b64decode(item.get("data", "")).decode(errors="replace")
                    origin = item["labels"].get("kuma.io/origin", "")
                    secrets[(mesh, item["name"])] = (value, origin)
        except (httpx.HTTPError, ValueError, KeyError):
            return
        if not st.get("connected"):
            return  # a zone reconnecting may still be at an old revision: not a claim
        self.history.observations.append(
            Observation(zone.name, self._seq, int(st["appliedRevision"]), secrets)
        )

    # ------------------------------------------------------------------ faults

    def _fault(self) -> None:
        what = self.rng.choice(FAULTS)
        zone = self.rng.choice(self.zones)
        now = time.monotonic()
        if what == "kill-zone" and zone.up:
            zone.daemon.stop(signal.SIGKILL)
            time.sleep(self.rng.uniform(0.0, 0.5))
            self._start_zone(zone)
        elif what == "kill-global" and not self._global_stopped:
            self.g.stop(signal.SIGKILL)
            time.sleep(self.rng.uniform(0.0, 0.5))
            self.g.start()
        elif what == "partition" and zone.proxy._accepting:
            zone.proxy.down()
            self._heal.append((now + self.rng.uniform(0.3, 3.0), "partition", zone))
        elif what == "stop-zone" and zone.up:
            zone.daemon.signal(signal.SIGSTOP)
            zone.stopped = True
            self._heal.append((now + self.rng.uniform(0.2, 2.0), "stop-zone", zone))
        elif what == "stop-global" and not self._global_stopped:
            self.g.signal(signal.SIGSTOP)
            self._global_stopped = True
            self._heal.append((now + self.rng.uniform(0.2, 1.5), "stop-global", None))
        elif what == "corrupt" and zone.up:
            if not self._corrupt(zone):
                return
        elif what == "restore" and zone.up:
            self._restore(zone)
        else:
            return
        self.faults[what] += 1
        self.say(f"fault: {what}" + ("" if what.endswith("global") else f" {zone.name}"))

    def _heal_due(self, now: float) -> None:
        due = [h for h in self._heal if h[0] <= now]
        self._heal = [h for h in self._heal if h[0] > now]
        for _, what, zone in due:
            if what == "partition":
                zone.proxy.up()
            elif what == "stop-zone":
                zone.daemon.signal(signal.SIGCONT)
                zone.stopped = False
            elif what == "stop-global":
                self.g.signal(signal.SIGCONT)
                self._global_stopped = False

    def _start_zone(self, zone: _Zone, reset: bool = False) -> None:
        zone.life += 1
        zone.log_offsets.append((zone.life, zone.daemon.log_path.stat().st_size))
        if reset:
            self.history.reset_lives.add((zone.name, zone.life))
        zone.daemon.start()

    def _corrupt(self, zone: _Zone) -> bool:
        """Alter a synced row's value behind the store's back (its digest no longer matches)."""
        conn = sqlite3.connect(zone.daemon.data_dir / "zone.db", timeout=5)
        try:
            cur = conn.execute(
                "UPDATE resources SET data=X'00' WHERE rowid = (SELECT rowid FROM resources "
                "WHERE origin='global' AND kind='Secret' ORDER BY random() LIMIT 1)"
            )
            conn.commit()
            return cur.rowcount > 0
        except sqlite3.Error:
            return False
        finally:
            conn.close()

    def _restore(self, zone: _Zone) -> None:
        """Keep a copy of the zone's data dir the first time; later, put it back."""
        if zone.saved is None:
            zone.daemon.stop()
            zone.saved = self.work / f"{zone.name}.saved"
            shutil.copytree(zone.daemon.data_dir, zone.saved)
            self._start_zone(zone)
            return
        zone.daemon.stop(signal.SIGKILL)
        # Its own writes since the copy are lost with it: not sync's doing.
        self.history.local_resets.setdefault(zone.name, []).append(self._seq)
        shutil.rmtree(zone.daemon.data_dir)
        shutil.copytree(zone.saved, zone.daemon.data_dir)
        self._start_zone(zone, reset=True)

    # ------------------------------------------------------------------ the end

    def _settle(self) -> None:
        """Every fault healed: wait until each zone holds global's head and a check after
        the last write found it equal (the damage anti-entropy repairs included)."""
        for z in self.zones:
            z.proxy.up()
        # A write global took before a stop or a partition may commit only now: its head is
        # read again until it holds still.
        for z in self.zones:
            wait_for(lambda z=z: self._caught_up(z), 60, f"{z.name} caught up")
        head = wait_for(self._head, 20, "global's head")
        for z in self.zones:
            wait_for(
                lambda z=z: self._equal_since(z.name, head),
                60,
                f"an equal anti-entropy check of {z.name}",
            )

    def _caught_up(self, z: _Zone) -> bool:
        head = self._head()
        st = z.daemon.get_json("/status")
        return bool(st["connected"] and st["appliedRevision"] == head)

    def _equal_since(self, zone: str, head: int) -> bool:
        ov = self.g.get_json(f"/zones/{zone}/_overview")
        last = (ov or {}).get("kdsSync", {}).get("antiEntropy", {}).get("lastCheck") or {}
        return bool(last.get("result") == "equal" and last.get("revision") == head)

    def _final(self) -> None:
        h = self.history
        h.final_head = self._head() or 0
        for z in self.zones:
            self._poll(z)
            st = z.daemon.get_json("/status")
            h.final_revisions[z.name] = int(st["appliedRevision"])
            if st["connected"]:
                h.connected.add(z.name)
            local: dict[tuple[str, str], str] = {}
            for mesh in MESHES:
                page = z.daemon.get_json(f"/meshes/{mesh}/secrets") or {"items": []}
                for item in page["items"]:
                    if item["labels"].get("kuma.io/origin") == "zone":
                        local[(mesh, item["name"])] = base64.b64decode(item["data"]).decode()
            h.zone_local[z.name] = local
        for mesh in MESHES:
            page = self.g.get_json(f"/meshes/{mesh}/secrets") or {"items": []}
            for item in page["items"]:
                h.global_secrets[(mesh, item["name"])] = base64.b64decode(item["data"]).decode()

    def _read_logs(self) -> None:
        for z in self.zones:
            text = z.daemon.log_path.read_bytes()
            bounds = [*z.log_offsets[1:], (None, len(text))]
            for (life, start), (_, end) in zip(z.log_offsets, bounds, strict=True):
                for e in _json_lines(text[start:end].decode(errors="replace")):
                    if e.get("event") == "applied batch":
                        self.history.applied.append(
                            Applied(
                                z.name,
                                life,
                                int(e["from_revision"]),
                                int(e["revision"]),
                                bool(e["snapshot"]),
                                bool(e["final"]),
                                bool(e.get("repair")),
                            )
                        )
                    elif e.get("event") == "repaired synced resources from global (anti-entropy)":
                        self._repairs += int(e.get("count", 0))
                    elif str(e.get("event", "")).startswith("damaged synced rows removed"):
                        # Cleared at start (the corrupt fault, then a restart): a snapshot.
                        self.history.reset_lives.add((z.name, life))
                    elif e.get("event") == "connected to global":
                        rev = int(e["revision"])
                        self.history.applied.append(
                            Applied(z.name, life, rev, rev, False, True, start=True)
                        )

    def _read_stores(self) -> None:
        def keyed(leaves: list[Any]) -> dict[tuple[str, str, str], bytes]:
            return {(str(k.kind), k.mesh, k.name): d for k, d in leaves}

        g = GlobalEngine(self.work / "global" / "global.db")
        try:
            # What zones are sent: Kuma's system GlobalSecrets stay on global.
            sent = [(k, d) for k, d in g.sync_leaves().leaves if not stays_on_global(k)]
            self.history.global_leaves = keyed(sent)
        finally:
            g.close()
        for z in self.zones:
            e = ZoneEngine(z.daemon.data_dir / "zone.db")
            try:
                self.history.zone_leaves[z.name] = keyed(e.sync_leaves().leaves)
            finally:
                e.close()


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
