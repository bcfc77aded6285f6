"""The fault suite's driver: random seeded operations against real daemons while faults are
injected, recorded as a history for tests.faults.checker.

One global and a few zones run as real processes (tests.integration.conftest's Cluster), each
zone dialling global through its own TCP proxy (tests.integration.proxy), global with a short
anti-entropy interval, every data dir on a small disk of its own (a tmpfs:
tests.integration.small_disks), so a disk can be filled. One client, in one thread, makes
operations one at a time: secret puts and deletes and mesh creates and deletes on global, and
zone-local secret puts and deletes on the zones (some with names global uses, making name
conflicts); three large secrets made at the start make any snapshot come in several parts.
Between operations it injects the faults of tests.faults.inject (SIGKILL at random moments
and at chosen crash points, partitions, SIGSTOP, a damaged row, an old data dir, full
disks), some healed after a random delay while operations go on.

Every operation's outcome is recorded (acknowledged; refused, when the answer says it was
not made: a full disk's 507; or unknown, when no answer came); zones are polled (revision
first, then their secrets); at the end every fault is healed, the run waits for the zones to
catch up and for a clean anti-entropy check, reads every store, and hands the history to the
checker. Values are random per operation, so a value names the operation that wrote it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kds.model import stays_on_global
from kds.store.sqlite import GlobalEngine, ZoneEngine
from tests.faults.checker import Applied, History, Observation, Op, Violation, check
from tests.faults.inject import Injector, ZoneProc
from tests.integration.conftest import Cluster, Daemon, wait_for
from tests.integration.proxy import Proxy
from tests.integration.small_disks import SmallDisks

__all__ = ["FaultRun", "Summary"]

MESHES = ("default", "m1", "m2")
NAMES = tuple(f"s{i}" for i in range(8))
LOCAL_NAMES = ("l0", "l1", "s0", "s1")  # s0 and s1 collide with global's names: conflicts
# Made at the start and never touched again: 100 KB each, so a snapshot takes several parts
# (128 KiB at most each) and a crash can land between them.
LARGE = {f"large{i}": 100_000 for i in range(3)}


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
    crashes: Counter[str] = field(default_factory=Counter)  # crash points reached, by name
    unexpected_exits: int = 0  # daemons that died by themselves (restarted, and counted here)
    # Tasks a stopping daemon left behind after their grace (kds.runtime.cancel_within), by
    # name: the daemon still stopped in bounded time, but something waited that should not.
    left_at_stop: Counter[str] = field(default_factory=Counter)

    def text(self) -> str:
        lines = [
            f"seed {self.seed}, {self.duration:.0f} s: {self.operations} operations "
            f"({self.acknowledged} acknowledged, "
            f"{sum(1 for o in self.history.ops if o.refused)} refused as not made), "
            f"faults: {_counts(self.faults)}",
            f"recorded: {len(self.history.observations)} zone polls, "
            f"{sum(1 for a in self.history.applied if not a.start)} applied batches; "
            f"anti-entropy repaired {self.repairs} synced resources; crash points reached: "
            f"{_counts(self.crashes)}",
            f"daemons that exited by themselves: {self.unexpected_exits}; tasks left behind "
            f"at a stop: {_counts(self.left_at_stop)}",
            f"violations: {len(self.violations)}",
            *(f"  {v.kind}: {v.detail}" for v in self.violations[:50]),
        ]
        return "\n".join(lines)


def _counts(counts: Counter[str]) -> str:
    """``name n, ...`` by name, or ``none``."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def left_at_stop(work: Path) -> Counter[str]:
    """The tasks every daemon log under ``work`` says a stop left behind, by name."""
    left: Counter[str] = Counter()
    for path in work.rglob("*.log"):
        with open(path, "rb") as f:
            for line in f:
                if b"did not end within its stop grace" in line:
                    with contextlib.suppress(ValueError):
                        left[str(json.loads(line).get("task"))] += 1
    return left


class FaultRun(Injector):
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
        self._global_full = False
        self._global_armed = False
        self._meshes = {"default"}
        self._repairs = 0
        self._crashes: Counter[str] = Counter()
        self._unexpected = 0

    # ------------------------------------------------------------------ the run

    def run(self) -> Summary:
        try:
            try:
                self._up()
                self._large()
                ends = time.monotonic() + self.duration
                while time.monotonic() < ends:
                    self._heal_due(time.monotonic())
                    self._revive()
                    if self.rng.random() < 0.12:
                        self._fault()
                    else:
                        self._operation()
                    if self.rng.random() < 0.4:
                        self._poll(self.rng.choice(self.zones))
                self._heal_due(float("inf"))
                self._disarm()
                self._settle()
                self._final()
            finally:
                self._down()
            self._read_logs()
            self._read_stores()
            left = left_at_stop(self.work)  # before the small disks holding logs go
        finally:
            self._cleanup()
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
            self._crashes,
            self._unexpected,
            left,
        )

    def _up(self) -> None:
        """Start the topology: one global, the zones (each through a proxy, every data dir
        on a small disk of its own)."""
        names = [f"zone-{i + 1}" for i in range(self.zone_count)]
        self.disks = SmallDisks([self.work / n for n in ("global", *names)])
        self.cluster = cluster = Cluster(self.work)
        cluster.prefix, cluster.view = self.disks.prefix, self.disks.view
        self.zones = []
        self.g = cluster.start_global("--anti-entropy-interval", "1s")
        self.g.http.timeout = httpx.Timeout(2.0)
        for name in names:
            proxy = Proxy(cluster.kds_port)
            address = f"grpcs://127.0.0.1:{proxy.port}"
            d = cluster.start_zone(name, "--global-address", address)
            d.http.timeout = httpx.Timeout(2.0)
            self.zones.append(ZoneProc(name, d, proxy))

    def _down(self) -> None:
        if hasattr(self, "cluster"):
            self.cluster.close()
        for z in getattr(self, "zones", []):
            if z.proxy is not None:
                z.proxy.close()

    def _cleanup(self) -> None:
        if hasattr(self, "disks"):
            self.disks.close()

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
            Op(seq, "global", kind, key, value, acked, self._head() if acked else None, code == 507)
        )

    def _large(self) -> None:
        """The large secrets, made once at the start."""
        for name, size in LARGE.items():
            value = self._value() + "-" * size
            body = {"data": base64.b64encode(value.encode()).decode()}
            code = self._call(self.g, "PUT", f"/meshes/default/secrets/{name}", body)
            assert code == 201, f"PUT {name}: {code}"
            seq = self._next_seq()
            self.history.ops.append(
                Op(seq, "global", "put", ("default", name), value, True, self._head())
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

    def _local_secret(self, zone: ZoneProc, kind: str) -> None:
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
        self.history.ops.append(Op(seq, zone.name, kind, key, value, acked, refused=code == 507))

    def _head(self) -> int | None:
        try:
            r = self.g.http.get("/readyz")
            return int(r.json()["revision"]) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def _poll(self, zone: ZoneProc) -> None:
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

    # ------------------------------------------------------------------ the end

    def _settle(self) -> None:
        """Every fault healed: wait until each zone holds global's head and a check after
        the last write found it equal (the damage anti-entropy repairs included)."""
        for z in self.zones:
            if z.proxy is not None:
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

    def _caught_up(self, z: ZoneProc) -> bool:
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

    def _zone_lives(self, z: ZoneProc) -> list[tuple[int, dict[str, Any]]]:
        """The zone's log lines, each with the process life that wrote it."""
        text = z.daemon.log_path.read_bytes()
        bounds = [*z.log_offsets[1:], (None, len(text))]
        return [
            (life, e)
            for (life, start), (_, end) in zip(z.log_offsets, bounds, strict=True)
            for e in _json_lines(text[start:end].decode(errors="replace"))
        ]

    def _read_logs(self) -> None:
        for z in self.zones:
            for life, e in self._zone_lives(z):
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
                elif e.get("event") == "TEST-ONLY crash point reached: SIGKILL":
                    self._crashes[str(e.get("point"))] += 1
                elif e.get("event") == "connected to global":
                    rev = int(e["revision"])
                    self.history.applied.append(
                        Applied(z.name, life, rev, rev, False, True, start=True)
                    )

    def _read_stores(self) -> None:
        def keyed(leaves: list[Any]) -> dict[tuple[str, str, str], bytes]:
            return {(str(k.kind), k.mesh, k.name): d for k, d in leaves}

        for e in _json_lines(self.g.log_text()):
            if e.get("event") == "TEST-ONLY crash point reached: SIGKILL":
                self._crashes[str(e.get("point"))] += 1
        # Copies, the daemons stopped: SQLite would resolve the /proc/PID/root link of a path
        # seen from outside the disks' namespace and open a file of that name outside it.
        final = self.work / "final"
        for d in (self.g, *(z.daemon for z in self.zones)):
            shutil.copytree(d.data_dir, final / d.name)
        g = GlobalEngine(final / "global" / "global.db")
        try:
            # What zones are sent: Kuma's system GlobalSecrets stay on global.
            sent = [(k, d) for k, d in g.sync_leaves().leaves if not stays_on_global(k)]
            self.history.global_leaves = keyed(sent)
        finally:
            g.close()
        for z in self.zones:
            e = ZoneEngine(final / z.name / "zone.db")
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
