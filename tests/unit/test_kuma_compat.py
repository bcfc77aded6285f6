"""Kuma's documented behaviour, written from Kuma's rules (kumahq/kuma v2.14.3 and its head).

Each test names the rule it checks and where Kuma states it: its documentation examples for
secrets, global secrets and mTLS in both text forms, its Mesh fields, its mesh-name rule, its
API's paths, paging, filters, write answers, computed labels and error bodies, the default
mesh of the Kubernetes form, and the system global secrets its KDS filter keeps on global.
The requests that kumactl sends are recorded from its source (pkg/plugins/resources/remote):
kumactl itself cannot be built on these machines (see the README's compatibility section).
"""

from __future__ import annotations

import base64
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from globalcp.hub import Hub
from globalcp.servicer import SyncServicer
from globalcp.zones import ZoneTracker
from kds.ca import check_ca
from kds.errors import InvalidResource
from kds.model import Key, Kind, Resource, from_document, to_json, to_kubernetes
from kds.protocol.session import SendRange
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore
from tests import certs
from tests.unit.test_api import Api, MakeApi
from tests.unit.test_api import make_api as make_api_fixture  # noqa: F401  # registers it

DATA = base64.b64encode(b"value").decode()


@pytest.fixture
def make_api(make_api_fixture: MakeApi) -> MakeApi:  # noqa: F811
    return make_api_fixture


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    api = await make_api()
    assert (await api.put("/meshes/default", {"type": "Mesh", "name": "default"}))[0] == 201
    return api


def violations(e: pytest.ExceptionInfo[InvalidResource]) -> dict[str, str]:
    return {v.field: v.message for v in e.value.errors}


# --------------------------------------------------------------------------- documentation

# Kuma's secrets documentation: the same Secret in the Universal and Kubernetes forms (the
# Kubernetes one in the control plane's namespace, mesh given by the kuma.io/mesh label).
SECRET_UNIVERSAL = f"""
type: Secret
name: sample-secret
mesh: default
data: {DATA}
"""
SECRET_KUBERNETES = f"""
apiVersion: v1
kind: Secret
metadata:
  name: sample-secret
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
data:
  value: {DATA}
type: system.kuma.io/secret
"""
GLOBAL_SECRET_UNIVERSAL = f"""
type: GlobalSecret
name: sample-global-secret
data: {DATA}
"""
GLOBAL_SECRET_KUBERNETES = f"""
apiVersion: v1
kind: Secret
metadata:
  name: sample-global-secret
  namespace: kuma-system
data:
  value: {DATA}
type: system.kuma.io/global-secret
"""
# Kuma's mTLS documentation: a builtin and a provided backend, Kuma's key ``conf``.
BUILTIN_UNIVERSAL = """
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
    dpCert:
      rotation:
        expiration: 24h
    conf:
      caCert:
        RSAbits: 2048
        expiration: 10y
"""
PROVIDED_KUBERNETES = """
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
      mode: PERMISSIVE
      dpCert:
        rotation:
          expiration: 24h
      conf:
        cert:
          secret: my-ca-cert
        key:
          secret: my-ca-key
"""


@pytest.mark.parametrize(
    ("universal", "kubernetes", "key"),
    [
        (SECRET_UNIVERSAL, SECRET_KUBERNETES, Key(Kind.SECRET, "default", "sample-secret")),
        (
            GLOBAL_SECRET_UNIVERSAL,
            GLOBAL_SECRET_KUBERNETES,
            Key(Kind.GLOBAL_SECRET, "", "sample-global-secret"),
        ),
    ],
)
def test_documented_secrets_read_the_same_in_both_forms(
    universal: str, kubernetes: str, key: Key
) -> None:
    """Kuma's secret and global secret examples: both forms give one resource."""
    a, b = from_document(yaml.safe_load(universal)), from_document(yaml.safe_load(kubernetes))
    assert a.key == b.key == key
    assert a.data == b.data == b"value" and a.labels == b.labels == {}


def test_kubernetes_secret_without_a_mesh_label_is_in_mesh_default() -> None:
    """Kuma: a system.kuma.io/secret without kuma.io/mesh belongs to mesh default."""
    doc = yaml.safe_load(SECRET_KUBERNETES)
    del doc["metadata"]["labels"]
    assert from_document(doc).key == Key(Kind.SECRET, "default", "sample-secret")


@pytest.mark.parametrize("text", [BUILTIN_UNIVERSAL, PROVIDED_KUBERNETES])
def test_documented_mtls_meshes_are_kept_as_given(text: str) -> None:
    """Kuma's mTLS examples parse with ``conf``, and every field comes back as given, in
    both forms (dpCert and mode are carried, not acted on)."""
    doc = yaml.safe_load(text)
    res = from_document(doc)
    given = doc.get("spec", doc)
    assert res.spec["mtls"] == given["mtls"]
    assert to_json(res)["mtls"] == given["mtls"]
    assert to_kubernetes(res)["spec"]["mtls"] == given["mtls"]


def test_the_seed_spelling_config_is_accepted_and_returned_as_conf() -> None:
    """``config`` (a spelling some documentation uses, which real Kuma silently drops) still works,
    and is kept as ``conf``, Kuma's key; both at once is refused."""
    doc = yaml.safe_load(BUILTIN_UNIVERSAL)
    backend = doc["mtls"]["backends"][0]
    backend["config"] = backend.pop("conf")
    got = to_json(from_document(doc))["mtls"]["backends"][0]
    assert "config" not in got and got["conf"] == {"caCert": {"RSAbits": 2048, "expiration": "10y"}}
    backend["conf"] = backend["config"]
    with pytest.raises(InvalidResource) as e:
        from_document(doc)
    assert "not both" in violations(e)["mtls.backends[0].config"]


MESH_WITH_EVERY_FIELD = """
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
metrics:
  enabledBackend: prometheus-1
  backends:
  - name: prometheus-1
    type: prometheus
    conf:
      port: 5670
      path: /metrics
      skipMTLS: false
logging:
  defaultBackend: file
  backends:
  - name: file
    type: file
    format: '%START_TIME% %KUMA_SOURCE_SERVICE%'
    conf:
      path: /tmp/access.log
tracing:
  defaultBackend: jaeger-collector
  backends:
  - name: jaeger-collector
    type: zipkin
    sampling: 100.0
    conf:
      url: http://jaeger-collector:9411/api/v2/spans
networking:
  outbound:
    passthrough: false
routing:
  localityAwareLoadBalancing: true
  zoneEgress: true
  defaultForbidMeshExternalServiceAccess: true
constraints:
  dataplaneProxy:
    requirements:
    - tags:
        kuma.io/zone: east
    restrictions: []
skipCreatingInitialPolicies: ["*"]
meshServices:
  mode: Exclusive
"""


@pytest.mark.parametrize("form", ["universal", "kubernetes"])
def test_every_kuma_mesh_field_is_kept_as_given(form: str) -> None:
    """Every field Kuma's Mesh defines (mesh.proto, metrics.proto) is kept and returned."""
    doc = yaml.safe_load(MESH_WITH_EVERY_FIELD)
    fields = {k: v for k, v in doc.items() if k not in ("type", "name")}
    if form == "kubernetes":
        doc = {"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh"}
        doc |= {"metadata": {"name": "default"}, "spec": fields}
    res = from_document(doc)
    assert dict(res.spec) == fields
    out = to_json(res)
    assert {k: out[k] for k in fields} == fields
    assert to_kubernetes(res)["spec"] == fields


def test_what_kumactl_writes_back_is_accepted() -> None:
    """kumactl's PUT body carries the output-only kri and zero times: ignored."""
    body = {
        "type": "Mesh",
        "name": "demo",
        "creationTime": "0001-01-01T00:00:00Z",
        "modificationTime": "0001-01-01T00:00:00Z",
        "kri": "kri_m____demo_",
        "routing": {"localityAwareLoadBalancing": True},
    }
    res = from_document(body)
    assert res.key == Key(Kind.MESH, "", "demo") and dict(res.spec) == {
        "routing": {"localityAwareLoadBalancing": True}
    }


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"mtlss": {}}, "mtlss", "did you mean mtls?"),
        (
            {"metrics": {"enabledBackends": "p"}},
            "metrics.enabledBackends",
            "did you mean enabledBackend?",
        ),
        ({"routing": {"zoneEgres": True}}, "routing.zoneEgres", "did you mean zoneEgress?"),
        (
            {"mtls": {"backends": [{"name": "ca-1", "type": "builtin", "confg": {}}]}},
            "mtls.backends[0].confg",
            "did you mean conf?",
        ),
        ({"routing": {"zoneEgress": "yes"}}, "routing.zoneEgress", "must be true or false"),
        (
            {"mtls": {"backends": [{"name": "ca-1", "type": "builtin", "mode": True}]}},
            "mtls.backends[0].mode",
            "must be STRICT or PERMISSIVE",
        ),
        (
            {"tracing": {"backends": [{"sampling": "x"}]}},
            "tracing.backends[0].sampling",
            "a number",
        ),
        ({"skipCreatingInitialPolicies": "*"}, "skipCreatingInitialPolicies", "must be a list"),
        ({"quota": 1}, "quota", "unknown field 'quota': expected one of"),
    ],
)
def test_a_field_no_kuma_version_defines_is_refused_naming_the_nearest(
    change: dict[str, Any], field: str, message: str
) -> None:
    """Kuma drops an unknown Mesh field silently; here it is refused with the nearest
    known field, so a misspelling cannot be lost."""
    with pytest.raises(InvalidResource) as e:
        from_document({"type": "Mesh", "name": "default", **change})
    assert message in violations(e)[field]


@pytest.mark.parametrize("name", ["mesh.1", "1mesh", "a" * 64, "-mesh", "mesh-", "Mesh", "me_sh"])
async def test_new_mesh_names_follow_kumas_rfc_1035_rule(make_api: MakeApi, name: str) -> None:
    """Kuma (validators.ValidateRFC1035Name): a Mesh name is a DNS-1035 label, both through
    PUT and through an apply in either form."""
    api = await make_api()
    status, err, _ = await api.put(f"/meshes/{name}", {})
    assert status == 400 and [p["field"] for p in err["invalid_parameters"]] == ["name"], err
    k8s = {"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": {"name": name}}
    resp = await api.client.post("/_apply", json={"items": [{"type": "Mesh", "name": name}, k8s]})
    err = await resp.json()
    assert resp.status == 400
    assert {p["field"] for p in err["invalid_parameters"]} == {
        "items[0].name",
        "items[1].metadata.name",
    }


@pytest.mark.parametrize("name", ["default", "m", "my-mesh-2", "a" * 63])
async def test_rfc_1035_mesh_names_are_accepted(make_api: MakeApi, name: str) -> None:
    api = await make_api()
    assert (await api.put(f"/meshes/{name}", {}))[0] in (200, 201)


async def test_a_mesh_named_before_the_rule_can_still_be_changed(make_api: MakeApi) -> None:
    """Kuma's head refuses even updates of such a mesh (its upgrade notes ask for a rename);
    kds-sync checks the rule when a Mesh is created only, so a mesh made under the older
    rule keeps working: changed, given secrets, deleted."""
    api = await make_api()
    await api.store.put(Resource(Kind.MESH, "mesh.1"), "2026-11-30T00:00:00Z")
    assert (await api.put("/meshes/mesh.1", {"labels": {"team": "a"}}))[:2] == (200, {})
    assert (await api.put("/meshes/mesh.1/secrets/s", {"data": DATA}))[0] == 201
    assert (await api.delete("/meshes/mesh.1/secrets/s"))[0] == 200
    assert (await api.delete("/meshes/mesh.1"))[0] == 200


def test_a_secret_in_a_mesh_named_before_the_rule_is_still_addressable() -> None:
    """Kuma checks a resource's mesh with its older, looser rule, so meshes created before
    the RFC 1035 rule keep working; so does kds-sync."""
    res = from_document({"type": "Secret", "name": "s", "mesh": "mesh.1", "data": DATA})
    assert res.key == Key(Kind.SECRET, "mesh.1", "s")


def test_a_kuma_generated_ca_with_serial_number_0_works_as_a_provided_ca() -> None:
    """Kuma's builtin CAs have serial number 0 (RFC 5280 wants it positive): such a CA,
    brought along as a provided CA, passes the CA checks without a warning."""
    pair = certs.serial_zero_ca()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems = check_ca(pair.cert, pair.key)
    assert not problems, problems
    assert caught == []


# --------------------------------------------------------------------------- API


async def test_writes_answer_like_kuma_without_echoing_data(api: Api) -> None:
    """Kuma answers a PUT with {} (201 created, 200 updated), or {"warnings": [...]}."""
    path = "/meshes/default/secrets/s"
    assert (await api.put(path, {"data": DATA}))[:2] == (201, {})
    assert (await api.put(path, {"data": base64.b64encode(b"new").decode()}))[:2] == (200, {})
    status, body, _ = await api.put("/globalsecrets/user-token-signing-key-1", {"data": DATA})
    assert status == 201 and "stays on global" in body["warnings"][0]


async def test_computed_labels_and_get_then_put(api: Api) -> None:
    """Answers carry Kuma's computed labels; global accepts its own output back, and
    refuses a computed label that disagrees, naming it."""
    assert (await api.put("/meshes/default/secrets/s", {"data": DATA, "labels": {"a": "b"}}))[
        0
    ] == 201
    got = (await api.get("/meshes/default/secrets/s"))[1]
    assert got["labels"] == {
        "a": "b",
        "kuma.io/display-name": "s",
        "kuma.io/mesh": "default",
        "kuma.io/origin": "global",
    }
    assert (await api.put("/meshes/default/secrets/s", got))[2] == "unchanged"
    got["labels"]["kuma.io/origin"] = "zone"
    status, err, _ = await api.put("/meshes/default/secrets/s", got)
    assert status == 400
    assert [p["field"] for p in err["invalid_parameters"]] == ["labels[kuma.io/origin]"]
    mesh = (await api.get("/meshes/default"))[1]
    assert (await api.put("/meshes/default", mesh))[2] == "unchanged"


async def test_error_bodies_have_kumas_shape(api: Api) -> None:
    """Kuma's error body (pkg/core/rest/errors/types): type, status, title, detail,
    instance, invalid_parameters [{field, reason}], and the older details and causes."""
    status, err, _ = await api.put("/meshes/default/secrets/Bad_Name", {"data": DATA})
    assert status == 400
    assert set(err) == {
        "type",
        "status",
        "title",
        "detail",
        "instance",
        "invalid_parameters",
        "details",
        "causes",
    }
    assert err["type"] == "/std-errors" and err["status"] == 400 and err["instance"]
    assert err["details"] == err["detail"]
    assert [p["field"] for p in err["invalid_parameters"]] == ["name"]
    assert err["causes"] == [
        {"field": p["field"], "message": p["reason"]} for p in err["invalid_parameters"]
    ]


async def test_mesh_answers_carry_kumas_kri(api: Api) -> None:
    """Kuma's API answers carry a Mesh's resource identifier, ``kri_m____NAME_`` (its
    list_mesh golden files; rest/v1alpha1 ResourceMeta adds it to kinds with a short
    name, which Secrets and GlobalSecrets lack); the answer can be written back."""
    status, mesh = await api.get("/meshes/default")
    assert status == 200 and mesh["kri"] == "kri_m____default_"
    listing = (await api.get("/meshes"))[1]
    assert [i["kri"] for i in listing["items"]] == ["kri_m____default_"]
    assert (await api.put("/meshes/default", mesh))[2] == "unchanged"
    assert "kri" not in (await api.get("/meshes/default?format=k8s"))[1]
    assert (await api.put("/meshes/default/secrets/s", {"data": DATA}))[0] == 201
    assert "kri" not in (await api.get("/meshes/default/secrets/s"))[1]


async def test_a_mesh_is_found_by_its_kri(api: Api) -> None:
    """Kuma's GET /_kri/{kri} (its get_resource_by_kri golden files): the resource the
    identifier names, in either form; unknown is 404; a malformed identifier or one of an
    unknown short name is 400 (Kuma: "unknown short name of resource type")."""
    status, got = await api.get("/_kri/kri_m____default_")
    assert status == 200 and got == (await api.get("/meshes/default"))[1]
    status, got = await api.get("/_kri/kri_m____default_?format=k8s")
    assert status == 200 and got["kind"] == "Mesh" and got["metadata"]["name"] == "default"
    for missing in ("kri_m____nope_", "kri_m__zone-1__default_"):
        assert (await api.get(f"/_kri/{missing}"))[0] == 404, missing
    # Kuma's Universal looks at neither the namespace nor the section of the identifier.
    assert (await api.get("/_kri/kri_m___ns_default_sec"))[0] == 200
    for bad in ("kri___default_default__mtp-3_", "kri_mtp_default___one_", "kri_m_default", "x"):
        status, err = await api.get(f"/_kri/{bad}")
        assert status == 400 and err["invalid_parameters"][0]["field"] == "kri", bad


async def test_a_mesh_that_does_not_exist_is_404(api: Api) -> None:
    """Kuma looks the mesh of a Secret path up first: not there, 404, for every verb."""
    status, err, _ = await api.put("/meshes/nope/secrets/s", {"data": DATA})
    assert status == 404 and err["invalid_parameters"][0]["field"] == "mesh"
    assert (await api.get("/meshes/nope/secrets/s"))[0] == 404
    assert (await api.get("/meshes/nope/secrets"))[0] == 404
    assert (await api.delete("/meshes/nope/secrets/s"))[0] == 404


async def test_globalsecrets_and_secrets_paths(api: Api) -> None:
    """Kuma's path for global secrets is /globalsecrets (kumactl uses it; /global-secrets
    is its alternative); /secrets lists the secrets of every mesh."""
    assert (await api.put("/globalsecrets/g", {"data": DATA}))[0] == 201
    assert (await api.get("/globalsecrets/g")) == (await api.get("/global-secrets/g"))
    assert (await api.get("/globalsecrets"))[1]["total"] == 1
    assert (await api.put("/meshes/other", {}))[0] == 201
    for mesh in ("default", "other"):
        assert (await api.put(f"/meshes/{mesh}/secrets/s", {"data": DATA}))[0] == 201
    listing = (await api.get("/secrets"))[1]
    assert [(i["mesh"], i["name"]) for i in listing["items"]] == [("default", "s"), ("other", "s")]
    assert await api.delete("/globalsecrets/g") == (200, {})


async def test_format_k8s(api: Api) -> None:
    """?format=k8s (or kubernetes) answers the Kubernetes form (Kuma's, on a single
    resource; on lists too, kds-sync's addition); another value is a 400."""
    assert (await api.put("/meshes/default/secrets/s", {"data": DATA}))[0] == 201
    status, got = await api.get("/meshes/default/secrets/s?format=k8s")
    assert status == 200 and got["kind"] == "Secret" and got["type"] == "system.kuma.io/secret"
    assert got["metadata"]["labels"]["kuma.io/mesh"] == "default"
    assert got["data"] == {"value": DATA}
    assert (await api.get("/meshes/default?format=kubernetes"))[1]["kind"] == "Mesh"
    listing = (await api.get("/meshes/default/secrets?format=k8s&name=s"))[1]
    assert listing["total"] == 1 and listing["items"] == [got]
    status, err = await api.get("/meshes/default?format=xml")
    assert status == 400 and err["invalid_parameters"][0]["field"] == "format"


async def test_list_paging_defaults_and_maximum(api: Api) -> None:
    """Kuma pages lists by 100 unless told; size above 1000 (or below 1) is a 400."""
    items = [{"type": "GlobalSecret", "name": f"g{i:03}", "data": DATA} for i in range(101)]
    resp = await api.client.post("/_apply", json={"items": items})
    assert resp.status == 200
    status, page = await api.get("/globalsecrets")
    assert status == 200 and page["total"] == 101 and len(page["items"]) == 100
    assert page["next"] and "offset=100" in page["next"]
    assert len((await api.get("/globalsecrets?size=1000"))[1]["items"]) == 101
    for size in ("1001", "0"):
        status, err = await api.get(f"/globalsecrets?size={size}")
        assert status == 400 and err["invalid_parameters"][0]["field"] == "size"


async def test_list_name_and_label_filters(api: Api) -> None:
    """``name`` selects names containing it; filter[labels.KEY]=VALUE selects by a label,
    computed labels included; any other filter is a 400."""
    for name, team in (("db-password", "a"), ("db-user", "b"), ("api-key", "a")):
        body = {"data": DATA, "labels": {"team": team}}
        assert (await api.put(f"/meshes/default/secrets/{name}", body))[0] == 201

    async def names(query: str) -> list[str]:
        status, listing = await api.get(f"/meshes/default/secrets?{query}")
        assert status == 200, listing
        return [i["name"] for i in listing["items"]]

    assert await names("name=db-") == ["db-password", "db-user"]
    assert await names("filter[labels.team]=a") == ["api-key", "db-password"]
    assert await names("name=db&filter[labels.team]=a") == ["db-password"]
    assert await names("filter[labels.team]=a&size=1&offset=1") == ["db-password"]
    listing = (await api.get("/secrets?filter[labels.kuma.io/mesh]=default"))[1]
    assert listing["total"] == 3
    status, err = await api.get("/meshes/default/secrets?filter[name]=x")
    assert status == 400 and err["invalid_parameters"][0]["field"] == "filter[name]"


# --------------------------------------------------------------------------- kumactl


async def test_kumactl_apply_requests(api: Api) -> None:
    """kumactl apply, as its remote store sends it: GET the item (404: create), then PUT
    the Universal form with zero times (and kri for a Mesh); the answer is read as
    {warnings}. An update GETs the item and PUTs it with the file's labels."""
    status, _ = await api.get("/meshes/demo")
    assert status == 404
    mesh = {
        "type": "Mesh",
        "name": "demo",
        "creationTime": "0001-01-01T00:00:00Z",
        "modificationTime": "0001-01-01T00:00:00Z",
        "kri": "kri_m____demo_",
        "mtls": {
            "enabledBackend": "ca-1",
            "backends": [
                {"name": "ca-1", "type": "builtin", "conf": {"caCert": {"RSAbits": 2048}}}
            ],
        },
    }
    status, answer, _ = await api.put("/meshes/demo", mesh)
    assert (status, answer) == (201, {})
    secret = {
        "type": "Secret",
        "mesh": "demo",
        "name": "sample",
        "creationTime": "0001-01-01T00:00:00Z",
        "modificationTime": "0001-01-01T00:00:00Z",
        "data": DATA,
    }
    assert (await api.get("/meshes/demo/secrets/sample"))[0] == 404
    assert (await api.put("/meshes/demo/secrets/sample", secret))[:2] == (201, {})
    current = (await api.get("/meshes/demo/secrets/sample"))[1]
    update = {**secret, "creationTime": current["creationTime"], "labels": {"team": "a"}}
    assert (await api.put("/meshes/demo/secrets/sample", update))[:2] == (200, {})
    # kumactl get secrets: the list, paged with size and offset
    listing = (await api.get("/meshes/demo/secrets?size=100&offset=0"))[1]
    names = {i["name"] for i in listing["items"]}
    assert names == {"sample", "demo.ca-builtin-cert-ca-1", "demo.ca-builtin-key-ca-1"}
    # kumactl delete secret sample -m demo
    assert await api.delete("/meshes/demo/secrets/sample") == (200, {})
    status, err = await api.delete("/meshes/demo/secrets/sample")
    assert status == 404 and err["title"]


# --------------------------------------------------------------------------- KDS


async def test_system_global_secrets_are_not_sent_to_zones(tmp_path: Path) -> None:
    """Kuma's KDS filter keeps its system global secrets (admin token, internal CAs, user
    token signing keys and revocations; zone token signing keys, of which it sends only the
    public half) on global: global's snapshots and ranges leave them out."""
    engine = GlobalEngine(tmp_path / "g.db")
    store = SqliteGlobalStore(engine)
    try:
        now = "2026-11-30T00:00:00Z"
        names = [
            "admin-user-token",
            "envoy-admin-ca",
            "inter-cp-ca",
            "user-token-revocations",
            "user-token-signing-key-1",
            "zone-token-signing-key-1",
            "app-credentials",
        ]
        for name in names:
            await store.put(Resource(Kind.GLOBAL_SECRET, name, data=b"v"), now)
        await store.put(Resource(Kind.MESH, "default"), now)
        await store.put(Resource(Kind.SECRET, "user-token-signing-key-1", "default", b"v"), now)
        head = await store.head()
        hub = Hub(head, 0, 100)
        servicer = SyncServicer(
            store,
            hub,
            ZoneTracker(store, hub),
            tokens=None,
            instance_id="g",
            software_version="test",
            max_unacked=2,
            max_message_bytes=1 << 20,
            heartbeat_interval=1.0,
        )
        expected = {
            Key(Kind.GLOBAL_SECRET, "", "app-credentials"),
            Key(Kind.MESH, "", "default"),
            Key(Kind.SECRET, "default", "user-token-signing-key-1"),  # only GlobalSecrets
        }
        snap = await servicer.plans.snapshot()
        assert {k for p in snap.parts for k in p.sent_keys()} == expected
        assert snap.resources == 3
        plan = await servicer.plans.range_plan(SendRange(0, head))
        assert plan is not None
        assert {r.key for p in plan.parts for r in p.records} == expected
        assert plan.changes == 3
    finally:
        store.close()
