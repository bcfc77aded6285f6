"""A PostgreSQL server that answered a connection attempt with a refusal that trying again
cannot fix: the login refused (SQLSTATE class 28: a wrong password, an unknown role, no
pg_hba.conf entry), the database missing (3D000), or the role without the CONNECT privilege
on it (42501 while connecting).

A daemon starting waits out a server it cannot reach (kds.store_start), as the server may
still be starting (connection refused, 57P03 "the database system is starting up"). A
refusal is another matter: the server is up and said no, and says no again at every try, so
the start ends at once with an error naming the user, the server and the problem (never the
password).

libpq reports an error during connection set-up as a message only, without its SQLSTATE
(psycopg's ``sqlstate`` is None then), so a refusal is told by PostgreSQL's own message
texts (the server's, or libpq's when no password was given). A server whose ``lc_messages``
translates them is not recognised: its refusals are waited out as an unreachable server's
are, each logged with the server's reason, until the start wait ends.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from kds.errors import StoreError
from kds.text import safe_text

__all__ = ["Diagnosis", "refusal"]

# Message texts of refused logins (class 28): the server's (``<method> authentication
# failed``, pg_hba.conf's verdicts, an unknown role or one without LOGIN) and libpq's when
# the server asked for a password and none was given.
_LOGIN = (
    "authentication failed for user",
    "no pg_hba.conf entry for",
    "pg_hba.conf rejects",
    "is not permitted to log in",
    "connection requires a valid client certificate",
    "fe_sendauth: no password supplied",
)
_ROLE_MISSING = re.compile(r'role ".*" does not exist')
_DATABASE_MISSING = re.compile(r'database ".*" does not exist')
_NO_CONNECT = re.compile(r'permission denied for database ".*"')

# libpq's message for a URL of several hosts holds one part per host tried.
_ATTEMPT = re.compile(r"connection to server (?:at|on) ")
_SERVER_SAYS = re.compile(r"(?:FATAL|ERROR):\s+(.*)")


def _kind(text: str) -> str | None:
    """Whether one connection attempt's message is a refused "login", a missing "database",
    a database the role may not "connect" to, or neither (None)."""
    if any(m in text for m in _LOGIN) or _ROLE_MISSING.search(text):
        return "login"
    if _DATABASE_MISSING.search(text):
        return "database"
    if _NO_CONNECT.search(text):
        return "connect"
    return None


def _classify(e: psycopg.Error) -> str | None:
    state = e.sqlstate
    if state is not None:
        return "login" if state.startswith("28") else "database" if state == "3D000" else None
    text = str(e)
    parts = _ATTEMPT.split(text)[1:] or [text]
    kinds = {_kind(p) for p in parts}
    # Every host tried refused the same way; one that could not be reached may come back.
    return kinds.pop() if len(kinds) == 1 else None


def _reason(e: psycopg.Error) -> str:
    """The server's words for the first refusal: one line, bounded (never a password: neither
    PostgreSQL nor libpq puts it in a message)."""
    line = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    said = _SERVER_SAYS.search(line)
    return safe_text((said.group(1) if said else line).strip(), 200)


def _setting(e: psycopg.Error, url: str, name: str) -> str:
    """The user or database libpq used (it fills in defaults: the OS user, PGUSER ...), else
    the URL's."""
    used = getattr(e.pgconn, name, None) if e.pgconn is not None else None
    if isinstance(used, bytes) and used:
        return used.decode(errors="replace")[:100]
    try:
        given = conninfo_to_dict(url).get("user" if name == "user" else "dbname")
    except psycopg.ProgrammingError:
        given = None
    return str(given or "?")[:100]


def refusal(e: psycopg.Error, url: str, location: str) -> StoreError | None:
    """The store's error for ``e`` if it is a refused login or a missing database, else None."""
    kind = _classify(e)
    if kind == "login":
        user = _setting(e, url, "user")
        return StoreError(
            f"PostgreSQL at {location} refused to log user {user!r} in: {_reason(e)}. "
            "Trying again cannot fix this: check the user and password (--postgres-url, "
            "--postgres-password-file, PGPASSWORD or ~/.pgpass) and the server's pg_hba.conf"
        )
    if kind == "database":
        db = _setting(e, url, "db")
        return StoreError(
            f"PostgreSQL at {location} has no database {db!r}: create it (CREATE DATABASE) "
            "or name an existing one in --postgres-url"
        )
    if kind == "connect":
        user, db = _setting(e, url, "user"), _setting(e, url, "db")
        return StoreError(
            f"PostgreSQL at {location} refused user {user!r} the database {db!r}: "
            f"{_reason(e)}. Trying again cannot fix this: GRANT CONNECT ON DATABASE to the "
            "user, or name another user in --postgres-url"
        )
    return None


# How often a store whose pool found no connection tries one of its own to learn why.
DIAGNOSE_EVERY_S = 10.0


class Diagnosis:
    """Why a running store's pool finds no connection, when the server refuses it: the
    pool's own attempts report nothing but a timeout, and connections already open keep
    working after a password is changed on the server or CONNECT revoked, until the pool
    replaces them. A call that met the timeout asks; a thread of its own tries one
    connection (at most one every DIAGNOSE_EVERY_S), so no call waits for it, and the calls
    after it get the answer."""

    def __init__(self, url: str, kwargs: dict[str, Any], location: str):
        self._url, self._kwargs, self._location = url, kwargs, location
        self._lock = threading.Lock()
        self._at = -DIAGNOSE_EVERY_S
        self._trying = False
        self._found: StoreError | None = None

    def refused(self) -> StoreError | None:
        """The refusal the last try met (None: it connected, failed another way, or none
        finished yet); starts the next try when the last is older than DIAGNOSE_EVERY_S."""
        with self._lock:
            now = time.monotonic()
            if not self._trying and now - self._at >= DIAGNOSE_EVERY_S:
                self._at, self._trying = now, True
                threading.Thread(target=self._try, name="kds-pg-diagnosis", daemon=True).start()
            return self._found

    def _try(self) -> None:
        found = None
        try:
            psycopg.connect(self._url, **{**self._kwargs, "connect_timeout": 5}).close()
        except psycopg.Error as e:
            found = refusal(e, self._url, self._location)
        except Exception:  # any other failure says nothing of a refusal
            found = None
        with self._lock:
            self._found, self._trying = found, False
