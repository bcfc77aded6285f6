"""TLS for the sync stream (global's certificate authority and server certificate) and for the
HTTP API (optional, given files).

With no certificate given, global makes its own at first start: an ECDSA P-256 CA (valid 10
years) and a server certificate it signs (valid 1 year, reissued at start when it expires
within 30 days or its names changed). The CA's private key is kept as an internal secret in
global's store (never synced, never served); the CA certificate is written to
``<data-dir>/ca.crt`` for operators to hand to zones (``zonecp --ca-file``).

Global serves with dynamic credentials: each new TLS handshake uses the certificate files as
they are on disk, so replacing ``--tls-cert-file`` / ``--tls-key-file`` takes effect for the
next zone connection without a restart (live streams keep their session).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kds.ca import key_matches, self_signed_ca
from kds.errors import ConfigError

__all__ = [
    "CertPair",
    "ReloadingServerCredentials",
    "ReloadingServerSSLContext",
    "check_files",
    "default_names",
    "issue_server_cert",
    "make_ca",
    "needs_reissue",
]

log = structlog.get_logger("kds.tls")

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=365)
REISSUE_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertPair:
    cert_pem: bytes
    key_pem: bytes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str) -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kds-sync"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = _now()
    cert = self_signed_ca(
        key,
        name,
        now - dt.timedelta(minutes=5),
        now + CA_VALIDITY,
        path_length=0,  # it signs server certificates only
        digital_signature=True,
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def issue_server_cert(ca: CertPair, names: Iterable[str]) -> CertPair:
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError("--tls-names: at least one name is needed for the certificate")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def cert_names(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]


def needs_reissue(cert_pem: bytes, names: Iterable[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    expiring = cert.not_valid_after_utc - _now() < REISSUE_BEFORE
    return expiring or set(cert_names(cert_pem)) != set(names)


def default_names(listen_host: str) -> list[str]:
    """This host's name, localhost, loopback and the host's addresses (and the listen
    address when it is a specific one)."""
    names = [socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.append(str(info[4][0]))
    except OSError:
        pass
    if listen_host not in {"", "0.0.0.0", "::"}:
        names.append(listen_host)
    return list(dict.fromkeys(n for n in names if n))


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot read it: {e.strerror}") from None


def check_files(
    cert_file: Path | None, key_file: Path | None, cert_option: str, key_option: str
) -> None:
    """Refuse a certificate and key file given alone, or files that cannot be read or do not
    form a pair; neither given is fine."""
    if cert_file is None and key_file is None:
        return
    if cert_file is None or key_file is None:
        raise ConfigError(f"{cert_option} and {key_option} go together: give both or neither")
    cert, key = _read(cert_file, cert_option), _read(key_file, key_option)
    check_pair(cert, key, f"{cert_option} {cert_file} / {key_option} {key_file}")


def check_pair(cert_pem: bytes, key_pem: bytes, where: str) -> None:
    """Refuse a certificate and key that do not parse or do not belong together."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(f"{where}: the certificate is not PEM X.509") from None
    try:
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: the key is not an unencrypted PEM private key") from None
    if not key_matches(cert, key):
        raise ConfigError(f"{where}: the key does not match the certificate")


class _WatchedPair:
    """A certificate and key file pair, checked at start, re-read when either file changes."""

    def __init__(self, cert_file: Path, key_file: Path, cert_option: str, key_option: str):
        self.cert_file = cert_file
        self.key_file = key_file
        self._stamp = self._mtimes()
        self.cert = _read(cert_file, cert_option)
        self.key = _read(key_file, key_option)
        check_pair(self.cert, self.key, f"{cert_option} {cert_file} / {key_option} {key_file}")

    def _mtimes(self) -> tuple[int, int]:
        try:
            return (os.stat(self.cert_file).st_mtime_ns, os.stat(self.key_file).st_mtime_ns)
        except OSError:
            return self._stamp if hasattr(self, "_stamp") else (0, 0)

    def reread(self, what: str) -> bool:
        """True when the files changed and still form a valid pair (now in cert and key);
        a replaced pair that is not valid is logged and the current one kept."""
        stamp = self._mtimes()
        if stamp == self._stamp:
            return False
        try:
            cert = self.cert_file.read_bytes()
            key = self.key_file.read_bytes()
            check_pair(cert, key, "replaced certificate")
        except (OSError, ConfigError) as e:
            log.error(
                f"cannot use the replaced {what} certificate; keeping the current one",
                error=str(e),
            )
            return False
        self._stamp, self.cert, self.key = stamp, cert, key
        log.info(
            f"{what} certificate reloaded", cert_file=str(self.cert_file), names=cert_names(cert)
        )
        return True


class ReloadingServerCredentials:
    """Server credentials that pick up replaced certificate files at the next handshake."""

    def __init__(self, cert_file: Path, key_file: Path):
        self.pair = _WatchedPair(cert_file, key_file, "--tls-cert-file", "--tls-key-file")
        self._initial = grpc.ssl_server_certificate_configuration([(self.pair.key, self.pair.cert)])

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc for each new handshake: a new configuration when the files changed
        (and still form a valid pair), else None to keep the current one."""
        if not self.pair.reread("TLS"):
            return None
        return grpc.ssl_server_certificate_configuration([(self.pair.key, self.pair.cert)])

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._initial, self._fetch)  # type: ignore[arg-type]


class ReloadingServerSSLContext:
    """The HTTP API's TLS (``--api-tls-cert-file``/``--api-tls-key-file``): TLS 1.2 or newer;
    replaced files are used from the next handshake on, with no restart (the SNI callback runs
    at every handshake, stats the two files and swaps in a new context when they changed)."""

    def __init__(self, cert_file: Path, key_file: Path):
        self.pair = _WatchedPair(cert_file, key_file, "--api-tls-cert-file", "--api-tls-key-file")
        self.context = self._new()
        self.context.sni_callback = self._on_handshake
        self._current = self.context

    def _new(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # OpenSSL checks again that the key is the certificate's (files may change meanwhile).
        ctx.load_cert_chain(self.pair.cert_file, self.pair.key_file)
        return ctx

    def _on_handshake(self, sock: ssl.SSLObject, server_name: str | None, _: object) -> None:
        if self.pair.reread("API TLS"):
            try:
                self._current = self._new()
            except (OSError, ssl.SSLError) as e:
                log.error("cannot load the replaced API TLS certificate", error=str(e))
        if self._current is not self.context:
            sock.context = self._current
