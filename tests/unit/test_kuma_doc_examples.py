"""Kuma's documentation examples, applied with kdsctl as a Kuma user applies them with
kumactl, and read back through the API.

Written from Kuma's documentation of secrets and of mutual TLS (kuma-website: production/
secure-deployment/secrets, policies/mutual-tls) and kumactl's apply: a builtin backend in both
forms and where its CA is stored, a provided backend whose certificate and key are in one
Secret (the documentation names the same secret for both), an intermediate CA given as its
chain, the PERMISSIVE mode, the development-mode ``inline`` values (refused here, naming the
field, because they would not reach zones), and ``kumactl apply -f -`` from stdin.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kds.model import Limits
from tests import certs
from tests.unit.test_kdsctl import run, serve_api

BUILTIN = {
    "universal": """
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      dpCert:
        rotation:
          expiration: 1d
      conf:
        caCert:
          RSAbits: 2048
          expiration: 10y
""",
    "kubernetes": """
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca-1
    backends:
      - name: ca-1
        type: builtin
        dpCert:
          rotation:
            expiration: 1d
        conf:
          caCert:
            RSAbits: 2048
            expiration: 10y
""",
}
PROVIDED = {
    "universal": """
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: provided
      dpCert:
        rotation:
          expiration: 1d
      conf:
        cert:
          secret: name-of-secret
        key:
          secret: name-of-secret
""",
    "kubernetes": """
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca-1
    backends:
      - name: ca-1
        type: provided
        dpCert:
          rotation:
            expiration: 1d
        conf:
          cert:
            secret: name-of-secret
          key:
            secret: name-of-secret
""",
}
PERMISSIVE = {
    "universal": """
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      mode: PERMISSIVE # supported values: STRICT, PERMISSIVE
""",
    "kubernetes": """
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca-1
    backends:
      - name: ca-1
        type: builtin
        mode: PERMISSIVE # supported values: STRICT, PERMISSIVE
""",
}
INLINE = """
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: provided
      conf:
        cert:
          inline: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSURHekNDQWdPZ0F3S...
        key:
          inline: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSURHekNDQWdPZ0F3S...
"""


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    # CA chains are a few KB: more than the 1 KiB the small-limit kdsctl tests allow.
    with serve_api(tmp_path, limits=Limits(max_data_bytes=64 * 1024)) as (url, _store):
        yield url


def _secret(name: str, data: bytes, mesh: str = "default") -> str:
    return f"type: Secret\nmesh: {mesh}\nname: {name}\ndata: {base64.b64encode(data).decode()}\n"


def _mesh(url: str, name: str = "default") -> dict[str, object]:
    res = run(url, "get", "mesh", name, "-o", "yaml")
    assert res.exit_code == 0, res.output
    loaded: dict[str, object] = yaml.safe_load(res.stdout)
    return loaded


@pytest.mark.parametrize("form", ["universal", "kubernetes"])
def test_builtin_backend_and_where_its_ca_is_stored(url: str, form: str) -> None:
    """The builtin example applies as written; its CA is stored as the Secrets
    {mesh}.ca-builtin-cert-{backend} and {mesh}.ca-builtin-key-{backend}, which
    `get secrets -m default` lists (Kuma's "Storage of Secrets")."""
    res = run(url, "apply", "-f", "-", input=BUILTIN[form])
    assert res.exit_code == 0, res.output
    assert 'resource type="Mesh" mesh="" name="default"' in res.stdout
    table = run(url, "get", "secrets", "-m", "default").stdout
    assert "default.ca-builtin-cert-ca-1" in table and "default.ca-builtin-key-ca-1" in table
    given = yaml.safe_load(BUILTIN[form])
    assert _mesh(url)["mtls"] == given.get("spec", given)["mtls"]


@pytest.mark.parametrize("form", ["universal", "kubernetes"])
def test_provided_backend_with_cert_and_key_in_one_secret(url: str, form: str) -> None:
    """Kuma's provided example names one secret for both cert and key: a Secret holding
    the CA certificate and its key (PEM, one after the other) works for both."""
    ca = certs.ca()
    secret = "type: Mesh\nname: default\n---\n" + _secret("name-of-secret", ca.cert + ca.key)
    res = run(url, "apply", "-f", "-", input=secret)
    assert res.exit_code == 0, res.output
    res = run(url, "apply", "-f", "-", input=PROVIDED[form])
    assert res.exit_code == 0, res.output
    backend = _mesh(url)["mtls"]["backends"][0]  # type: ignore[index]
    assert backend["conf"] == {
        "cert": {"secret": "name-of-secret"},
        "key": {"secret": "name-of-secret"},
    }


def _intermediate() -> tuple[bytes, bytes, bytes]:
    """An intermediate CA signed by the test root: its certificate, its key, the root's."""
    root = certs.ca("root")
    root_key = serialization.load_pem_private_key(root.key, None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certs._cert("intermediate", key, ("test root", root_key), ca=True, cert_sign=True)
    return cert, certs._pem(key), root.cert


def test_an_intermediate_ca_given_as_its_chain(url: str) -> None:
    """Kuma: the intermediate's certificate first, then the root's, in the cert secret; the
    key secret holds the intermediate's key only. The other order is refused: the key must
    belong to the first certificate (as Go's tls.X509KeyPair, which Kuma uses, reads it)."""
    cert, key, root = _intermediate()
    mesh = (
        PROVIDED["universal"]
        .replace("secret: name-of-secret\n        key:", "secret: chain\n        key:")
        .replace("secret: name-of-secret", "secret: inter-key")
    )
    text = "---\n".join([_secret("chain", cert + root), _secret("inter-key", key), mesh])
    res = run(url, "apply", "-f", "-", input=text)
    assert res.exit_code == 0, res.output
    res = run(url, "apply", "-f", "-", input=_secret("chain", root + cert))
    assert res.exit_code == 1
    assert "is not the private key of the certificate" in res.output


@pytest.mark.parametrize("form", ["universal", "kubernetes"])
def test_permissive_mode(url: str, form: str) -> None:
    res = run(url, "apply", "-f", "-", input=PERMISSIVE[form])
    assert res.exit_code == 0, res.output
    assert _mesh(url)["mtls"]["backends"][0]["mode"] == "PERMISSIVE"  # type: ignore[index]


def test_development_mode_inline_values_are_refused_naming_them(url: str) -> None:
    """Kuma's development mode puts the CA in the Mesh (inline): refused here, because zones
    would not get it with the secrets they sync; the error names inline and says what to do."""
    res = run(url, "apply", "-f", "-", input=INLINE)
    assert res.exit_code == 1
    for role in ("cert", "key"):
        assert f"mtls.backends[0].conf.{role}.inline: only secret is supported" in res.output
        assert f"name it in {role}.secret" in res.output
    assert "conf.cert.secret: is required" not in res.output


def test_kumactl_apply_from_stdin(url: str) -> None:
    """kumactl apply's own example: a Mesh from stdin, reported as kumactl reports it."""
    res = run(url, "apply", "-f", "-", input="\ntype: Mesh\nname: demo\n")
    assert res.exit_code == 0, res.output
    assert 'resource type="Mesh" mesh="" name="demo" Created' in res.stdout.splitlines()
