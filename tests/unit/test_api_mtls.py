"""Meshes with mTLS backends through the HTTP API, against a real SQLite store (kds.integrity)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from structlog.testing import capture_logs

from kds.ca import check_ca
from kds.model import Key, Kind
from tests import certs
from tests.unit.test_api import Api, MakeApi
from tests.unit.test_api import make_api as make_api_fixture  # noqa: F401  # registers it
from tests.unit.test_mtls import duplicate_extension_ca, malformed_extension_ca

CA = certs.ca()


@pytest.fixture
def make_api(make_api_fixture: MakeApi) -> MakeApi:  # noqa: F811
    """test_api's factory: an API on a real SQLite store, either role."""
    return make_api_fixture


def secret(name: str, data: bytes, mesh: str = "default") -> dict[str, Any]:
    return {"type": "Secret", "mesh": mesh, "name": name, "data": base64.b64encode(data).decode()}


def k8s_secret(name: str, data: bytes, mesh: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"kuma.io/mesh": mesh}},
        "data": {"value": base64.b64encode(data).decode()},
        "type": "system.kuma.io/secret",
    }


def provided_mtls(cert: str = "my-cert", key: str = "my-key", **extra: Any) -> dict[str, Any]:
    return {
        "enabledBackend": "ca-1",
        "backends": [
            {
                "name": "ca-1",
                "type": "provided",
                "config": {"cert": {"secret": cert}, "key": {"secret": key}},
            }
        ],
        **extra,
    }


def mesh(name: str = "default", **mtls: Any) -> dict[str, Any]:
    return {"type": "Mesh", "name": name, "mtls": provided_mtls(**mtls)}


def k8s_mesh(name: str = "default", **mtls: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": name},
        "spec": {"mtls": provided_mtls(**mtls)},
    }


def builtin(name: str = "payments", **ca: Any) -> dict[str, Any]:
    config = {"caCert": {"keyType": "ECDSA", **ca}}
    return {
        "type": "Mesh",
        "name": name,
        "mtls": {
            "enabledBackend": "ca-1",
            "backends": [{"name": "ca-1", "type": "builtin", "config": config}],
        },
    }


async def apply(api: Api, *items: dict[str, Any]) -> tuple[int, Any]:
    resp = await api.client.post("/_apply", json={"items": list(items)})
    return resp.status, await resp.json()


def causes(body: Any) -> dict[str, str]:
    return {c["field"]: c["message"] for c in body["causes"]}


async def with_secrets(api: Api, cert: bytes = CA.cert, key: bytes = CA.key) -> None:
    """Mesh default (no mtls yet) with my-cert and my-key."""
    assert (await api.put("/meshes/default", {"type": "Mesh", "name": "default"}))[0] in (200, 201)
    assert (await api.put("/meshes/default/secrets/my-cert", secret("my-cert", cert)))[0] == 201
    assert (await api.put("/meshes/default/secrets/my-key", secret("my-key", key)))[0] == 201


# --------------------------------------------------------------------------- provided


async def test_provided_ca_mesh_is_accepted_with_a_real_ca(make_api: MakeApi) -> None:
    """The seed's example works once its secrets exist: cert is a CA, key is its key."""
    api = await make_api()
    await with_secrets(api)
    status, body, result = await api.put("/meshes/default", mesh())
    assert (status, result) == (200, "updated")
    # the ``config`` spelling some documentation uses is kept as ``conf``, Kuma's key, and the
    # answer says so
    assert body == {
        "warnings": ["mtls.backends[0].config is stored and returned as conf, Kuma's name for it"]
    }
    got = (await api.get("/meshes/default"))[1]["mtls"]
    assert got["backends"][0] == {
        "name": "ca-1",
        "type": "provided",
        "conf": {"cert": {"secret": "my-cert"}, "key": {"secret": "my-key"}},
    }


@pytest.mark.parametrize(
    ("cert", "key", "field", "words"),
    [
        (certs.leaf().cert, certs.leaf().key, "cert", "CA:FALSE"),
        (
            certs.ca_without_cert_sign().cert,
            certs.ca_without_cert_sign().key,
            "cert",
            "keyCertSign",
        ),
        (CA.cert, certs.other_key(), "key", "not the private key of the certificate"),
        (certs.GARBAGE, CA.key, "cert", "does not hold an X.509 certificate"),
        (CA.cert, b"garbage key", "key", "does not hold an unencrypted private key"),
    ],
)
async def test_provided_ca_refusals_name_the_field(
    make_api: MakeApi, cert: bytes, key: bytes, field: str, words: str
) -> None:
    """A leaf, a CA without keyCertSign, a mismatched key or garbage: 400 naming the field,
    never quoting the secret; skipValidation accepts the same mesh."""
    api = await make_api()
    await with_secrets(api, cert, key)
    with capture_logs() as logs:
        status, body, _ = await api.put("/meshes/default", mesh())
    assert status == 400
    got = causes(body)
    assert words in got[f"mtls.backends[0].conf.{field}.secret"]
    for pem in (cert, key):
        assert base64.b64encode(pem).decode()[:40] not in repr(body) + repr(logs)
        if len(pem) > 70:  # the base64 body of a PEM
            assert pem.decode()[30:70] not in repr(body) + repr(logs)
    status, _, _ = await api.put("/meshes/default", mesh(skipValidation=True))
    assert status == 200


async def test_missing_global_and_other_mesh_secrets_are_refused(make_api: MakeApi) -> None:
    """A secret that does not exist, is a GlobalSecret, or lives in another mesh is refused,
    each with its own message, even with skipValidation (zones need the secrets)."""
    api = await make_api()
    gs = {"type": "GlobalSecret", "name": "my-cert", "data": CA.cert_b64}
    assert (await api.put("/global-secrets/my-cert", gs))[0] == 201
    assert (await api.put("/meshes/other", {"type": "Mesh", "name": "other"}))[0] == 201
    assert (await api.put("/meshes/other/secrets/my-key", secret("my-key", CA.key, "other")))[
        0
    ] == 201
    status, body, _ = await api.put("/meshes/default", mesh(skipValidation=True))
    assert status == 400
    got = causes(body)
    assert "GlobalSecret" in got["mtls.backends[0].conf.cert.secret"]
    assert (
        "global secrets cannot be used in mesh policies" in got["mtls.backends[0].conf.cert.secret"]
    )
    assert "belongs to mesh 'other'" in got["mtls.backends[0].conf.key.secret"]
    status, body, _ = await api.put("/meshes/default", mesh(cert="nope", key="nope2"))
    assert (
        "secret 'nope' does not exist in mesh 'default'"
        in causes(body)["mtls.backends[0].conf.cert.secret"]
    )


@pytest.mark.parametrize("order", ["mesh-first", "secrets-first"])
@pytest.mark.parametrize("form", ["universal", "kubernetes"])
async def test_apply_mesh_and_its_secrets_together_in_any_order(
    make_api: MakeApi, order: str, form: str
) -> None:
    """One /_apply with a new mTLS mesh and its secrets works whatever the file order."""
    api = await make_api()
    make_mesh, make_secret = (k8s_mesh, k8s_secret) if form == "kubernetes" else (mesh, secret)
    items = [make_secret("my-cert", CA.cert, "pay"), make_secret("my-key", CA.key, "pay")]
    m = make_mesh("pay")
    items = [m, *items] if order == "mesh-first" else [*items, m]
    status, body = await apply(api, *items)
    assert status == 200, body
    assert {i["result"] for i in body["items"]} == {"created"}


async def test_apply_errors_name_item_and_kubernetes_field(make_api: MakeApi) -> None:
    """A cross-resource problem in /_apply names items[i] and the field as written there."""
    api = await make_api()
    status, body = await apply(
        api,
        k8s_secret("my-cert", certs.leaf().cert, "pay"),
        k8s_secret("my-key", CA.key, "pay"),
        k8s_mesh("pay"),
    )
    assert status == 400 and body["detail"].startswith("nothing was applied: items[2]")
    assert set(causes(body)) == {
        "items[2].spec.mtls.backends[0].conf.cert.secret",
        "items[2].spec.mtls.backends[0].conf.key.secret",
    }
    assert api.counts()["Secret"]["global"] == 0  # all or nothing


async def test_a_refused_secret_names_the_backend_it_breaks(make_api: MakeApi) -> None:
    """A key two backends share, replaced by another CA's: each problem names the backend it
    is in (both were named after the first backend)."""
    api = await make_api()
    await with_secrets(api)
    assert (await api.put("/meshes/default/secrets/cert-2", secret("cert-2", CA.cert)))[0] == 201
    two = {
        "enabledBackend": "ca-1",
        "backends": [
            {"name": "ca-1", "type": "provided",
             "config": {"cert": {"secret": "my-cert"}, "key": {"secret": "my-key"}}},
            {"name": "ca-2", "type": "provided",
             "config": {"cert": {"secret": "cert-2"}, "key": {"secret": "my-key"}}},
        ],
    }  # fmt: skip
    assert (await api.put("/meshes/default", {"type": "Mesh", "name": "default", "mtls": two}))[
        0
    ] == 200
    other = certs.ca("other")
    status, body, _ = await api.put("/meshes/default/secrets/my-key", secret("my-key", other.key))
    assert status == 400
    messages = [c["message"] for c in body["causes"] if c["field"] == "data"]
    assert any(
        m.startswith("mesh 'default' mTLS backend 'ca-1' uses this secret: mtls.backends[0].")
        for m in messages
    )
    assert any(
        m.startswith("mesh 'default' mTLS backend 'ca-2' uses this secret: mtls.backends[1].")
        for m in messages
    )


async def test_a_secret_update_that_breaks_a_backend_is_refused(make_api: MakeApi) -> None:
    """Replacing a CA secret in use with a leaf is refused naming data; both at once is fine."""
    api = await make_api()
    await with_secrets(api)
    assert (await api.put("/meshes/default", mesh()))[0] == 200
    status, body, _ = await api.put(
        "/meshes/default/secrets/my-cert", secret("my-cert", certs.leaf().cert)
    )
    assert status == 400
    assert "mesh 'default' mTLS backend 'ca-1' uses this secret" in causes(body)["data"]
    new = certs.ca("rotated")
    status, body = await apply(api, secret("my-cert", new.cert), secret("my-key", new.key))
    assert status == 200, body


# --------------------------------------------------------------------------- deletes


async def test_deleting_a_secret_a_backend_uses_is_refused(make_api: MakeApi) -> None:
    """409 naming mesh and backend; allowed once the backend is removed."""
    api = await make_api()
    await with_secrets(api)
    await api.put("/meshes/default", mesh())
    status, body = await api.delete("/meshes/default/secrets/my-key")
    assert status == 409
    assert "mesh 'default' mTLS backend 'ca-1'" in body["detail"]
    await api.put("/meshes/default", {"type": "Mesh", "name": "default"})
    assert (await api.delete("/meshes/default/secrets/my-key"))[0] == 200


async def test_mesh_delete_policy(make_api: MakeApi) -> None:
    """Deleting a Mesh deletes its builtin CA secrets; other secrets still in it refuse it."""
    api = await make_api()
    assert (await api.put("/meshes/payments", builtin()))[0] == 201
    assert (await api.put("/meshes/payments/secrets/user", secret("user", b"u", "payments")))[
        0
    ] == 201
    status, body = await api.delete("/meshes/payments")
    assert status == 409 and "still holds 1 secret(s) (user)" in body["detail"]
    await api.delete("/meshes/payments/secrets/user")
    writes = len(api.writes)
    assert (await api.delete("/meshes/payments"))[0] == 200
    assert api.counts()["Secret"]["global"] == 0
    deleted = [w.deleted for w in api.writes[writes:]]
    assert deleted == [
        Key(Kind.SECRET, "payments", "payments.ca-builtin-cert-ca-1"),
        Key(Kind.SECRET, "payments", "payments.ca-builtin-key-ca-1"),
        Key(Kind.MESH, "", "payments"),
    ]


# --------------------------------------------------------------------------- builtin


async def test_builtin_backend_generates_a_ca_in_the_same_transaction(make_api: MakeApi) -> None:
    """A builtin backend gets a CA stored as {mesh}.ca-builtin-cert/key-{backend}, committed
    with the Mesh (consecutive revisions, one on_commit call), never logged."""
    batches: list[list[int]] = []
    api = await make_api(
        on_commit=lambda results: batches.append([r.record.revision for r in results if r.record])
    )
    with capture_logs() as logs:
        status, _, _ = await api.put("/meshes/payments", builtin(expiration="30d"))
    assert status == 201
    assert len(batches) == 1 and len(batches[0]) == 3
    _, cert = await api.get("/meshes/payments/secrets/payments.ca-builtin-cert-ca-1")
    _, key = await api.get("/meshes/payments/secrets/payments.ca-builtin-key-ca-1")
    cert_pem, key_pem = base64.b64decode(cert["data"]), base64.b64decode(key["data"])
    assert not check_ca(cert_pem, key_pem)
    c = x509.load_pem_x509_certificate(cert_pem)
    assert (c.not_valid_after_utc - c.not_valid_before_utc).days == 30
    assert key["data"] not in repr(logs) and b"PRIVATE KEY" not in repr(logs).encode()
    assert [e["name"] for e in logs if e["event"] == "resource written"] == [
        "payments",
        "payments.ca-builtin-cert-ca-1",
        "payments.ca-builtin-key-ca-1",
    ]
    # Re-applying keeps the CA; the generated secrets are protected like any used secret.
    status, _, result = await api.put("/meshes/payments", builtin(expiration="30d"))
    assert (status, result) == (200, "unchanged")
    assert (await api.get("/meshes/payments/secrets/payments.ca-builtin-key-ca-1"))[1][
        "data"
    ] == key["data"]
    status, body = await api.delete("/meshes/payments/secrets/payments.ca-builtin-key-ca-1")
    assert status == 409 and "backend 'ca-1'" in body["detail"]


async def test_apply_lists_generated_ca_secrets(make_api: MakeApi) -> None:
    api = await make_api()
    status, body = await apply(api, builtin())
    assert status == 200
    assert [(i["type"], i["name"], i["result"]) for i in body["items"]] == [
        ("Mesh", "payments", "created"),
        ("Secret", "payments.ca-builtin-cert-ca-1", "created"),
        ("Secret", "payments.ca-builtin-key-ca-1", "created"),
    ]


# --------------------------------------------------------------------------- zones


async def test_zone_local_mesh_follows_the_same_rules(make_api: MakeApi) -> None:
    """On a zone, a zone-local mTLS mesh needs its secrets and protects them the same way."""
    api = await make_api("zone", zone="zone-1")
    assert (await api.put("/meshes/local", mesh("local")))[0] == 400
    await api.put("/meshes/local", {"type": "Mesh", "name": "local"})
    await api.put("/meshes/local/secrets/my-cert", secret("my-cert", CA.cert, "local"))
    await api.put("/meshes/local/secrets/my-key", secret("my-key", CA.key, "local"))
    assert (await api.put("/meshes/local", mesh("local")))[0] == 200
    assert (await api.delete("/meshes/local/secrets/my-cert"))[0] == 409


# --------------------------------------------------------------------------- hostile values


@pytest.mark.parametrize("pair", [duplicate_extension_ca, malformed_extension_ca])
async def test_a_ca_with_bad_extensions_is_a_400_naming_the_secret(
    make_api: MakeApi, pair: Callable[[], certs.Pair]
) -> None:
    """cryptography raises on reading such a certificate's extensions: that was a 500."""
    api = await make_api()
    bad = pair()
    await with_secrets(api, bad.cert, bad.key)
    field = "mtls.backends[0].conf.cert.secret"
    put = (await api.put("/meshes/default", mesh()))[:2]
    for (status, body), prefix in [(put, ""), (await apply(api, mesh()), "items[0].")]:
        assert status == 400, body
        assert "malformed or duplicate extensions" in causes(body)[prefix + field]
        assert "'my-cert'" in causes(body)[prefix + field]


async def test_an_expiration_of_too_many_digits_is_a_400_naming_it(make_api: MakeApi) -> None:
    api = await make_api()
    huge = builtin(expiration="9" * 5000 + "y")
    field = "mtls.backends[0].config.caCert.expiration"
    put = (await api.put("/meshes/payments", huge))[:2]
    for (status, body), prefix in [(put, ""), (await apply(api, huge), "items[0].")]:
        assert status == 400, body
        assert "from 1h to 100y" in causes(body)[prefix + field]
