"""The fault suite on the PostgreSQL topology: two global instances on one throwaway
PostgreSQL server (tests/pgserver.py), zone ``zz`` of two zonecp instances on the same server
(a leader and a standby), zone ``zy`` on SQLite; both zones given both global addresses.
Operations as in tests.faults.runner, global ones through either global instance; faults:

  kill-global          SIGKILL of a global instance (most often the one holding zz's stream),
                       started again after a while
  kill-zone-leader     SIGKILL of zz's leader, started again after a while
  kill-zone            SIGKILL of zy, started again at once
  kill-postgres        PostgreSQL stopped at once (``pg_ctl -m immediate``: a crash), started
                       again after a while (daemons that die meanwhile wait for it)
  stop-global          SIGSTOP of a global instance for a while
  stop-zone            SIGSTOP of zz's leader or of zy for a while
  crash-global-answer  a global instance restarted with a crash point: it dies on its next
                       API write, after the commit and before the answer
  crash-global-wake    ... after a commit and before it wakes its streams
  crash-zone-ack       a zone instance restarted with a crash point: it dies after committing
                       its next batch, before the ack

The same checker judges the history. zz's two instances apply to one store, one at a time:
their logs are merged by time, and each change of the instance (or process) applying counts
as a new life of the zone (so does each new leadership), which may start ahead of the last,
never behind, unless PostgreSQL crashed in between: the zone commits batches without waiting
for the WAL flush, so a server crash may take its last batches back (global resends them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from kds.failpoints import ENV
from kds.model import stays_on_global
from kds.store.postgres import PgGlobalEngine, PgTarget, PgZoneEngine
from kds.store.sqlite import ZoneEngine
from tests.faults.inject import ZoneProc
from tests.faults.runner import FaultRun, _json_lines
from tests.integration.conftest import _TEST_ARGS, BIN, Daemon, free_port, wait_for
from tests.pgserver import PgServer, find_bindir

__all__ = ["PG_FAULTS", "PgFaultRun"]

# Each fault with its weight: a PostgreSQL crash stops every write for seconds, so rarer.
PG_FAULTS = {
    "kill-global": 3,
    "kill-zone-leader": 3,
    "kill-zone": 2,
    "kill-postgres": 1,
    "stop-global": 2,
    "stop-zone": 2,
    "crash-global-answer": 1,
    "crash-global-wake": 1,
    "crash-zone-ack": 1,
}
CRASH = {
    "crash-global-answer": "api-after-commit",
    "crash-global-wake": "global-commit-before-wake",
    "crash-zone-ack": "zone-batch-before-ack",
}
LEADING = "leading the zone's sync stream"
KEPT = {"applied batch", "connected to global", "TEST-ONLY crash point reached: SIGKILL", LEADING}


class PgZone(ZoneProc):
    """A zone of several instances on one store; ``daemon`` is the one used now."""

    def __init__(self, name: str, instances: list[Daemon], schema: str):
        super().__init__(name, instances[0], None)
        self.instances = instances
        self.schema = schema
        # Per instance: (process life, the log's size when it started).
        self.starts: dict[str, list[tuple[int, int]]] = {d.name: [(1, 0)] for d in instances}

    def leader(self) -> Daemon | None:
        for d in self.instances:
            try:
                if (
                    d.proc
                    and d.proc.poll() is None
                    and d.get_json("/status")["leader"]["thisInstance"]
                ):
                    return d
            except (httpx.HTTPError, AssertionError, KeyError, TypeError):
                continue
        return None


class PgFaultRun(FaultRun):
    def __init__(self, work: Path, seed: int, duration: float, log: Any = None):
        super().__init__(work, seed, duration, 2, log)
        self.server: PgServer | None = None
        self.globals: list[Daemon] = []
        self._pg_down = False
        self._stopped: set[str] = set()
        self._armed_names: set[str] = set()
        self._pending: set[str] = set()  # daemons to be started by a heal
        self._answered: set[str] = set()  # daemons whose API answered since their start
        self._excused: set[str] = set()  # may exit at start: PostgreSQL crashed as they started
        self.zones = []
        self._pg_crashes: list[str] = []  # when PostgreSQL was crashed, as log timestamps

    # ------------------------------------------------------------------ topology

    def _up(self) -> None:
        bindir = find_bindir()
        assert bindir is not None, (
            "PostgreSQL's server is not installed: run scripts/setup-postgres"
        )
        self.server = PgServer(bindir)
        self.server.start()
        self.gschema = "g" + uuid.uuid4().hex[:12]
        self.kds = [free_port(), free_port()]
        self.globals = [self._global(f"global-{i + 1}", i) for i in range(2)]
        for g in self.globals:
            g.start()
            g.http.timeout = httpx.Timeout(2.0)
        self.g = self.globals[0]
        zschema = "z" + uuid.uuid4().hex[:12]
        zz = [self._zone(f"zz-{i}", "zz", [0, 1], zschema) for i in (1, 2)]
        zy = self._zone("zy", "zy", [1, 0], None)
        for d in (*zz, zy):
            d.start()
            d.http.timeout = httpx.Timeout(2.0)
        self.zones = [PgZone("zz", zz, zschema), ZoneProc("zy", zy, None)]
        for z in self.zones:
            wait_for(lambda z=z: z.daemon.get_json("/meshes/default"), 20, f"{z.name} synced")

    def _global(self, name: str, i: int) -> Daemon:
        api = free_port()
        assert self.server is not None
        argv = [
            str(BIN / "globalcp"), "run", "--data-dir", str(self.work / name),
            "--api-address", f"127.0.0.1:{api}", "--kds-address", f"127.0.0.1:{self.kds[i]}",
            "--store", "postgres", "--postgres-url", self.server.url,
            "--postgres-schema", self.gschema, *_TEST_ARGS, "--anti-entropy-interval", "1s",
        ]  # fmt: skip
        return Daemon(name, argv, self.work / f"{name}.log", f"http://127.0.0.1:{api}",
                      self.work / name)  # fmt: skip

    def _zone(self, name: str, zone: str, order: list[int], schema: str | None) -> Daemon:
        token = self.work / f"{zone}.token"
        if not token.exists():
            r = self.globals[0].http.post("/zone-tokens", json={"zone": zone, "validFor": "2h"})
            assert r.status_code == 201, r.text
            token.touch(mode=0o600)
            token.write_text(r.json()["token"] + "\n")
        api = free_port()
        assert self.server is not None
        store = ["--store", "postgres", "--postgres-url", self.server.url,
                 "--postgres-schema", schema] if schema else []  # fmt: skip
        argv = [
            str(BIN / "zonecp"), "run", "--zone", zone,
            "--global-address", ",".join(f"grpcs://127.0.0.1:{self.kds[i]}" for i in order),
            "--ca-file", str(self.work / "global-1" / "ca.crt"), "--token-file", str(token),
            "--data-dir", str(self.work / name), "--api-address", f"127.0.0.1:{api}",
            *store, *_TEST_ARGS, "--reconnect-max-delay", "1s",
        ]  # fmt: skip
        return Daemon(name, argv, self.work / f"{name}.log", f"http://127.0.0.1:{api}",
                      self.work / name)  # fmt: skip

    def _all(self) -> list[Daemon]:
        zz, zy = self.zones
        assert isinstance(zz, PgZone)
        return [*self.globals, *zz.instances, zy.daemon]

    def _down(self) -> None:
        for d in self._all() if len(self.zones) == 2 else self.globals:
            if d.proc is not None and d.proc.poll() is None:
                d.signal(signal.SIGCONT)
                d.stop()
            d.http.close()

    def _cleanup(self) -> None:
        if self.server is not None:
            self.server.remove()

    # ------------------------------------------------------------------ operations

    def _live(self, d: Daemon) -> bool:
        """Running, not stopped, and its API answered since it was last started."""
        if d.proc is None or d.proc.poll() is not None or d.name in self._stopped:
            return False
        if d.name not in self._answered:
            try:
                if not d._ready():
                    return False
            except AssertionError:
                return False
            self._answered.add(d.name)
        return True

    def _operation(self) -> None:
        live = [g for g in self.globals if self._live(g)]
        if not live or (self._pg_down and self.rng.random() < 0.8):
            # Nothing to write to, or the store away (writes answer 503 in turn): wait a
            # little instead of spinning, which would crowd the faults together.
            time.sleep(0.1)
            return
        self.g = self.rng.choice(live)
        began = time.monotonic()
        seq = self._seq
        super()._operation()
        took = time.monotonic() - began
        if took > 1.5:
            last = self.history.ops[-1] if self.history.ops and self._seq > seq else None
            self.say(f"slow operation ({took:.1f} s): {last}")

    def _local_secret(self, zone: ZoneProc, kind: str) -> None:
        keep = zone.daemon
        if isinstance(zone, PgZone):
            live = [d for d in zone.instances if self._live(d)]
            if not live:
                return
            zone.daemon = self.rng.choice(live)
        try:
            super()._local_secret(zone, kind)
        finally:
            zone.daemon = keep

    def _poll(self, zone: ZoneProc) -> None:
        """A poll of any instance (a standby's is skipped: it is not connected)."""
        keep = zone.daemon
        if isinstance(zone, PgZone):
            zone.daemon = self.rng.choice(zone.instances)
        try:
            if self._live(zone.daemon):
                super()._poll(zone)
        finally:
            zone.daemon = keep

    def _head(self) -> int | None:
        """The store's head, read from PostgreSQL: an instance's own view may lag the
        other's commits for a moment."""
        assert self.server is not None
        try:
            with psycopg.connect(self.server.url, connect_timeout=2) as conn:
                row = conn.execute(
                    f'SELECT value FROM "{self.gschema}".meta WHERE key = %s', ("head",)
                ).fetchone()
            return int(row[0]) if row else None
        except psycopg.Error:
            return None

    # ------------------------------------------------------------------ faults

    def _fault(self) -> None:
        began = time.monotonic()
        self._inject()
        if time.monotonic() - began > 3:
            self.say(f"slow fault ({time.monotonic() - began:.1f} s)")

    def _inject(self) -> None:
        what = self.rng.choices(list(PG_FAULTS), list(PG_FAULTS.values()))[0]
        zz, zy = self.zones
        assert isinstance(zz, PgZone)
        g = self.rng.choice(self.globals)
        leader = zz.leader()
        if what == "kill-global" and leader is not None and self.rng.random() < 0.7:
            held = _holder(leader, self.globals)
            g = held or g
        target: Daemon | None = {
            "kill-global": g, "stop-global": g, "crash-global-answer": g, "crash-global-wake": g,
            "kill-zone-leader": leader, "kill-zone": zy.daemon,
            "stop-zone": self.rng.choice([leader or zy.daemon, zy.daemon]),
            "crash-zone-ack": self.rng.choice([*zz.instances, zy.daemon]),
        }.get(what)  # fmt: skip
        if what == "kill-postgres":
            if self._pg_down:
                return
            assert self.server is not None
            self.server.stop("immediate")
            self._pg_crashes.append(_now_stamp())
            # Those still starting may find no store and exit ("cannot start"), as they
            # should: restarted once the server is back, not counted as dying by themselves.
            self._excused |= {
                d.name for d in self._all() if d.name not in self._answered and d.proc
            }
            self._pg_down = True
            self._heal.append((time.monotonic() + self.rng.uniform(0.5, 2.0), "pg-up", None))
        elif target is None or not self._live(target) or target.name in self._pending:
            return
        elif what in ("kill-global", "kill-zone-leader"):
            target.stop(signal.SIGKILL)
            self._pending.add(target.name)
            self._heal.append((time.monotonic() + self.rng.uniform(0.0, 2.0), "start", target))
        elif what == "kill-zone":
            target.stop(signal.SIGKILL)
            self._restart(target)
        elif what in ("stop-global", "stop-zone"):
            target.signal(signal.SIGSTOP)
            self._stopped.add(target.name)
            self._heal.append((time.monotonic() + self.rng.uniform(0.2, 3.0), "cont", target))
        elif what in CRASH:
            if self._pg_down:
                return
            target.stop(signal.SIGKILL)
            target.env_once = {ENV: CRASH[what]}
            self._restart(target)
        self.faults[what] += 1
        self.say(f"fault: {what}" + (f" {target.name}" if target is not None else ""))

    def _heal_due(self, now: float) -> None:
        due = sorted((h for h in self._heal if h[0] <= now), key=lambda h: h[1] != "pg-up")
        self._heal = [h for h in self._heal if h[0] > now]
        for when, what, d in due:
            if what == "pg-up":
                assert self.server is not None
                self.server.start()
                self._pg_down = False
            elif what == "cont":
                d.signal(signal.SIGCONT)
                self._stopped.discard(d.name)
            elif what == "start":
                if self._pg_down:  # it could not open its store: start it once PostgreSQL is back
                    self._heal.append((when + 0.5, what, d))
                    continue
                self._pending.discard(d.name)
                self._restart(d)

    def _restart(self, d: Daemon) -> None:
        """Start ``d`` (a new process life); a crash point may kill it at once."""
        zz, zy = self.zones
        assert isinstance(zz, PgZone)
        if d.name in zz.starts:
            lives = zz.starts[d.name]
            lives.append((lives[-1][0] + 1, d.log_path.stat().st_size))
        elif d is zy.daemon:
            zy.life += 1
            zy.log_offsets.append((zy.life, d.log_path.stat().st_size))
        armed = ENV in d.env_once
        (self._armed_names.add if armed else self._armed_names.discard)(d.name)
        # Not waited for: operations go on while it starts, as they would in production
        # (a start takes seconds on a loaded machine); until it answers, calls to it fail.
        self._answered.discard(d.name)
        self._excused.discard(d.name)
        d.launch()

    def _revive(self) -> None:
        if self._pg_down:
            return
        for d in self._all():
            dead = d.proc is not None and d.proc.poll() is not None
            if dead and d.name not in self._pending and d.name not in self._stopped:
                assert d.proc is not None
                at_crash_point = (
                    d.name in self._armed_names and d.proc.returncode == -signal.SIGKILL
                )
                if not at_crash_point and d.name not in self._excused:
                    # Not killed by a fault, nor at its crash point: it died by itself.
                    self._unexpected += 1
                    self.say(f"{d.name} exited by itself ({d.proc.returncode}): restarted")
                self._restart(d)

    def _disarm(self) -> None:
        for d in self._all():
            if d.name in self._stopped:
                d.signal(signal.SIGCONT)
                self._stopped.discard(d.name)
        self._revive()
        for d in self._all():
            if d.name in self._armed_names:
                d.stop()
                self._restart(d)

    # ------------------------------------------------------------------ the end

    def _settle(self) -> None:
        zz = self.zones[0]
        assert isinstance(zz, PgZone)
        for d in self._all():
            wait_for(functools.partial(self._up_again, d), 30, f"{d.name} up")
        zz.daemon = wait_for(zz.leader, 30, "zz's leader")
        self.g = self.globals[0]
        try:
            super()._settle()
        except AssertionError as e:
            seen = {}
            for d in self._all():
                try:
                    seen[d.name] = d.http.get(
                        "/status" if d.name.startswith("z") else "/readyz"
                    ).text
                except httpx.HTTPError as err:
                    seen[d.name] = repr(err)
            raise AssertionError(f"{e}; store head {self._head()}; {seen}") from None

    def _up_again(self, d: Daemon) -> bool:
        """``d`` answers. One that was starting when PostgreSQL was killed may give up on
        its store only now, after the server is back ("cannot start", as it should): it is
        started again, as an operator's service manager would, not taken for a failure."""
        assert d.proc is not None
        if d.proc.poll() is not None and d.name in self._excused:
            self.say(f"{d.name} could not open its store while PostgreSQL was down: restarted")
            self._restart(d)
            return False
        return d._ready()

    def _caught_up(self, z: ZoneProc) -> bool:
        """For zz, whichever instance leads now (the store may still name an instance
        that lost its lock a moment ago): it is the one used from here on."""
        if not isinstance(z, PgZone):
            return super()._caught_up(z)
        for d in z.instances:
            z.daemon = d
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                if super()._caught_up(z):
                    return True
        return False

    def _equal_since(self, zone: str, head: int) -> bool:
        """Either instance may hold the zone's stream and so have run its last check."""
        keep = self.g
        try:
            for g in self.globals:
                self.g = g
                if super()._equal_since(zone, head):
                    return True
            return False
        finally:
            self.g = keep

    def _zone_lives(self, z: ZoneProc) -> list[tuple[int, dict[str, Any]]]:
        if not isinstance(z, PgZone):
            return super()._zone_lives(z)
        tagged: list[tuple[str, str, int, dict[str, Any]]] = []
        for d in z.instances:
            text = d.log_path.read_bytes()
            starts = z.starts[d.name]
            bounds = [*starts[1:], (None, len(text))]
            for (plife, start), (_, end) in zip(starts, bounds, strict=True):
                for e in _json_lines(text[start:end].decode(errors="replace")):
                    if e.get("event") in KEPT:
                        tagged.append((str(e.get("timestamp", "")), d.name, plife, e))
        tagged.sort(key=lambda t: t[0])
        out: list[tuple[int, dict[str, Any]]] = []
        life, last, before = 0, None, ""
        for stamp, name, plife, e in tagged:
            # Each new leadership (a new epoch: the instance, or the same process again after
            # it lost the lock) is a new life of the zone: it starts from the shared store.
            if (name, plife) != last or e.get("event") == LEADING:
                life, last = life + 1, (name, plife)
                # A zone's store on PostgreSQL commits batches without waiting for the WAL
                # flush: a server crash may take the last ones back (global sends them again).
                # A life after such a crash may start behind the last: its store went back.
                if any(before < crash < stamp for crash in self._pg_crashes):
                    self.history.reset_lives.add((z.name, life))
            before = stamp
            out.append((life, e))
        return out

    def _read_stores(self) -> None:
        def keyed(leaves: list[Any]) -> dict[tuple[str, str, str], bytes]:
            return {(str(k.kind), k.mesh, k.name): d for k, d in leaves}

        assert self.server is not None
        for g in self.globals:
            for e in _json_lines(g.log_text()):
                if e.get("event") == "TEST-ONLY crash point reached: SIGKILL":
                    self._crashes[str(e.get("point"))] += 1
        ge = PgGlobalEngine(PgTarget(self.server.url, self.gschema))
        try:
            sent = [(k, d) for k, d in ge.sync_leaves().leaves if not stays_on_global(k)]
            self.history.global_leaves = keyed(sent)
        finally:
            ge.close()
        zz, zy = self.zones
        assert isinstance(zz, PgZone)
        ze = PgZoneEngine(PgTarget(self.server.url, zz.schema))
        try:
            self.history.zone_leaves[zz.name] = keyed(ze.sync_leaves().leaves)
        finally:
            ze.close()
        se = ZoneEngine(zy.daemon.data_dir / "zone.db")
        try:
            self.history.zone_leaves[zy.name] = keyed(se.sync_leaves().leaves)
        finally:
            se.close()


def _holder(leader: Daemon, globals_: list[Daemon]) -> Daemon | None:
    """The global instance holding the stream of ``leader``'s zone."""
    try:
        held = leader.get_json("/status")["global"]["instanceId"]
    except (httpx.HTTPError, AssertionError, KeyError, TypeError):
        return None
    for g in globals_:
        started = [e for e in g.logs() if e.get("event") == "global started"]
        if started and started[-1].get("instance") == held:
            return g
    return None


def _now_stamp() -> str:
    """Now, as the daemons' log lines stamp it (UTC, microseconds)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
