"""A PostgreSQL server that refuses the login (a wrong password, an unknown role) or has no
such database ends a daemon's start at once, with an error naming the user and the server,
never the password; a server that cannot be reached, or is still starting, is waited for."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kds.errors import StoreError, StoreUnavailable
from kds.notify import Notifier
from kds.store import PgTarget, open_global_store
from kds.store.postgres._refused import refusal
from kds.store_start import StartRetry
from tests.pgserver import PgServer, find_bindir

PASSWORD = "right-" + uuid.uuid4().hex[:8]
WRONG = "wrong-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    """A server of its own: role ``kds_pw`` logs in with a password (scram), the rest as the
    test servers do (trust on loopback)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server binaries are not installed: run scripts/setup-postgres")
    s = PgServer(bindir)
    try:
        hba = s.data / "pg_hba.conf"
        hba.write_text("host all kds_pw 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        s.start()
        with psycopg.connect(s.url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE kds_pw LOGIN PASSWORD '{PASSWORD}' CREATEDB")
            conn.execute("GRANT CREATE ON DATABASE postgres TO kds_pw")
        yield s
    finally:
        s.remove()


def _url(s: PgServer, user: str, password: str | None = None, db: str = "postgres") -> str:
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@127.0.0.1:{s.port}/{db}"


def _open(url: str, password: str | None = None) -> Any:
    return open_global_store(PgTarget(url, "kds_global", password=password))


async def _start(url: str, password: str | None = None, wait: float = 30) -> tuple[Any, float, int]:
    """The store opened as a daemon starts (StartRetry.open), waiting up to ``wait``: (outcome, seconds, tries)."""
    tries = 0

    def opener() -> Any:
        nonlocal tries
        tries += 1
        return _open(url, password)

    started = time.monotonic()
    target = PgTarget(url, "kds_global", password=password)
    try:
        start = StartRetry(
            target, wait, asyncio.Event(), Notifier(None), first_wait=0.05, max_wait=0.1
        )
        got: Any = await start.open(opener)
    except Exception as e:
        got = e
    return got, time.monotonic() - started, tries


def test_the_right_password_opens_the_store(server: PgServer) -> None:
    _open(_url(server, "kds_pw"), password=PASSWORD).close()


@pytest.mark.parametrize("in_url", [True, False], ids=["in-url", "password-file"])
async def test_a_wrong_password_ends_the_start_at_once(server: PgServer, in_url: bool) -> None:
    url = _url(server, "kds_pw", WRONG if in_url else None)
    got, took, tries = await _start(url, None if in_url else WRONG)
    assert isinstance(got, StoreError) and not isinstance(got, StoreUnavailable), repr(got)
    assert tries == 1 and took < 5
    message = str(got)
    assert f"127.0.0.1:{server.port}/postgres" in message and "'kds_pw'" in message
    assert 'password authentication failed for user "kds_pw"' in message
    assert "Trying again cannot fix this" in message
    assert WRONG not in message and PASSWORD not in message


async def test_an_unknown_role_ends_the_start_at_once(server: PgServer) -> None:
    got, _, tries = await _start(_url(server, "nobody_here"))
    assert isinstance(got, StoreError) and not isinstance(got, StoreUnavailable), repr(got)
    assert tries == 1
    assert "refused to log user 'nobody_here' in" in str(got)
    assert 'role "nobody_here" does not exist' in str(got)


async def test_a_missing_database_is_named_and_ends_the_start(server: PgServer) -> None:
    got, _, tries = await _start(_url(server, "postgres", db="no_such_db"))
    assert isinstance(got, StoreError) and not isinstance(got, StoreUnavailable), repr(got)
    assert tries == 1
    assert str(got) == (
        f"PostgreSQL at postgresql://127.0.0.1:{server.port}/no_such_db schema kds_global has "
        "no database 'no_such_db': create it (CREATE DATABASE) or name an existing one in "
        "--postgres-url"
    )


async def test_a_database_the_role_may_not_connect_to_ends_the_start(server: PgServer) -> None:
    """PostgreSQL refuses a role without the CONNECT privilege while connecting (42501), so
    libpq gives no SQLSTATE; the start waited out its whole wait, as for a server away."""
    db = "no_connect_" + uuid.uuid4().hex[:6]
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
        conn.execute(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC")
    got, took, tries = await _start(_url(server, "kds_pw", PASSWORD, db=db))
    assert isinstance(got, StoreError) and not isinstance(got, StoreUnavailable), repr(got)
    assert tries == 1 and took < 5
    message = str(got)
    assert f"refused user 'kds_pw' the database '{db}'" in message
    assert f'permission denied for database "{db}"' in message
    assert "GRANT CONNECT" in message and PASSWORD not in message


async def test_a_server_that_is_not_there_is_still_waited_for(server: PgServer) -> None:
    url = f"postgresql://kds_pw@127.0.0.1:{server.port + 1}/postgres"  # nothing listens
    got, took, tries = await _start(url, WRONG, wait=0.5)
    assert isinstance(got, StoreUnavailable) and got.away, repr(got)
    assert tries >= 3 and took >= 0.4


def _failed(*parts: str) -> psycopg.OperationalError:
    return psycopg.OperationalError("connection failed: " + "\n".join(parts))


@pytest.mark.parametrize(
    "message",
    [
        'connection to server at "db", port 5432 failed: FATAL:  the database system is '
        "starting up",
        'connection to server at "db", port 5432 failed: FATAL:  the database system is '
        "shutting down",
        'connection to server at "db", port 5432 failed: FATAL:  sorry, too many clients already',
        'connection to server at "db", port 5432 failed: Connection refused',
        # One host refuses the login, the other cannot be reached: it may come back.
        'connection to server at "a", port 5432 failed: FATAL:  password authentication failed '
        'for user "kds"\nconnection to server at "b", port 5432 failed: Connection refused',
    ],
)
def test_what_may_pass_is_no_refusal(message: str) -> None:
    assert refusal(_failed(message), "postgresql://kds@db/kds", "db") is None


@pytest.mark.parametrize(
    "message",
    [
        'connection to server at "db", port 5432 failed: FATAL:  no pg_hba.conf entry for host '
        '"10.0.0.1", user "kds", database "kds", no encryption',
        'connection to server at "db", port 5432 failed: FATAL:  role "kds" is not permitted to '
        "log in",
        'connection to server at "db", port 5432 failed: fe_sendauth: no password supplied',
        'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: FATAL:  Peer '
        'authentication failed for user "kds"',
    ],
)
def test_refused_logins(message: str) -> None:
    refused = refusal(_failed(message), "postgresql://kds:secret@db/kds", "db")
    assert refused is not None and "refused to log user 'kds' in" in str(refused)
    assert "secret" not in str(refused)


def test_a_refusal_by_sqlstate() -> None:
    assert refusal(psycopg.errors.InvalidPassword(), "postgresql://kds@db/kds", "db") is not None
    assert "no database 'kds'" in str(
        refusal(psycopg.errors.InvalidCatalogName(), "postgresql://kds@db/kds", "db")
    )
    assert refusal(psycopg.errors.CannotConnectNow(), "postgresql://kds@db/kds", "db") is None


async def test_a_running_store_whose_login_is_refused_says_so(
    server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password changed on the server while the store runs: connections open go on, and
    once they are gone the pool finds none. Its calls answered "unreachable (no connection
    within the pool's timeout)", as for a server that is away; they now name the refusal
    after the store's own try (in a thread of its own, so no call waits for it)."""
    import kds.store.postgres._db as db
    import kds.store.postgres._refused as refused_mod

    monkeypatch.setattr(db, "CONNECTION_WAIT_S", 0.5)
    monkeypatch.setattr(refused_mod, "DIAGNOSE_EVERY_S", 0.2)
    role = "kds_rot_" + uuid.uuid4().hex[:6]
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}' CREATEDB")
        conn.execute(f"GRANT CREATE ON DATABASE postgres TO {role}")
    hba = server.data / "pg_hba.conf"
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    store = open_global_store(PgTarget(_url(server, role), "kds_rot", password=PASSWORD))
    try:
        assert await store.head() >= 0
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} PASSWORD '{WRONG}'")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        deadline = time.monotonic() + 20
        message = ""
        while time.monotonic() < deadline:
            try:
                await store.head()
            except StoreUnavailable as e:
                message = str(e)
                if "refused to log user" in message:
                    break
            await asyncio.sleep(0.1)
        assert f"refused to log user '{role}' in" in message, message
        assert "password authentication failed" in message and "restart" in message
        assert PASSWORD not in message and WRONG not in message
    finally:
        store.close()
