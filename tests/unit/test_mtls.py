"""kds.mtls (the shape of a Mesh's mtls) and kds.ca (CA checks and generation)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kds.ca import check_ca, generate_ca
from kds.errors import InvalidResource
from kds.model import from_document
from kds.mtls import CaOptions, backends, builtin_secret_names, parse_ca_expiration, secret_refs
from tests import certs


def provided(name: str = "ca-1", cert: str = "my-cert", key: str = "my-key") -> dict[str, Any]:
    return {
        "name": name,
        "type": "provided",
        "config": {"cert": {"secret": cert}, "key": {"secret": key}},
    }


def mesh(mtls: Any, name: str = "default") -> dict[str, Any]:
    return {"type": "Mesh", "name": name, "mtls": mtls}


def k8s_mesh(mtls: Any, name: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": name},
        "spec": {"mtls": mtls},
    }


def fields(mtls: Any, k8s: bool = False) -> set[str]:
    with pytest.raises(InvalidResource) as e:
        from_document(k8s_mesh(mtls) if k8s else mesh(mtls))
    return {err.field for err in e.value.errors}


def test_provided_and_builtin_backends_parse_with_their_secrets() -> None:
    """A provided backend names its secrets; a builtin one uses Kuma's CA secret names."""
    res = from_document(
        mesh(
            {
                "enabledBackend": "ca-2",
                "backends": [provided(), {"name": "ca-2", "type": "builtin"}],
            }
        )
    )
    assert [(r.backend, r.role, r.secret) for r in secret_refs(res.name, res.spec)] == [
        ("ca-1", "cert", "my-cert"),
        ("ca-1", "key", "my-key"),
        ("ca-2", "cert", "default.ca-builtin-cert-ca-2"),
        ("ca-2", "key", "default.ca-builtin-key-ca-2"),
    ]
    assert builtin_secret_names("m", "b") == ("m.ca-builtin-cert-b", "m.ca-builtin-key-b")


@pytest.mark.parametrize(
    ("mtls", "expected"),
    [
        ("on", {"mtls"}),
        ({"backends": "x"}, {"mtls.backends"}),
        ({"backends": [provided()], "enabledBackend": "nope"}, {"mtls.enabledBackend"}),
        ({"backends": [provided(), provided()]}, {"mtls.backends[1].name"}),
        ({"backends": [{**provided(), "type": "vault"}]}, {"mtls.backends[0].type"}),
        ({"backends": [{**provided(), "name": "Bad_Name"}]}, {"mtls.backends[0].name"}),
        ({"backends": [provided(cert="")]}, {"mtls.backends[0].config.cert.secret"}),
        (
            {"backends": [{"name": "ca-1", "type": "provided", "config": {"cert": {}}}]},
            {"mtls.backends[0].config.cert.secret", "mtls.backends[0].config.key.secret"},
        ),
        (
            {
                "backends": [
                    {
                        "name": "ca-1",
                        "type": "provided",
                        "config": {"cert": {"file": "/x"}, "key": {"secret": "k"}},
                    }
                ]
            },
            {"mtls.backends[0].config.cert.file"},
        ),
        ({"backends": [provided()], "skipValidation": "yes"}, {"mtls.skipValidation"}),
        ({"backends": [provided()], "extra": 1}, {"mtls.extra"}),
        (
            {
                "backends": [
                    {"name": "b", "type": "builtin", "config": {"caCert": {"keyType": "DSA"}}}
                ]
            },
            {"mtls.backends[0].config.caCert.keyType"},
        ),
        (
            {
                "backends": [
                    {"name": "b", "type": "builtin", "config": {"caCert": {"RSAbits": 1024}}}
                ]
            },
            {"mtls.backends[0].config.caCert.RSAbits"},
        ),
        (
            {
                "backends": [
                    {"name": "b", "type": "builtin", "config": {"caCert": {"expiration": "10"}}}
                ]
            },
            {"mtls.backends[0].config.caCert.expiration"},
        ),
    ],
)
def test_bad_shapes_name_the_field(mtls: Any, expected: set[str]) -> None:
    """Each shape problem is refused naming its field, in both forms (spec. in Kubernetes)."""
    assert fields(mtls) == expected
    assert fields(mtls, k8s=True) == {f"spec.{f}" for f in expected}


def test_enabled_backend_is_optional_as_in_the_seed_example() -> None:
    """The seed's example has no enabledBackend: it is optional."""
    res = from_document(mesh({"backends": [provided()]}))
    assert [b.name for b in backends(res.name, res.spec)] == ["ca-1"]


def test_durations() -> None:
    assert parse_ca_expiration("10y") == 10 * 365 * 86400
    assert parse_ca_expiration("24h") == 86400
    assert parse_ca_expiration("0d") is None and parse_ca_expiration(10) is None


# --------------------------------------------------------------------------- kds.ca


def test_a_real_ca_and_its_key_pass() -> None:
    assert not check_ca(certs.ca().cert, certs.ca().key)


def test_a_leaf_certificate_is_not_a_ca() -> None:
    problems = check_ca(certs.leaf().cert, certs.leaf().key)
    assert "CA:FALSE" in problems.cert and not problems.key


def test_a_ca_without_key_cert_sign_is_refused() -> None:
    assert (
        "keyCertSign"
        in check_ca(certs.ca_without_cert_sign().cert, certs.ca_without_cert_sign().key).cert
    )


def test_a_key_of_another_certificate_is_refused() -> None:
    problems = check_ca(certs.ca().cert, certs.other_key())
    assert not problems.cert and problems.key == "is not the private key of the certificate"


def test_garbage_is_refused_without_quoting_it() -> None:
    problems = check_ca(certs.GARBAGE, b"not a key at all")
    assert "X.509" in problems.cert and "private key" in problems.key
    assert "bm90" not in problems.cert + problems.key


@pytest.mark.parametrize(
    ("options", "key_class"),
    [
        (CaOptions(key_type="ECDSA", validity_seconds=86400), ec.EllipticCurvePrivateKey),
        (CaOptions(key_type="RSA", rsa_bits=2048), rsa.RSAPrivateKey),
    ],
)
def test_generated_ca_is_a_valid_ca_of_the_requested_kind(
    options: CaOptions, key_class: type
) -> None:
    """A builtin CA passes check_ca, has the key type and the validity asked for."""
    now = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    ca = generate_ca("default", "ca-1", options, now)
    assert not check_ca(ca.cert_pem, ca.key_pem)
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert isinstance(serialization.load_pem_private_key(ca.key_pem, None), key_class)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(seconds=options.validity_seconds)
    assert "default builtin CA ca-1" in cert.subject.rfc4514_string()
    assert "redacted" in repr(ca) and b"PRIVATE" not in repr(ca).encode()


def test_an_expiration_of_too_many_digits_is_refused_naming_the_field() -> None:
    """int() refuses over 4300 digits: such a value made a 500, and a traceback in kdsctl."""
    assert parse_ca_expiration("9" * 5000 + "y") is None
    assert parse_ca_expiration("9" * 13 + "s") is None
    assert parse_ca_expiration("100y") == 100 * 365 * 86400
    backend = {
        "name": "ca-1",
        "type": "builtin",
        "conf": {"caCert": {"expiration": "9" * 5000 + "y"}},
    }
    with pytest.raises(InvalidResource) as e:
        from_document(mesh({"backends": [backend]}))
    assert [err.field for err in e.value.errors] == ["mtls.backends[0].conf.caCert.expiration"]
    assert "from 1h to 100y" in e.value.errors[0].message


def _pem_of_der(der: bytes) -> bytes:
    """A DER certificate in a PEM block, kept byte for byte (however odd its content)."""
    text = base64.encodebytes(der).decode().replace("\n", "")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    ).encode()


def _der_ca(*extensions: x509.ExtensionType) -> certs.Pair:
    """A self-signed certificate (DER) with ``extensions`` as given, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "odd CA")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=True)
    cert = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certs.Pair(cert, pem)


# basicConstraints' OID, and one no extension has, of the same encoded length.
_BASIC_CONSTRAINTS_OID = b"\x06\x03\x55\x1d\x13"  # 2.5.29.19
_SPARE_OID = b"\x06\x03\x55\x1d\x63"  # 2.5.29.99


def duplicate_extension_ca() -> certs.Pair:
    """A CA holding basicConstraints twice: built with a second extension under a spare
    OID, renamed in the DER (the signature no longer matches; loading does not check it)."""
    ca_true = x509.BasicConstraints(ca=True, path_length=None)
    value = ca_true.public_bytes()
    pair = _der_ca(ca_true, x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.99"), value))
    assert pair.cert.count(_SPARE_OID) == 1
    der = pair.cert.replace(_SPARE_OID, _BASIC_CONSTRAINTS_OID)
    return certs.Pair(_pem_of_der(der), pair.key)


def malformed_extension_ca() -> certs.Pair:
    """A certificate whose basicConstraints value is not the SEQUENCE it must be."""
    oid = x509.ObjectIdentifier("2.5.29.19")
    pair = _der_ca(x509.UnrecognizedExtension(oid, b"\x04\x01\x00"))
    return certs.Pair(_pem_of_der(pair.cert), pair.key)


@pytest.mark.parametrize("pair", [duplicate_extension_ca, malformed_extension_ca])
def test_a_certificate_with_bad_extensions_is_a_problem_not_a_crash(
    pair: Callable[[], certs.Pair],
) -> None:
    ca = pair()
    problems = check_ca(ca.cert, ca.key)
    assert (
        problems.cert == "is not a usable CA certificate: it has malformed or duplicate extensions"
    )
    assert not problems.key


def test_a_zone_reads_every_backend_of_a_synced_mesh_whatever_its_new_fields() -> None:
    """The API stops checking backends after MAX_LISTED with problems; a zone reading a
    Mesh global accepted checks them all, so backends whose only problems are fields a newer
    global added never make it refuse the Mesh."""
    from kds.fields import MAX_LISTED
    from kds.mtls import synced_mtls_problems, validate_mtls

    backends = [
        {"name": f"b{i}", "type": "builtin", "fieldOfANewerRelease": 1}
        for i in range(MAX_LISTED + 5)
    ]
    mtls = {"backends": backends}
    assert synced_mtls_problems("m", {"mtls": mtls}) == []
    assert "not checked" in validate_mtls(mtls, "m")[-1].message  # the API's bound
