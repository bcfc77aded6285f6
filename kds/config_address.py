"""Address options: where a daemon listens (HOST:PORT) and the global instances a zone dials
(grpcs://HOST:PORT, comma-separated); kds.config uses them for its option table."""

from __future__ import annotations

__all__ = ["parse_address", "parse_global_address"]


def parse_address(value: object) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as [::1]:PORT) -> (host, port)."""
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_global_address(value: object) -> str:
    """grpcs://HOST:PORT (TLS, the default) or grpc://HOST:PORT (plaintext, with --insecure);
    several global instances comma-separated, all with one scheme."""
    text = str(value)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("give grpcs://HOST:PORT")
    if len(parts) > 16:
        raise ValueError("at most 16 addresses")
    schemes = set()
    for part in parts:
        scheme, sep, rest = part.partition("://")
        if not sep or scheme not in {"grpc", "grpcs"}:
            raise ValueError(
                f"{part!r} must look like grpcs://HOST:PORT (or grpc:// with --insecure)"
            )
        parse_address(rest)
        schemes.add(scheme)
    if len(schemes) > 1:
        raise ValueError("give every address with the same scheme (all grpcs:// or all grpc://)")
    return ",".join(parts)
