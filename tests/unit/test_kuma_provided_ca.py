"""Kuma's checks of a provided CA (pkg/plugins/ca/provided/ca_cert_validator.go): the cert
and key are PEM (Go's tls.X509KeyPair reads them); the cert secret's certificates, each of
them, must have basicConstraints CA:TRUE and keyUsage keyCertSign, and must not have keyUsage
keyAgreement; the key belongs to the first."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kds.ca import check_ca
from tests import certs
from tests.unit.test_api import Api, MakeApi
from tests.unit.test_api import make_api as make_api_fixture  # noqa: F401  # registers it


def _intermediate() -> certs.Pair:
    """An intermediate CA the test root signed."""
    root_key = serialization.load_pem_private_key(certs.ca("root").key, None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certs._cert("intermediate", key, ("test root", root_key), ca=True, cert_sign=True)
    return certs.Pair(cert, certs._pem(key))


def test_a_ca_with_key_agreement_is_refused() -> None:
    """Kuma: "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: Appendix
    A)"."""
    pair = certs.ca_with_key_agreement()
    problems = check_ca(pair.cert, pair.key)
    assert "keyAgreement" in problems.cert and not problems.key


def test_every_certificate_of_the_chain_is_checked() -> None:
    """Kuma checks each certificate of the cert secret, not the first only: a chain whose
    second certificate is not a CA is refused, naming its place; a chain of CAs passes."""
    inter = _intermediate()
    assert not check_ca(inter.cert + certs.ca("root").cert, inter.key)
    problems = check_ca(inter.cert + certs.leaf().cert, inter.key)
    assert problems.cert.startswith("holds certificate 2 of its chain, which is not a CA")
    problems = check_ca(inter.cert + certs.ca_with_key_agreement().cert, inter.key)
    assert "certificate 2" in problems.cert and "keyAgreement" in problems.cert


def test_der_is_refused_as_kuma_reads_pem_only() -> None:
    """Kuma reads a provided CA with Go's tls.X509KeyPair, which takes PEM blocks only: a
    DER certificate or key is refused, naming which."""
    from cryptography import x509

    pair = certs.ca()
    der_cert = x509.load_pem_x509_certificate(pair.cert).public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(pair.key, None)
    der_key = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert check_ca(der_cert, pair.key).cert == "does not hold an X.509 certificate in PEM"
    assert check_ca(pair.cert, der_key).key == "does not hold an unencrypted private key in PEM"


def test_a_secret_holding_the_certificate_and_its_key_still_serves_as_both() -> None:
    """Kuma's example names one secret for cert and key: the key's PEM block is skipped
    when the certificates are read, as Go's tls.X509KeyPair skips it."""
    pair = certs.ca()
    assert not check_ca(pair.cert + pair.key, pair.cert + pair.key)
    assert not check_ca(pair.key + pair.cert, pair.key + pair.cert)


async def test_the_api_names_the_backends_cert_secret(make_api_fixture: MakeApi) -> None:  # noqa: F811
    api: Api = await make_api_fixture()
    pair = certs.ca_with_key_agreement()
    assert (await api.put("/meshes/m", {}))[0] == 201
    for name, value in (("c", pair.cert_b64), ("k", pair.key_b64)):
        assert (await api.put(f"/meshes/m/secrets/{name}", {"data": value}))[0] == 201
    backend = {
        "name": "ca-1",
        "type": "provided",
        "conf": {"cert": {"secret": "c"}, "key": {"secret": "k"}},
    }
    status, err, _ = await api.put("/meshes/m", {"mtls": {"backends": [backend]}})
    assert status == 400
    assert [p["field"] for p in err["invalid_parameters"]] == ["mtls.backends[0].conf.cert.secret"]
    assert "keyAgreement" in err["invalid_parameters"][0]["reason"]
    skipped = {"mtls": {"skipValidation": True, "backends": [backend]}}
    assert (await api.put("/meshes/m", skipped))[0] == 200
