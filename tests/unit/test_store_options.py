"""The store options: --store, --postgres-url, --postgres-password-file, --postgres-schema,
and a zone's several global addresses; each bad value or combination is refused naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kds.config import GlobalConfig, ZoneConfig, load_config
from kds.errors import ConfigError
from kds.store import PgTarget
from kds.store.target import default_schema, store_location

URL = "postgresql://kds@db.example:5432/kds?sslmode=verify-full&sslrootcert=/etc/kds/ca.pem"


def test_sqlite_is_the_default_and_refuses_postgres_options(tmp_path: Path) -> None:
    cfg = load_config(GlobalConfig, None, {}, {})
    assert store_location(cfg, tmp_path) == tmp_path / "global.db"
    cfg = load_config(GlobalConfig, None, {"postgres_url": URL}, {})
    with pytest.raises(ConfigError, match="--postgres-url given but --store is sqlite"):
        store_location(cfg, tmp_path)


def test_postgres_target_keeps_the_url_and_reads_the_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored\n")
    pw.chmod(0o600)
    given = {"store": "postgres", "postgres_url": URL, "postgres_password_file": str(pw)}
    target = store_location(load_config(GlobalConfig, None, given, {}), tmp_path)
    assert isinstance(target, PgTarget)
    assert (target.url, target.schema, target.password) == (URL, "kds_global", "s3cret")
    assert target.marker == tmp_path / "postgres-store.id"
    zone = load_config(ZoneConfig, None, {**given, "zone": "eu-west.1"}, {})
    target = store_location(zone, tmp_path)
    assert isinstance(target, PgTarget) and target.schema == "kds_zone_eu_west_1"


def test_postgres_needs_a_url_and_a_readable_password_file(tmp_path: Path) -> None:
    cfg = load_config(GlobalConfig, None, {"store": "postgres"}, {})
    with pytest.raises(ConfigError, match="--store postgres needs --postgres-url"):
        store_location(cfg, tmp_path)
    given = {"store": "postgres", "postgres_url": URL}
    cfg = load_config(GlobalConfig, None, {**given, "postgres_password_file": "/nonexistent"}, {})
    with pytest.raises(ConfigError, match="--postgres-password-file /nonexistent: cannot read"):
        store_location(cfg, tmp_path)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("store", "mysql", "--store .*must be sqlite or postgres"),
        ("postgres_url", "db.example:5432", "--postgres-url .*must look like postgresql://"),
        ("postgres_url", "postgresql://u:pw@h/d?bogus=1", "not a valid PostgreSQL URL"),
        ("postgres_schema", "Bad-Schema", "--postgres-schema .*not a schema name"),
    ],
)
def test_bad_store_options_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        load_config(GlobalConfig, None, {name: value}, {})
    assert "pw@" not in str(e.value)  # a password in a bad URL is never echoed


def test_long_zone_names_get_a_schema_within_postgres_limit() -> None:
    name = default_schema("zone", "z" * 200)
    assert len(name) <= 63 and name.startswith("kds_zone_")
    assert name != default_schema("zone", "z" * 199)


def test_a_zone_takes_several_global_addresses_with_one_scheme() -> None:
    cfg = load_config(
        ZoneConfig, None, {"global_address": "grpcs://a:1, grpcs://b:2", "zone": "z"}, {}
    )
    assert cfg.global_address == "grpcs://a:1,grpcs://b:2"
    with pytest.raises(ConfigError, match="same scheme"):
        load_config(ZoneConfig, None, {"global_address": "grpcs://a:1,grpc://b:2"}, {})
