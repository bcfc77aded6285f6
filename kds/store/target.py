"""Where a daemon's store lives, from its options: a SQLite file in the data dir, or a
schema on PostgreSQL (``--store postgres``).

The PostgreSQL password comes from ``--postgres-password-file`` (or the URL, or libpq's own
means: ~/.pgpass, PGPASSWORD), never from a flag's value, so it is not in the process list.
A marker in the data dir records the store id, so an instance pointed at an empty schema
where it used a store refuses to start instead of serving an empty store to every zone.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import structlog

from kds.config import GlobalConfig, ZoneConfig
from kds.errors import ConfigError
from kds.secret_files import check_secret_file
from kds.store.pg_target import PgTarget

__all__ = ["default_schema", "store_location"]

MARKER = "postgres-store.id"

log = structlog.get_logger("kds.store")


def default_schema(role: str, zone: str = "") -> str:
    """kds_global, or kds_zone_<zone> (its dots and dashes as _; hashed past 63 characters)."""
    if role == "global":
        return "kds_global"
    name = "kds_zone_" + re.sub(r"[^a-z0-9_]", "_", zone.lower())
    if len(name) > 63:
        name = name[:46] + "_" + hashlib.blake2b(zone.encode(), digest_size=8).hexdigest()
    return name


def store_location(cfg: GlobalConfig | ZoneConfig, data_dir: Path) -> Path | PgTarget:
    """The store's file (SQLite) or PostgreSQL target, from ``cfg``; ConfigError naming the
    option when they do not fit together."""
    role = "global" if isinstance(cfg, GlobalConfig) else "zone"
    if cfg.store == "sqlite":
        given = [
            flag
            for flag, value in (
                ("--postgres-url", cfg.postgres_url),
                ("--postgres-password-file", cfg.postgres_password_file),
                ("--postgres-schema", cfg.postgres_schema),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} given but --store is sqlite: add --store postgres"
            )
        return data_dir / f"{role}.db"
    if not cfg.postgres_url:
        raise ConfigError(
            "--store postgres needs --postgres-url (e.g. postgresql://kds@db.example:5432/kds"
            "?sslmode=verify-full&sslrootcert=/etc/kds/db-ca.pem)"
        )
    from psycopg.conninfo import conninfo_to_dict  # psycopg: only for a store on PostgreSQL

    if conninfo_to_dict(cfg.postgres_url).get("password"):
        log.warning(
            "--postgres-url holds a password: given as a flag it shows in the process list",
            fix="put it in a file (0600) given with --postgres-password-file",
        )
    password = None
    if cfg.postgres_password_file is not None:
        path = cfg.postgres_password_file
        check_secret_file(path, "--postgres-password-file")
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise ConfigError(f"--postgres-password-file {path}: cannot read: {e.strerror}") from e
        except UnicodeDecodeError:
            raise ConfigError(f"--postgres-password-file {path}: not UTF-8 text") from None
        password = lines[0] if lines else ""
        if not password:
            raise ConfigError(f"--postgres-password-file {path} is empty")
    zone = cfg.zone if isinstance(cfg, ZoneConfig) else ""
    return PgTarget(
        url=cfg.postgres_url,
        schema=cfg.postgres_schema or default_schema(role, zone),
        password=password,
        marker=data_dir / MARKER,
        application=f"kds-{role}cp",
    )
