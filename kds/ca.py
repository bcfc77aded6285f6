"""Certificate authorities for Mesh mTLS backends, with the ``cryptography`` package.

- ``check_ca(cert_pem, key_pem)``: is this a usable CA (parsable X.509 certificates, each
  with basicConstraints CA=true and keyUsage keyCertSign but not keyAgreement, as Kuma's
  provided-CA check asks of every certificate of the chain) and does the key belong to the
  first?
- ``generate_ca(...)``: a new self-signed CA for a builtin backend (RSA or ECDSA P-256).

No I/O and no clock of its own: callers pass ``now``. Problems are returned as short
sentences that never quote the input (a key is a secret; so may be anything pasted in its place).
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kds.mtls import CaOptions

__all__ = [
    "CaProblems",
    "GeneratedCa",
    "check_ca",
    "generate_ca",
    "key_matches",
    "self_signed_ca",
]


@dataclass(frozen=True)
class CaProblems:
    cert: str = ""  # what is wrong with the certificate ("" if nothing)
    key: str = ""  # what is wrong with the key, or its match with the certificate

    def __bool__(self) -> bool:
        return bool(self.cert or self.key)


@dataclass(frozen=True)
class GeneratedCa:
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"GeneratedCa(cert=<{len(self.cert_pem)} bytes>, key=<redacted>)"


def _load_certs(data: bytes) -> list[x509.Certificate]:
    """Every certificate of ``data``: its PEM CERTIFICATE blocks in order (other blocks,
    such as a key kept in the same secret, are skipped, as Go's tls.X509KeyPair skips them).
    PEM only, as Kuma reads a provided CA (tls.X509KeyPair): raises ValueError on none."""
    # Kuma's builtin CAs have serial number 0, which RFC 5280 disallows and cryptography
    # loads with a deprecation warning. Such a CA must keep working as a provided CA (a
    # user moving from Kuma brings it along), so that warning alone is silenced here;
    # tests/unit/test_kuma_compat.py fails if a cryptography release starts refusing it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parsed a serial number which wasn't positive")
        return x509.load_pem_x509_certificates(data)


def _load_key(data: bytes) -> object:
    return serialization.load_pem_private_key(data, password=None)


def _cert_problem(cert: x509.Certificate) -> str:
    # The extensions are parsed when first read: a certificate that loads may still hold an
    # extension twice (DuplicateExtension) or one whose value is not what its type says
    # (ValueError). Either makes it unusable as a CA, which is the user's to fix.
    try:
        extensions = cert.extensions
    except (x509.DuplicateExtension, ValueError):
        return "is not a usable CA certificate: it has malformed or duplicate extensions"
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "is not a CA certificate: it has no basicConstraints extension (CA:TRUE)"
    if not bc.ca:
        return "is not a CA certificate: basicConstraints has CA:FALSE"
    try:
        ku = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "is not a CA certificate: it has no keyUsage extension with keyCertSign"
    if not ku.key_cert_sign:
        return "is not a CA certificate: keyUsage lacks keyCertSign"
    if ku.key_agreement:
        # Kuma's provided-CA check (X509-SVID, Appendix A): a signing certificate's key
        # usage must not include keyAgreement.
        return "is not a usable CA certificate: keyUsage must not include keyAgreement"
    return ""


def _chain_problem(certs: list[x509.Certificate]) -> str:
    """What makes a CA certificate, or one of the chain after it, unusable: Kuma checks
    every certificate of a provided CA's cert (ca_cert_validator.go)."""
    for i, cert in enumerate(certs):
        problem = _cert_problem(cert)
        if problem:
            return problem if i == 0 else f"holds certificate {i + 1} of its chain, which {problem}"
    return ""


def check_ca(cert_data: bytes, key_data: bytes) -> CaProblems:
    """Check a CA certificate (or chain) and its private key, both PEM."""
    try:
        chain = _load_certs(cert_data)
    except ValueError:
        chain = []
    cert = chain[0] if chain else None
    try:
        key = _load_key(key_data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    cert_problem = (
        "does not hold an X.509 certificate in PEM" if cert is None else _chain_problem(chain)
    )
    key_problem = "does not hold an unencrypted private key in PEM" if key is None else ""
    if cert is not None and key is not None and not key_matches(cert, key):
        key_problem = "is not the private key of the certificate"
    return CaProblems(cert_problem, key_problem)


def key_matches(cert: x509.Certificate, key: object) -> bool:
    """Whether ``key`` is the private key of ``cert``."""
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    try:
        return bool(public().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def self_signed_ca(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    name: x509.Name,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    path_length: int | None = None,
    digital_signature: bool = False,
) -> x509.Certificate:
    """A self-signed CA certificate (basicConstraints CA, keyUsage keyCertSign and cRLSign)."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def generate_ca(mesh: str, backend: str, options: CaOptions, now: dt.datetime) -> GeneratedCa:
    """A self-signed CA for the builtin backend ``backend`` of ``mesh``."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if options.key_type == "ECDSA":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=options.rsa_bits)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kds-sync"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"Mesh {mesh}"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{mesh} builtin CA {backend}"),
        ]
    )
    start = now - dt.timedelta(minutes=5)  # tolerate small clock skew between hosts
    cert = self_signed_ca(key, name, start, start + dt.timedelta(seconds=options.validity_seconds))
    return GeneratedCa(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
