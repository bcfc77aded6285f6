"""Real certificates and keys for tests, made with the cryptography package.

A CA (basicConstraints CA:TRUE, keyUsage keyCertSign), a leaf it signs (not a CA), a CA
without keyCertSign, an unrelated key, and garbage. ECDSA P-256 keeps generation fast.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GARBAGE = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Pair:
    cert: bytes  # PEM
    key: bytes  # PEM (PKCS#8, unencrypted)

    @property
    def cert_b64(self) -> str:
        return base64.b64encode(self.cert).decode()

    @property
    def key_b64(self) -> str:
        return base64.b64encode(self.key).decode()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    ca: bool,
    cert_sign: bool,
    key_agreement: bool = False,
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = (
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]), issuer[1])
        if issuer
        else (name, key)
    )
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@cache
def ca(label: str = "ca") -> Pair:
    """A self-signed CA: basicConstraints CA:TRUE, keyUsage keyCertSign."""
    key = _key()
    return Pair(_cert(f"test {label}", key, None, ca=True, cert_sign=True), _pem(key))


@cache
def leaf() -> Pair:
    """A certificate the test CA signed that is not a CA (CA:FALSE), with its key."""
    issuer_key = serialization.load_pem_private_key(ca().key, None)
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    key = _key()
    return Pair(_cert("leaf", key, ("test ca", issuer_key), ca=False, cert_sign=False), _pem(key))


@cache
def ca_without_cert_sign() -> Pair:
    key = _key()
    return Pair(_cert("no-sign", key, None, ca=True, cert_sign=False), _pem(key))


@cache
def ca_with_key_agreement() -> Pair:
    """A CA whose keyUsage includes keyAgreement besides keyCertSign."""
    key = _key()
    cert = _cert("key-agreement", key, None, ca=True, cert_sign=True, key_agreement=True)
    return Pair(cert, _pem(key))


@cache
def other_key() -> bytes:
    """A private key that belongs to no test certificate."""
    return _pem(_key())


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)])
    if n >= 128:
        size += n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body


def _der_body(data: bytes, at: int) -> tuple[int, int]:
    """(start, end) of the body of the DER element at ``at``."""
    first = data[at + 1]
    if first < 128:
        return at + 2, at + 2 + first
    n = first & 0x7F
    length = int.from_bytes(data[at + 2 : at + 2 + n], "big")
    return at + 2 + n, at + 2 + n + length


@cache
def serial_zero_ca() -> Pair:
    """A CA whose serial number is 0, as Kuma's builtin CAs are (RFC 5280 wants a positive
    one, so cryptography's builder refuses it: the TBS certificate is edited and signed
    again)."""
    key = _key()
    cert = x509.load_pem_x509_certificate(_cert("kuma-ca", key, None, ca=True, cert_sign=True))
    tbs = cert.tbs_certificate_bytes
    start, end = _der_body(tbs, 0)
    version_end = _der_body(tbs, start)[1]  # [0] EXPLICIT version
    serial_end = _der_body(tbs, version_end)[1]
    body = tbs[start:version_end] + _der(0x02, b"\x00") + tbs[serial_end:end]
    new_tbs = _der(0x30, body)
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    ecdsa_sha256 = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d040302")))
    der = _der(0x30, new_tbs + ecdsa_sha256 + _der(0x03, b"\x00" + signature))
    pem = b"-----BEGIN CERTIFICATE-----\n"
    b64 = base64.b64encode(der)
    pem += b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    pem += b"\n-----END CERTIFICATE-----\n"
    return Pair(pem, _pem(key))
