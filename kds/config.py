"""Daemon configuration: frozen objects built once at start-up, then passed down.

Sources, strongest first: command-line flags, environment variables, the YAML file given with
``--config``, built-in defaults. One table of options per daemon (the dataclass fields and
their metadata) drives the click options, the environment variable names, the file keys and
the ``--help`` text, so the four can never disagree. Nothing else reads ``os.environ``.

File keys are the flag names without the leading dashes (``data-dir: /var/lib/kds``);
an unknown key or a bad value is an error naming the key and the source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from kds.config_address import parse_address, parse_global_address
from kds.config_file import read_config_file
from kds.config_store import postgres_url, schema_name, store_backend
from kds.config_values import (
    ack_delay,
    duration_from,
    format_duration,
    format_size,
    message_bytes,
    optional_path,
    parse_bool,
    parse_duration,
    parse_log_format,
    parse_log_level,
    parse_names,
    parse_path,
    parse_size,
    parse_zone_name,
    positive_int,
)
from kds.errors import ConfigError

__all__ = [
    "GlobalConfig",
    "ZoneConfig",
    "click_options",
    "format_duration",
    "format_size",
    "load_config",
    "parse_address",
    "parse_duration",
    "parse_size",
]


def opt(
    default: Any, parse: Callable[[object], Any], help: str, metavar: str = "", flag: bool = False
) -> Any:
    meta = {"parse": parse, "help": help, "metavar": metavar, "flag": flag}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class _Common:
    log_level: str = opt(
        "info", parse_log_level, "Log level: debug, info, warning or error.", "LEVEL"
    )
    log_format: str = opt(
        "console",
        parse_log_format,
        "Log format: console (human) or json (one object a line).",
        "FMT",
    )
    max_data_bytes: int = opt(
        1024 * 1024, parse_size, "Largest decoded secret value accepted (e.g. 1MiB).", "SIZE"
    )
    max_message_bytes: int = opt(
        4 * 1024 * 1024,
        message_bytes,
        "Largest sync message sent or received; batches are split to fit it. At least 16KiB.",
        "SIZE",
    )
    keepalive_interval: float = opt(
        3.0,
        duration_from(1.0, "each ping is a write on both ends of every stream"),
        "Ping the peer after this much silence on the sync stream. At least 1s.",
        "DURATION",
    )
    keepalive_timeout: float = opt(
        2.0,
        duration_from(0.1, "a ping cannot be answered sooner"),
        "Declare the peer dead when a ping is unanswered this long. At least 100ms.",
        "DURATION",
    )
    admin_token_file: Path | None = opt(
        None,
        optional_path,
        "File holding the API's admin bearer token (default: DATA_DIR/admin-token, created "
        "0600 at first start).",
        "FILE",
    )
    read_only_token_file: Path | None = opt(
        None,
        optional_path,
        "File holding the API's read-only bearer token, which reads metadata but never "
        "secret data (default: DATA_DIR/read-only-token, created 0600 at first start).",
        "FILE",
    )
    api_tls_cert_file: Path | None = opt(
        None,
        optional_path,
        "Serve the HTTP API over HTTPS (TLS 1.2+) with this certificate (PEM chain); "
        "replaced files are used for new connections without a restart. Default: plain HTTP.",
        "FILE",
    )
    api_tls_key_file: Path | None = opt(
        None, optional_path, "Private key of --api-tls-cert-file (PEM).", "FILE"
    )
    encryption_key_file: Path | None = opt(
        None,
        optional_path,
        "Encrypt secret data in the store with AES-256-GCM. The file holds base64 keys of 32 "
        "bytes, one a line: the first encrypts, all decrypt (rotate by adding a new first line).",
        "FILE",
    )
    store: str = opt(
        "sqlite",
        store_backend,
        "Where the store lives: sqlite (one file in DATA_DIR, one instance) or postgres "
        "(--postgres-url; several instances of this control plane may share it).",
        "BACKEND",
    )
    postgres_url: str = opt(
        "",
        postgres_url,
        "PostgreSQL for --store postgres, as a libpq URL: "
        "postgresql://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=CA.pem (libpq's "
        "parameters pass through). Give the password with --postgres-password-file, not here.",
        "URL",
    )
    postgres_password_file: Path | None = opt(
        None,
        optional_path,
        "File holding the PostgreSQL password (first line), so it is not in the process list.",
        "FILE",
    )
    postgres_start_wait: float = opt(
        300.0,
        parse_duration,
        "How long a daemon starting on --store postgres waits for the server to answer: it "
        "tries again with a backoff of 1s doubling up to 15s, logging each failure, then exits; "
        "0 gives up at the first failure.",
        "DURATION",
    )
    postgres_schema: str = opt(
        "",
        schema_name,
        "PostgreSQL schema holding this store; one store per schema, so a global and its zones "
        "may share a database. Default: kds_global on global, kds_zone_<zone> on a zone.",
        "NAME",
    )
    new_store: bool = opt(
        False,
        parse_bool,
        "Accept a new empty store where the data dir's marker (<store file>.id) says one was "
        "(the store file is missing or empty): only when its data is meant to be gone.",
        flag=True,
    )


@dataclass(frozen=True)
class GlobalConfig(_Common):
    data_dir: Path = opt(
        Path("globalcp-data"), parse_path, "Directory for the store (created 0700).", "DIR"
    )
    api_address: tuple[str, int] = opt(
        ("127.0.0.1", 5681), parse_address, "HTTP API listen address.", "HOST:PORT"
    )
    kds_address: tuple[str, int] = opt(
        ("127.0.0.1", 5685),
        parse_address,
        "Sync (gRPC) listen address zones dial; use 0.0.0.0:5685 to serve other hosts.",
        "HOST:PORT",
    )
    kds_max_connections: int = opt(
        1024,
        positive_int,
        "Most connections the sync port holds at once (one per connected zone, plus any "
        "still in their TLS handshake, at most 10 s, or without a stream, at most 60 s); "
        "raise it above the zone count.",
        "N",
    )
    log_size: int = opt(
        10_000,
        positive_int,
        "Changes kept in the change log; a zone further behind gets a full snapshot.",
        "N",
    )
    max_unacked: int = opt(
        64, positive_int, "Unacknowledged batches (1 MiB at most) in flight per zone.", "N"
    )
    snapshot_streams: int = opt(
        20,
        positive_int,
        "Zones sent a full snapshot at once (new zones, a replaced store); the others wait "
        "their turn in order, kept alive by heartbeats. Bounds global's memory in a storm.",
        "N",
    )
    ack_delay: float = opt(
        0.5,
        ack_delay,
        "How long a zone may hold an ack to cover the batches that follow with one message, "
        "when batches come within this of each other (global's view of the zone then lags "
        "by up to this; a single write, and every part of a bulk apply, is acknowledged at "
        "once); 0: an ack per batch. At most 1s.",
        "DURATION",
    )
    heartbeat_interval: float = opt(
        2.0,
        duration_from(0.1, "0 would send heartbeats without pause"),
        "Send global's revision to idle zones this often. At least 100ms.",
        "DURATION",
    )
    anti_entropy_interval: float = opt(
        300.0,
        parse_duration,
        "Compare each zone's synced copies with global's (a hash tree) this often, and at "
        "every connect that resumes, and repair what differs; 0 turns it off.",
        "DURATION",
    )
    tls_cert_file: Path | None = opt(
        None,
        optional_path,
        "Sync server certificate (PEM chain). Default: one global makes and signs with its "
        "own CA (DATA_DIR/ca.crt is the CA to give zones). Replaced files are used for new "
        "connections without a restart.",
        "FILE",
    )
    tls_key_file: Path | None = opt(
        None, optional_path, "Private key of --tls-cert-file (PEM).", "FILE"
    )
    tls_names: tuple[str, ...] = opt(
        (),
        parse_names,
        "Names and addresses (comma-separated) of the generated sync certificate. Default: "
        "this host's name, localhost, its addresses.",
        "NAMES",
    )
    kds_insecure: bool = opt(
        False,
        parse_bool,
        "Serve the sync stream in plaintext without zone tokens (for tests on one host only; "
        "a warning is logged at every start).",
        flag=True,
    )


@dataclass(frozen=True)
class ZoneConfig(_Common):
    zone: str = opt("", parse_zone_name, "This zone's name (RFC 1123 subdomain). Required.", "NAME")
    global_address: str = opt(
        "grpcs://127.0.0.1:5685",
        parse_global_address,
        "Global's sync address: grpcs:// (TLS), or grpc:// with --insecure. Several global "
        "instances sharing one PostgreSQL store: comma-separated; the zone dials the next "
        "when one fails.",
        "grpcs://HOST:PORT",
    )
    ca_file: Path | None = opt(
        None,
        optional_path,
        "CA certificate (PEM) that signed global's sync certificate, e.g. global's "
        "DATA_DIR/ca.crt. Default: the system's trusted CAs.",
        "FILE",
    )
    token_file: Path | None = opt(
        None,
        optional_path,
        "File holding this zone's token (kdsctl generate zone-token); read at every dial. "
        "Required unless --insecure.",
        "FILE",
    )
    insecure: bool = opt(
        False,
        parse_bool,
        "Dial global in plaintext (grpc://) without a token; a warning is logged at every start.",
        flag=True,
    )
    data_dir: Path = opt(
        Path("zonecp-data"), parse_path, "Directory for the store (created 0700).", "DIR"
    )
    api_address: tuple[str, int] = opt(
        ("127.0.0.1", 5682), parse_address, "HTTP API listen address.", "HOST:PORT"
    )
    reconnect_max_delay: float = opt(
        15.0,
        parse_duration,
        "Cap of the reconnect backoff, which doubles from 0.2s; up to a quarter more (at "
        "least 0.5s) is added as random jitter.",
        "DURATION",
    )


C = TypeVar("C", GlobalConfig, ZoneConfig)
_COMMON_NAMES = frozenset(f.name for f in dataclasses.fields(_Common))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def click_options(
    cls: type[C], env_prefix: str, shown: frozenset[str] | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """Decorate a click command with one option per config field (all default to None).
    With ``shown``, the other fields' options are still taken (so the daemon's own config
    file and environment work as they are) but left out of ``--help``."""

    def deco(fn: Callable[..., Any]) -> Any:
        # The daemon's own options first (zone, addresses, data dir), then the shared tuning.
        own = [f for f in dataclasses.fields(cls) if f.name not in _COMMON_NAMES]
        shared = [f for f in dataclasses.fields(cls) if f.name in _COMMON_NAMES]
        for f in reversed(own + shared):
            env = env_prefix + f.name.upper()
            default = f.default
            if isinstance(default, tuple) and len(default) == 2 and isinstance(default[1], int):
                default_text: Any = f"{default[0]}:{default[1]}"  # an address
            elif f.metadata["metavar"] == "DURATION" and isinstance(default, int | float):
                default_text = format_duration(default)  # as the README and the flags write it: 2s
            elif f.metadata["metavar"] == "SIZE" and isinstance(default, int):
                default_text = format_size(default)  # 1MiB
            else:
                default_text = default
            default_text = "none" if default_text in ("", None, ()) else default_text
            if f.metadata["flag"]:
                # --x/--no-x: a flag on the command line wins over the file and environment
                # either way.
                fn = click.option(
                    f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}",
                    f.name,
                    default=None,
                    envvar=env,
                    help=f"{f.metadata['help']} [env {env}; default {'on' if default else 'off'}]",
                    hidden=shown is not None and f.name not in shown,
                )(fn)
                continue
            fn = click.option(
                _flag(f.name),
                f.name,
                default=None,
                envvar=env,
                metavar=f.metadata["metavar"] or None,
                help=f"{f.metadata['help']} [env {env}; default {default_text}]",
                hidden=shown is not None and f.name not in shown,
            )(fn)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar=env_prefix + "CONFIG",
            help="YAML file of options (keys as the flags without the leading --, e.g. "
            f"data-dir). [env {env_prefix}CONFIG]",
        )(fn)

    return deco


def load_config(
    cls: type[C], config_file: Path | None, given: Mapping[str, Any], sources: Mapping[str, str]
) -> C:
    """Merge defaults < file < environment/flags. ``given`` holds values click collected."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if config_file is not None:
        for name, (key, value) in read_config_file(config_file).items():
            if name not in fields:
                known = ", ".join(sorted(n.replace("_", "-") for n in fields))
                raise ConfigError(
                    f"config file {config_file}: unknown option {key!r} (known: {known})"
                )
            values[name] = value
            origin[name] = f"config file {config_file}"
    for name, value in given.items():
        if value is not None and name in fields:
            values[name] = value
            origin[name] = sources.get(name, "flag")
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        try:
            parsed[name] = fields[name].metadata["parse"](value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{_flag(name)} (from {origin[name]}): {e}") from None
    cfg = cls(**parsed)
    if isinstance(cfg, GlobalConfig) and _same_port(cfg.api_address, cfg.kds_address):
        raise ConfigError(
            f"--api-address {_address(cfg.api_address)} and --kds-address "
            f"{_address(cfg.kds_address)} share a port: give each its own"
        )
    return cfg


_ANY_HOST = frozenset({"0.0.0.0", "::", ""})


def _same_port(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether two listen addresses would take one port (port 0 picks a free one)."""
    return a[1] == b[1] != 0 and (a[0] == b[0] or a[0] in _ANY_HOST or b[0] in _ANY_HOST)


def _address(a: tuple[str, int]) -> str:
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
