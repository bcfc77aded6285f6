"""A daemon on the SQLite store never loads the PostgreSQL driver (psycopg and its pool add
about 7 MB to its resident memory); a store on PostgreSQL loads it when opened."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_sqlite_daemons_do_not_import_psycopg(tmp_path: Path) -> None:
    """Every module a daemon and kdsctl load, the configuration resolved to a store, and a
    store of each role opened on SQLite: psycopg is not among the loaded modules."""
    loaded = _run(
        f"""
        import sys
        from pathlib import Path
        import globalcp.app, globalcp.cli, zonecp.app, zonecp.cli, kdsctl.cli
        from kds.config import GlobalConfig
        from kds.store import open_global_store, open_zone_store
        from kds.store.target import store_location
        d = Path({str(tmp_path)!r})
        where = store_location(GlobalConfig(), d)
        assert where == d / "global.db", where
        open_global_store(where).close()
        open_zone_store(d / "zone.db").close()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "psycopg_pool")))
        """
    )
    assert loaded == "[]"


def test_postgres_target_loads_the_backend_when_opened() -> None:
    """Naming a PostgreSQL store costs nothing; resolving it from the configuration reads
    the URL with psycopg's own parser, and the backend's target is the same class."""
    out = _run(
        """
        import sys
        from pathlib import Path
        from kds.config import GlobalConfig
        from kds.store.target import store_location
        from kds.store.pg_target import PgTarget
        cfg = GlobalConfig(store="postgres", postgres_url="postgresql://kds@127.0.0.1:1/kds")
        t = store_location(cfg, Path("/nonexistent"))
        assert isinstance(t, PgTarget) and t.schema == "kds_global", t
        from kds.store.postgres import PgTarget as BackendTarget
        assert BackendTarget is PgTarget
        print("psycopg" in sys.modules)
        """
    )
    assert out == "True"
