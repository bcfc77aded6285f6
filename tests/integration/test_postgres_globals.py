"""Several global instances on one PostgreSQL store (a throwaway server: tests/pgserver.py).

Both accept writes and serve zones; they share one CA and one set of token signing keys; a
zone given both addresses resumes on the other when its instance is SIGKILLed (a resume,
never a snapshot, with nothing lost); a token revoked on one ends the stream another holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kds.protocol.records import next_chain
from kds.store._rows import log_digest, row_digest
from kds.store.postgres._db import LOCK_WRITE, lock_key
from tests.integration.conftest import _TEST_ARGS, BIN, Daemon, b64, free_port, wait_for
from tests.pgserver import PgServer, find_bindir, shared_server


def _secret(name: str, value: str) -> dict[str, Any]:
    return {"type": "Secret", "mesh": "default", "name": name, "data": b64(value)}


class Pg:
    """Global instances and zones on one store; every daemon stopped at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.url = shared_server().url
        self.schema = "t" + uuid.uuid4().hex[:12]
        self.daemons: list[Daemon] = []
        self.kds: dict[str, int] = {}

    def start_global(self, name: str, *extra: str, wait: bool = True) -> Daemon:
        """A global instance, its API answering; without ``wait``, only launched."""
        api, kds = free_port(), free_port()
        self.kds[name] = kds
        argv = [
            str(BIN / "globalcp"), "run", "--data-dir", str(self.tmp / name),
            "--api-address", f"127.0.0.1:{api}", "--kds-address", f"127.0.0.1:{kds}",
            "--store", "postgres", "--postgres-url", self.url, "--postgres-schema", self.schema,
            *_TEST_ARGS, *extra,
        ]  # fmt: skip
        d = Daemon(name, argv, self.tmp / f"{name}.log", f"http://127.0.0.1:{api}", self.tmp / name)
        self.daemons.append(d)
        if not wait:
            d.launch()
            return d
        return d.start()

    def instance_id(self, g: Daemon) -> str:
        return str(g.wait_event("global started")["instance"])

    def token(self, g: Daemon, zone: str) -> tuple[str, Path]:
        r = g.http.post("/zone-tokens", json={"zone": zone, "validFor": "1h"})
        assert r.status_code == 201, r.text
        path = self.tmp / f"{zone}.token"
        path.touch(mode=0o600)
        path.write_text(r.json()["token"] + "\n")
        return r.json()["id"], path

    def start_zone(self, zone: str, token: Path, *globals_: str) -> Daemon:
        api = free_port()
        addresses = ",".join(f"grpcs://127.0.0.1:{self.kds[g]}" for g in globals_)
        argv = [
            str(BIN / "zonecp"), "run", "--zone", zone, "--global-address", addresses,
            "--ca-file", str(self.tmp / globals_[0] / "ca.crt"), "--token-file", str(token),
            "--data-dir", str(self.tmp / zone), "--api-address", f"127.0.0.1:{api}",
            *_TEST_ARGS, "--reconnect-max-delay", "1s",
        ]  # fmt: skip
        d = Daemon(zone, argv, self.tmp / f"{zone}.log", f"http://127.0.0.1:{api}", self.tmp / zone)
        self.daemons.append(d)
        d.start()
        wait_for(lambda: d.get_json("/meshes/default"), what=f"{zone} first sync")
        return d

    def close(self) -> None:
        for d in self.daemons:
            if d.proc and d.proc.poll() is None:
                d.stop()
            d.http.close()


@pytest.fixture
def pg(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    c = Pg(tmp_path)
    try:
        yield c
    finally:
        c.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for d in c.daemons:
                print(f"\n----- {d.name} log -----\n{d.log_text()[-6000:]}")


def test_two_globals_share_writes_one_ca_and_a_zone_resumes_on_the_survivor(pg: Pg) -> None:
    a = pg.start_global("ga")
    b = pg.start_global("gb")
    ids = {pg.instance_id(a): a, pg.instance_id(b): b}
    # One CA: the second instance took the first one's, it did not make its own.
    assert (pg.tmp / "ga" / "ca.crt").read_bytes() == (pg.tmp / "gb" / "ca.crt").read_bytes()
    _, token = pg.token(b, "z1")  # issued by b, verified by whichever instance the zone dials
    z = pg.start_zone("z1", token, "ga", "gb")

    # Writes through both instances reach the zone, in one revision sequence.
    assert a.put("/meshes/default/secrets/from-a", _secret("from-a", "1")).status_code == 201
    assert b.put("/meshes/default/secrets/from-b", _secret("from-b", "2")).status_code == 201
    wait_for(lambda: z.secret("default", "from-a") and z.secret("default", "from-b"),
             what="writes through both globals on the zone")  # fmt: skip
    rev_a = a.wait_event("resource written", name="from-a")["version"]
    rev_b = b.wait_event("resource written", name="from-b")["version"]
    assert rev_b == rev_a + 1  # one gap-free sequence across the instances
    wait_for(lambda: z.get_json("/status")["appliedRevision"] == rev_b, what="zone at the head")

    status = z.get_json("/status")
    holder = ids[status["global"]["instanceId"]]
    survivor = b if holder is a else a
    snapshots = status["snapshots"]
    holder_id = status["global"]["instanceId"]
    # Zone status is shared: the instance not holding the stream names the one that does.
    wait_for(
        lambda: (
            (v := survivor.get_json("/zones/z1"))["status"] == "Online"
            and v["globalInstance"] == holder_id
        ),
        5,
        "the other instance's view of the zone",
    )
    holder.stop(signal.SIGKILL)
    killed = time.monotonic()

    # Written on the survivor while the zone moves to it: the zone resumes there and gets it.
    assert survivor.put("/meshes/default/secrets/after", _secret("after", "3")).status_code == 201
    wait_for(lambda: z.secret("default", "after"), 20, "the write after the kill on the zone")
    st = wait_for(
        lambda: (
            (s := z.get_json("/status"))["connected"]
            and s["global"]["instanceId"] == pg.instance_id(survivor)
            and s
        ),
        20,
        "the zone connected to the surviving instance",
    )
    assert st["snapshots"] == snapshots and st["lastSync"]["mode"] == "resume", st
    assert time.monotonic() - killed < 10  # "within a few seconds", with a loaded machine's margin
    assert z.secret("default", "from-a") and z.secret("default", "from-b")
    view = survivor.get_json("/zones/z1")
    assert view["status"] == "Online" and view["globalInstance"] == pg.instance_id(survivor)
    env = {**os.environ, "KDSCTL_API_URL": survivor.api_url, "KDSCTL_TOKEN": survivor.admin_token}
    out = subprocess.run(
        [str(BIN / "kdsctl"), "inspect", "zones"], env=env, capture_output=True, text=True,
        timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "GLOBAL INSTANCE" in out and pg.instance_id(survivor) in out, out


def test_a_token_revoked_on_one_instance_ends_the_stream_another_holds(pg: Pg) -> None:
    a = pg.start_global("ga")
    b = pg.start_global("gb")
    token_id, token = pg.token(a, "z2")
    z = pg.start_zone("z2", token, "ga")  # held by a only
    assert b.http.post(f"/zone-tokens/{token_id}/revoke").status_code == 200
    a.wait_event("zone token revoked on another instance", token_id=token_id)
    wait_for(lambda: not z.get_json("/status")["connected"], 10, "the zone's stream ended")


def test_postgresql_killed_and_back(tmp_path: Path) -> None:
    """PostgreSQL crashes (immediate stop): global refuses writes with 503 naming the store,
    logs it, and once the server is back accepts writes again and the zone gets them; a
    SIGTERM then stops it in time."""
    bindir = find_bindir()
    assert bindir is not None, "run scripts/setup-postgres"
    server = PgServer(bindir)
    server.start()
    pg = Pg(tmp_path)
    pg.url = server.url
    try:
        g = pg.start_global("ga")
        _, token = pg.token(g, "z3")
        z = pg.start_zone("z3", token, "ga")
        server.stop("immediate")
        r = g.put("/meshes/default/secrets/while-down", _secret("while-down", "x"))
        assert r.status_code == 503 and "PostgreSQL" in r.json()["detail"], r.text
        g.wait_event("PostgreSQL unreachable: writes refused, wake-ups paused")
        assert z.get_json("/meshes/default")  # the zone keeps serving what it holds
        server.start()
        wait_for(
            lambda: (
                g.put("/meshes/default/secrets/after", _secret("after", "y")).status_code == 201
            ),
            20,
            "a write once PostgreSQL is back",
        )
        g.wait_event("PostgreSQL reachable again")
        wait_for(lambda: z.secret("default", "after"), 20, "the write on the zone")
        assert g.stop() == 0
    finally:
        pg.close()
        server.remove()


def test_a_global_started_before_postgresql_waits_for_it(tmp_path: Path) -> None:
    """Global started while its PostgreSQL is down logs each failed try, starts once the
    server does, and takes writes; one given no wait exits at the first failure; one stopped
    while it waits exits at once."""
    bindir = find_bindir()
    assert bindir is not None, "run scripts/setup-postgres"
    server = PgServer(bindir)  # made, not started
    pg = Pg(tmp_path)
    pg.url = server.url
    try:
        g = pg.start_global("ga", "--postgres-start-wait", "2m", wait=False)
        first = g.wait_event("store unreachable at start: trying again", 20)
        assert first["store"] == f"postgresql://127.0.0.1:{server.port}/postgres schema {pg.schema}"
        assert "Connection refused" in first["error"] and first["gives_up_after_s"] == 120
        g.wait_event("store unreachable at start: trying again", 20, attempt=2)
        assert g.proc is not None and g.proc.poll() is None
        server.start()
        wait_for(g._ready, 40, "global's API once PostgreSQL is up")
        g.http.headers["Authorization"] = f"Bearer {g.admin_token}"
        assert g.wait_event("store reachable: starting")["attempts"] >= 3
        r = g.put("/meshes/default/secrets/after-wait", _secret("after-wait", "v"))
        assert r.status_code == 201, r.text

        pg.url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing there
        at_once = pg.start_global("gb", "--postgres-start-wait", "0", wait=False)
        assert at_once.proc is not None and at_once.proc.wait(30) == 1
        assert at_once.events("cannot start") and not at_once.events(
            "store unreachable at start: trying again"
        )
        waiting = pg.start_global("gc", wait=False)
        waiting.wait_event("store unreachable at start: trying again", 20)
        started = time.monotonic()
        assert waiting.stop(timeout=10) == 0
        assert time.monotonic() - started < 8
        assert waiting.events("stopped while waiting for the store")
    finally:
        pg.close()
        server.remove()


def test_a_refused_login_or_a_missing_database_ends_the_start_at_once(tmp_path: Path) -> None:
    """A wrong password will not fix itself: global exits 1 at the first try, with one
    error naming the user and the server (never the password), instead of trying again for
    the whole start wait (5 minutes by default). So does a database that does not exist."""
    bindir = find_bindir()
    assert bindir is not None, "run scripts/setup-postgres"
    server = PgServer(bindir)
    hba = server.data / "pg_hba.conf"
    hba.write_text("host all kds_pw 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    server.start()
    pg = Pg(tmp_path)
    try:
        subprocess.run([str(bindir / "psql"), "-q", "-d", server.url, "-c",
                        "CREATE ROLE kds_pw LOGIN PASSWORD 'the-right-one'"], check=True)  # fmt: skip
        wrong = tmp_path / "db-password"
        wrong.write_text("not-the-password\n")
        wrong.chmod(0o600)
        pg.url = f"postgresql://kds_pw@127.0.0.1:{server.port}/postgres"
        for name, extra in (
            ("ga", ("--postgres-password-file", str(wrong))),
            ("gb", ()),
        ):
            if name == "gb":
                pg.url = f"postgresql://postgres@127.0.0.1:{server.port}/no_such_db"
            started = time.monotonic()
            g = pg.start_global(name, *extra, wait=False)
            assert g.proc is not None and g.proc.wait(30) == 1
            assert time.monotonic() - started < 15
            assert not g.events("store unreachable at start: trying again")
            [failed] = g.events("cannot start")
            assert f"PostgreSQL at postgresql://127.0.0.1:{server.port}/" in failed["error"]
            if name == "ga":
                assert "refused to log user 'kds_pw' in" in failed["error"]
                assert "password authentication failed" in failed["error"]
            else:
                assert "has no database 'no_such_db'" in failed["error"]
        assert "not-the-password" not in (tmp_path / "ga.log").read_text()
    finally:
        pg.close()
        server.remove()


def _plant_newer_kind(url: str, schema: str, kind: str) -> int:
    """Commit what a newer kds-sync sharing the store would for a kind this one does not
    know: its row and change-log entry, the head moved to it, the instances told."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(f"SET LOCAL search_path TO {schema}")
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (lock_key(schema), LOCK_WRITE))
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        rev, change = int(meta["head"]) + 1, b"\x0a\x05newer"
        chain = next_chain(bytes.fromhex(meta["chain"]), change)
        row = (kind, "default", "p1", "global", b"", "{}", "{}", "t", "t", rev, "", change)
        conn.execute(
            "INSERT INTO resources (kind, mesh, name, origin, data, labels, spec, creation_time,"
            " modification_time, version, sealed, wire, digest) VALUES"
            " (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (*row, row_digest(row)),
        )
        entry = (rev, kind, "default", "p1", False, change, chain, time.time(), "")
        conn.execute(
            "INSERT INTO changelog (revision, kind, mesh, name, deleted, change, chain,"
            " committed_at, sealed, digest) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (*entry, log_digest(entry)),
        )
        conn.execute("UPDATE meta SET value=%s WHERE key='head'", (str(rev),))
        conn.execute("UPDATE meta SET value=%s WHERE key='chain'", (chain.hex(),))
        conn.execute("SELECT pg_notify(%s, 'change')", (schema,))
    return rev


def test_a_kind_a_newer_instance_wrote_is_skipped_and_global_goes_on(pg: Pg) -> None:
    """A newer global sharing the store commits a resource of a kind this one does not know:
    this global logs it once, never sends it (a zone resuming through it and one taking a
    snapshot get the rest), never lists it, and keeps running, after a restart too."""
    g = pg.start_global("ga")
    _, token = pg.token(g, "z1")
    z1 = pg.start_zone("z1", token, "ga")
    assert g.put("/meshes/default/secrets/s1", _secret("s1", "1")).status_code == 201
    wait_for(lambda: z1.secret("default", "s1"), what="s1 on the zone")
    rev = _plant_newer_kind(pg.url, pg.schema, "MeshTrafficPermission")
    skipped = g.wait_event("resources of a kind this version does not know are skipped")
    assert skipped["kind"] == "MeshTrafficPermission"
    assert g.put("/meshes/default/secrets/s2", _secret("s2", "2")).status_code == 201
    wait_for(lambda: z1.get_json("/status")["appliedRevision"] == rev + 1, what="z1 past it")
    _, token2 = pg.token(g, "z2")
    z2 = pg.start_zone("z2", token2, "ga")  # a snapshot
    for z in (z1, z2):
        wait_for(lambda z=z: z.secret("default", "s2"), what=f"s2 on {z.name}")
        names = sorted(i["name"] for i in z.get_json("/meshes/default/secrets")["items"])
        assert names == ["s1", "s2"]
        assert not z.events("rejected a synced resource")  # nothing it cannot read was sent
    assert sorted(i["name"] for i in g.get_json("/meshes/default/secrets")["items"]) == [
        "s1",
        "s2",
    ]
    assert g.get_json("/zones/_resources") is not None
    assert g.proc is not None and g.proc.poll() is None
    assert len(g.events("resources of a kind this version does not know are skipped")) == 1
    assert g.stop() == 0
    g.start()  # opened again: nothing damaged, nothing failed
    assert g.put("/meshes/default/secrets/s3", _secret("s3", "3")).status_code == 201
    wait_for(lambda: z1.secret("default", "s3"), 20, "s3 on z1 after global's restart")
    assert not [e for e in g.events("damaged row in store: it is not served")]


def test_a_signing_key_added_on_one_instance_and_removed_on_another(pg: Pg) -> None:
    """A key rotated in on one instance signs tokens the other accepts; removed on the
    other instance, it ends the stream the first holds with a token it signed."""
    a = pg.start_global("ga")
    b = pg.start_global("gb")
    r = a.http.post("/zone-token-signing-keys")
    assert r.status_code == 201, r.text
    key = r.json()["name"]
    _, token = pg.token(a, "z4")  # signed by the new key
    wait_for(lambda: any(k["name"] == key for k in b.get_json("/zone-token-signing-keys")["items"]),
             5, "the other instance knows the new key")  # fmt: skip
    z = pg.start_zone("z4", token, "ga")
    assert b.http.delete(f"/zone-token-signing-keys/{key}").status_code == 200
    a.wait_event("signing key removed on another instance", key=key)
    wait_for(lambda: not z.get_json("/status")["connected"], 10, "the zone's stream ended")


def test_the_instance_not_holding_a_zone_shows_what_the_zone_refuses(pg: Pg) -> None:
    """A zone keeps a Mesh global deleted while its own secret lives in it. kdsctl wait
    synced asked of the instance that does not hold the zone's stream exited 0 ("synced"):
    the refusals lived in the holder's memory only. Saved with the zone's status, both
    instances show them, and the holder's restart does not lose them."""
    a = pg.start_global("ga", "--anti-entropy-interval", "1s")
    b = pg.start_global("gb")
    _, token = pg.token(a, "z5")
    z = pg.start_zone("z5", token, "ga")
    assert a.put("/meshes/m1", {"type": "Mesh", "name": "m1"}).status_code == 201
    wait_for(lambda: z.get_json("/meshes/m1"), what="m1 on the zone")
    mine = {"type": "Secret", "mesh": "m1", "name": "mine", "data": b64("local")}
    assert z.put("/meshes/m1/secrets/mine", mine).status_code == 201
    assert b.http.delete("/meshes/m1").status_code == 200
    wait_for(lambda: _sync(b, "z5")["refused"], 20, "the refusal seen on gb")
    view = _sync(b, "z5")
    assert view["refusedCount"] == 1 and [r["key"] for r in view["refused"]] == ["Mesh:m1"]
    assert "zone-local" in view["refused"][0]["reason"]
    env = {**os.environ, "KDSCTL_API_URL": b.api_url, "KDSCTL_TOKEN": b.admin_token}
    r = subprocess.run(
        [str(BIN / "kdsctl"), "wait", "synced", "--timeout", "5s"], env=env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 3 and "z5: refuses 1 change(s)" in r.stderr, r.stderr

    # The holder restarts: the saved refusal stays, and ends once the zone applies the delete.
    a.stop()
    a.start()
    assert a.get_json("/zones/z5")["refusedCount"] == 1
    assert z.http.delete("/meshes/m1/secrets/mine").status_code == 200
    wait_for(lambda: z.http.get("/meshes/m1").status_code == 404, 30, "the Mesh deleted")
    wait_for(lambda: _sync(b, "z5")["refused"] == [], 20, "the refusal over on gb")
    assert a.get_json("/zones/z5")["refusedCount"] == 0


def _sync(g: Daemon, zone: str) -> Any:
    return g.get_json(f"/zones/{zone}/_overview")["kdsSync"]
