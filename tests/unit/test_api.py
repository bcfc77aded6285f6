"""kds.api against a real SQLite store, on both roles."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from kds.api import (
    ApiContext,
    _resources,
    _size_bound,
    build_app,
    client_max_size,
    encoded_message_size,
)
from kds.model import Key, Kind, Limits, Resource
from kds.protocol.applier import DecodedBatch, Incoming
from kds.store import ResourceStore, WriteResult, open_global_store
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore, SqliteZoneStore, ZoneEngine

SECRET = b"s3cr3t-value-\x00\xff-do-not-leak"
SECRET_B64 = base64.b64encode(SECRET).decode()
OTHER = b"another-secret-value"
OTHER_B64 = base64.b64encode(OTHER).decode()


@dataclass
class Api:
    client: TestClient
    store: Any  # SqliteGlobalStore or SqliteZoneStore, by role
    engine: Any  # the store's engine, for reads the tests make without the event loop
    writes: list[WriteResult] = field(default_factory=list)

    async def put(self, path: str, body: Any) -> tuple[int, Any, str]:
        resp = await self.client.put(path, json=body)
        text = await resp.text()
        return resp.status, json.loads(text), resp.headers.get("X-Kds-Result", "")

    async def get(self, path: str) -> tuple[int, Any]:
        resp = await self.client.get(path)
        return resp.status, await resp.json()

    async def delete(self, path: str) -> tuple[int, Any]:
        resp = await self.client.delete(path)
        return resp.status, await resp.json()

    def counts(self) -> dict[str, dict[str, int]]:
        return self.engine.counts()


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[MakeApi]:
    made: list[Api] = []
    clock = itertools.count(1)

    def now() -> str:
        n = next(clock)
        return f"2026-11-29T01:{n // 60:02d}:{n % 60:02d}.000Z"

    async def factory(role: str = "global", zone: str = "", **kw: Any) -> Api:
        writes: list[WriteResult] = []
        on_commit = kw.pop("on_commit", writes.extend)
        db = tmp_path / f"{role}-{len(made)}.db"
        if role == "global":
            engine: Any = GlobalEngine(db, on_commit=on_commit)
            store: Any = SqliteGlobalStore(engine)
        else:
            engine = ZoneEngine(db, on_commit=on_commit)
            store = SqliteZoneStore(engine)
        ctx = ApiContext(store=store, role=role, zone=zone, now=now, **kw)  # type: ignore[arg-type]
        client = TestClient(TestServer(build_app(ctx)))
        await client.start_server()
        api = Api(client, store, engine, writes)
        made.append(api)
        return api

    yield factory
    for api in made:
        await api.client.close()
        api.store.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


async def _seed(api: Api) -> None:
    assert (await api.put("/meshes/default", {"type": "Mesh", "name": "default"}))[0] == 201


def _synced_batch(*resources: Resource, revision: int = 2) -> DecodedBatch:
    changes = tuple(Incoming(i + 1, r.key, r) for i, r in enumerate(resources))
    return DecodedBatch(
        seq=1,
        from_revision=0,
        revision=revision,
        snapshot=False,
        final=True,
        head_revision=revision,
        changes=changes,
    )


def _g(kind: Kind, name: str, mesh: str = "", data: bytes = b"", version: int = 1) -> Resource:
    ts = "2026-11-28T00:00:00.000Z"
    return Resource(kind, name, mesh, data, creation_time=ts, modification_time=ts, version=version)


# --------------------------------------------------------------------------- meta


async def test_index_and_openapi(make_api: MakeApi) -> None:
    zone = await make_api("zone", zone="zone-1")
    status, body = await zone.get("/")
    assert status == 200
    assert body["role"] == "zone" and body["zone"] == "zone-1" and body["version"]
    # Kuma's index fields, as kumactl reads them before every command; the product is ours.
    assert body["product"] == "kds-sync" and body["gui"] == ""
    assert body["clusterId"] == zone.store.store_id and body["hostname"] and body["instanceId"]
    _, on_global = await (await make_api("global")).get("/")
    assert on_global["role"] == "global" and on_global["gui"] == "/gui" and not on_global["zone"]

    resp = await zone.client.get("/openapi.yaml")
    assert resp.status == 200
    doc = yaml.safe_load(await resp.text())
    assert doc["openapi"].startswith("3.0")
    for path in (
        "/meshes",
        "/meshes/{name}",
        "/meshes/{mesh}/secrets",
        "/meshes/{mesh}/secrets/{name}",
        "/global-secrets",
        "/global-secrets/{name}",
        "/_kri/{kri}",
    ):
        assert path in doc["paths"]
    assert {"Resource", "Error", "List"} <= set(doc["components"]["schemas"])
    status, as_json = await zone.get("/openapi.json")
    assert status == 200 and as_json == doc


async def test_the_openapi_json_is_made_once(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open to anyone, and the YAML takes ~55 ms of the event loop to parse: parsed for every
    request before, so a few clients asking without pause held the loop."""
    import kds.api._app

    parses: list[str] = []
    load = kds.api._app.yaml.safe_load

    def counted(text: str) -> Any:
        parses.append(text)
        return load(text)

    monkeypatch.setattr(kds.api._app.yaml, "safe_load", counted)
    api = await make_api()
    answers = [await api.get("/openapi.json") for _ in range(3)]
    assert all(status == 200 for status, _ in answers) and answers[0] == answers[2]
    assert len(parses) == 1


def test_openapi_document_is_valid() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    doc = yaml.safe_load((Path(__file__).parents[2] / "kds" / "openapi.yaml").read_text())
    validator.validate(doc)


# --------------------------------------------------------------------------- CRUD


def shown_labels(name: str, mesh: str = "", **own: str) -> dict[str, str]:
    """The labels global's answers add to one of its resources (Kuma's computed labels)."""
    labels = {"kuma.io/display-name": name, "kuma.io/origin": "global", **own}
    if mesh:
        labels["kuma.io/mesh"] = mesh
    return labels


async def test_mesh_crud(api: Api) -> None:
    status, body, result = await api.put("/meshes/default", {"type": "Mesh", "name": "default"})
    assert (status, body, result) == (201, {}, "created")  # Kuma's answer: no resource echoed
    status, got = await api.get("/meshes/default")
    assert status == 200 and got["type"] == "Mesh" and got["name"] == "default"
    assert got["labels"] == shown_labels("default")
    assert got["creationTime"] and got["modificationTime"] == got["creationTime"]
    assert "data" not in got

    # the same body again: 200 and nothing changes, no push
    status, again, result = await api.put("/meshes/default", {})
    assert (status, again, result) == (200, {}, "unchanged")
    assert (await api.get("/meshes/default"))[1]["modificationTime"] == got["modificationTime"]
    assert len(api.writes) == 1

    status, _, result = await api.put("/meshes/default", {"labels": {"team": "a"}})
    assert (status, result) == (200, "updated")
    upd = (await api.get("/meshes/default"))[1]
    assert upd["labels"] == shown_labels("default", team="a")
    assert upd["creationTime"] == got["creationTime"]
    assert upd["modificationTime"] != got["modificationTime"]

    status, listing = await api.get("/meshes")
    assert status == 200
    assert listing == {"total": 1, "items": [upd], "next": None}

    assert await api.delete("/meshes/default") == (200, {})
    assert (await api.get("/meshes/default"))[0] == 404
    assert await api.get("/meshes") == (200, {"total": 0, "items": [], "next": None})
    assert [w.changed for w in api.writes] == [True, True, True]
    assert [w.record.deleted for w in api.writes if w.record] == [False, False, True]


async def test_secret_crud(api: Api) -> None:
    await _seed(api)
    body = {"type": "Secret", "name": "foo", "mesh": "default", "data": SECRET_B64}
    status, answer, result = await api.put("/meshes/default/secrets/foo", body)
    assert (status, answer, result) == (201, {}, "created")  # the data is not echoed back
    created = (await api.get("/meshes/default/secrets/foo"))[1]
    assert created["data"] == SECRET_B64
    assert created["mesh"] == "default"
    assert created["labels"] == shown_labels("foo", "default")
    rec = api.writes[-1].record
    assert rec is not None and rec.key == Key(Kind.SECRET, "default", "foo")

    # type, name and mesh may be left to the path
    status, _, result = await api.put("/meshes/default/secrets/foo", {"data": SECRET_B64})
    assert (status, result) == (200, "unchanged")
    assert (await api.get("/meshes/default/secrets/foo"))[1] == created
    status, _, result = await api.put("/meshes/default/secrets/foo", {"data": OTHER_B64})
    assert (status, result) == (200, "updated")

    # a GET answer can be PUT back as is, computed labels and times included (Kuma's global
    # accepts its own output)
    got = (await api.get("/meshes/default/secrets/foo"))[1]
    assert got["data"] == OTHER_B64
    status, _, result = await api.put("/meshes/default/secrets/foo", got)
    assert (status, result) == (200, "unchanged")

    status, listing = await api.get("/meshes/default/secrets")
    assert status == 200 and listing["total"] == 1 and listing["next"] is None
    assert listing["items"][0]["name"] == "foo" and listing["items"][0]["data"] == OTHER_B64

    assert await api.delete("/meshes/default/secrets/foo") == (200, {})
    assert (await api.get("/meshes/default/secrets/foo"))[0] == 404
    assert (await api.delete("/meshes/default/secrets/foo"))[0] == 404


async def test_global_secret_crud(api: Api) -> None:
    status, answer, result = await api.put(
        "/global-secrets/gs", {"type": "GlobalSecret", "name": "gs", "data": SECRET_B64}
    )
    assert (status, answer, result) == (201, {}, "created")
    created = (await api.get("/global-secrets/gs"))[1]
    assert "mesh" not in created and created["data"] == SECRET_B64
    assert created["labels"] == shown_labels("gs")
    listing = (await api.get("/global-secrets"))[1]
    assert listing == {"total": 1, "items": [created], "next": None}
    assert (await api.put("/global-secrets/gs", {"data": OTHER_B64}))[0] == 200
    assert await api.delete("/global-secrets/gs") == (200, {})
    assert (await api.get("/global-secrets/gs"))[0] == 404
    # a GlobalSecret is not a mesh Secret
    assert (await api.get("/global-secrets"))[1]["total"] == 0


async def test_list_pages(api: Api) -> None:
    for n in range(5):
        assert (await api.put(f"/global-secrets/s{n}", {"data": SECRET_B64}))[0] == 201
    status, page = await api.get("/global-secrets?size=2")
    assert status == 200 and page["total"] == 5
    assert [i["name"] for i in page["items"]] == ["s0", "s1"]
    names = []
    url = "/global-secrets?size=2"
    while url:
        page = (await api.get(url))[1]
        names += [i["name"] for i in page["items"]]
        url = page["next"] and page["next"][page["next"].index("/global-secrets") :]
    assert names == [f"s{n}" for n in range(5)]
    status, err = await api.get("/global-secrets?size=abc")
    assert status == 400 and err["causes"][0]["field"] == "size"


# --------------------------------------------------------------------------- invalid input

BAD = "/meshes/default/secrets/foo"

INVALID: list[tuple[str, str, Any, str]] = [
    ("bad name", "/global-secrets/bad_name", {"data": SECRET_B64}, "name"),
    ("name too long", "/global-secrets/" + "a" * 254, {"data": SECRET_B64}, "name"),
    ("uppercase name", "/global-secrets/Foo", {"data": SECRET_B64}, "name"),
    ("bad base64", BAD, {"data": "not*base64"}, "data"),
    ("empty data", BAD, {"data": ""}, "data"),
    ("no data", BAD, {"type": "Secret"}, "data"),
    ("data not a string", BAD, {"data": 12}, "data"),
    ("data over the limit", BAD, {"data": base64.b64encode(b"x" * 65).decode()}, "data"),
    ("bad label key", BAD, {"data": SECRET_B64, "labels": {"bad key": "v"}}, "labels[bad key]"),
    ("bad label value", BAD, {"data": SECRET_B64, "labels": {"app": "a b"}}, "labels[app]"),
    ("label value too long", BAD, {"data": SECRET_B64, "labels": {"a": "x" * 64}}, "labels[a]"),
    (
        "system label origin of a zone, on global",
        BAD,
        {"data": SECRET_B64, "labels": {"kuma.io/origin": "zone"}},
        "labels[kuma.io/origin]",
    ),
    (
        "system label zone",
        BAD,
        {"data": SECRET_B64, "labels": {"kuma.io/zone": "z"}},
        "labels[kuma.io/zone]",
    ),
    ("labels not a map", BAD, {"data": SECRET_B64, "labels": ["a"]}, "labels"),
    ("unknown type", BAD, {"type": "Token", "data": SECRET_B64}, "type"),
    ("type mismatch", BAD, {"type": "GlobalSecret", "data": SECRET_B64}, "type"),
    ("name mismatch", BAD, {"name": "bar", "data": SECRET_B64}, "name"),
    ("mesh mismatch", BAD, {"mesh": "other", "data": SECRET_B64}, "mesh"),
    ("unknown field", BAD, {"data": SECRET_B64, "value": SECRET_B64}, "value"),
    ("mesh field on a global secret", "/global-secrets/g", {"mesh": "default"}, "mesh"),
    ("data on a mesh", "/meshes/m2", {"data": SECRET_B64}, "data"),
    (
        "display name other than the name",
        BAD,
        {"data": SECRET_B64, "labels": {"kuma.io/display-name": "bar"}},
        "labels[kuma.io/display-name]",
    ),
    ("mesh name not an RFC 1035 label", "/meshes/1mesh", {}, "name"),
    ("body not an object", BAD, [SECRET_B64], ""),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
async def test_invalid_input_is_refused_naming_the_field(
    make_api: MakeApi, path: str, body: Any, field: str
) -> None:
    api = await make_api(limits=Limits(max_data_bytes=64))
    await _seed(api)
    before = api.counts()
    with capture_logs() as logs:
        resp = await api.client.put(path, json=body)
        text = await resp.text()
    assert resp.status == 400, text
    err = json.loads(text)
    assert err["status"] == 400 and err["title"] and err["detail"]
    assert field in [c["field"] for c in err["causes"]], err
    assert api.counts() == before
    assert len(api.writes) == 1  # the seed only
    for value in (SECRET_B64, "not*base64"):
        assert value not in text
        assert value not in repr(logs)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
)
async def test_malformed_body(api: Api, raw: bytes, detail: str) -> None:
    await _seed(api)
    resp = await api.client.put(
        "/global-secrets/x", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    err = await resp.json()
    assert detail in err["detail"] and err["causes"] == []
    assert api.counts()["GlobalSecret"] == {"global": 0, "zone": 0}


async def test_body_too_large(make_api: MakeApi) -> None:
    limits = Limits(max_data_bytes=64)
    api = await make_api(limits=limits)
    body = json.dumps({"data": "A" * (client_max_size(limits) + 10)}).encode()
    with capture_logs() as logs:
        resp = await api.client.put("/global-secrets/big", data=body)
        text = await resp.text()
    assert resp.status == 413
    err = json.loads(text)
    assert err["status"] == 413 and "64 bytes" in err["detail"]
    assert err["causes"][0]["field"] == "data"
    assert "AAAAAAAA" not in text and "AAAAAAAA" not in repr(logs)
    assert api.counts()["GlobalSecret"]["global"] == 0


async def test_resource_too_large_for_one_sync_message(make_api: MakeApi) -> None:
    api = await make_api(max_message_bytes=1024)
    ok = base64.b64encode(b"x" * 600).decode()
    assert (await api.put("/global-secrets/small", {"data": ok}))[0] == 201
    big = base64.b64encode(b"x" * 1000).decode()
    status, err, _ = await api.put("/global-secrets/big", {"data": big})
    assert status == 400
    assert err["causes"][0]["field"] == "data" and "1024" in err["causes"][0]["message"]
    assert (await api.get("/global-secrets/big"))[0] == 404
    # an update that grows past the limit leaves the old value
    status, _, _ = await api.put("/global-secrets/small", {"data": big})
    assert status == 400
    assert (await api.get("/global-secrets/small"))[1]["data"] == ok


# --------------------------------------------------------------------------- 404 / 405 / 409


async def test_not_found(api: Api) -> None:
    status, err = await api.get("/meshes/nope")
    assert status == 404 and err["title"] == "Not found" and "nope" in err["detail"]
    status, err = await api.get("/meshes/nope/secrets/foo")
    assert status == 404 and "mesh 'nope' does not exist" in err["detail"]
    status, err = await api.get("/meshes/nope/secrets")
    assert status == 404 and "mesh 'nope'" in err["detail"]
    status, err = await api.delete("/meshes/nope/secrets/foo")
    assert status == 404 and "mesh 'nope' does not exist" in err["detail"]
    assert err["causes"] == [{"field": "mesh", "message": "mesh 'nope' does not exist"}]
    # In a mesh that exists, the Secret itself is what is missing.
    assert (await api.put("/meshes/default", {"type": "Mesh", "name": "default"}))[0] == 201
    status, err = await api.get("/meshes/default/secrets/foo")
    assert status == 404 and "foo" in err["detail"] and "mesh" not in str(err["causes"])
    status, err = await api.delete("/meshes/default/secrets/foo")
    assert status == 404 and "foo" in err["detail"] and "mesh" not in str(err["causes"])
    assert (await api.delete("/global-secrets/nope"))[0] == 404
    assert (await api.delete("/meshes/nope"))[0] == 404


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "Secret", "mesh": "nope", "name": "foo", "data": "YQ=="}',  # valid
        b'{"type": "Secret", "mesh": "nope", "name": "foo", "data": "not base64!"}',
        b'{"type": "Secret", "mesh": "nope", "name": "foo", "data": "YQ==", "extra": 1}',
        b"{not json",
        b"",
    ],
)
async def test_secret_in_a_missing_mesh_is_404_whatever_its_body(api: Api, body: bytes) -> None:
    """A Secret PUT to a mesh that does not exist answers 404 naming the mesh, before any
    problem with its body, and writes nothing."""
    resp = await api.client.put(
        "/meshes/nope/secrets/foo", data=body, headers={"Content-Type": "application/json"}
    )
    err = await resp.json()
    assert resp.status == 404, err
    assert "mesh 'nope' does not exist" in err["detail"]
    assert err["causes"] == [{"field": "mesh", "message": "mesh 'nope' does not exist"}]
    assert api.counts()["Secret"] == {"global": 0, "zone": 0}
    status, err = await api.get("/no/such/path")
    assert status == 404 and err["status"] == 404 and err["causes"] == []
    resp = await api.client.post("/meshes/x")
    assert resp.status == 405 and "PUT" in resp.headers["Allow"]
    assert (await resp.json())["status"] == 405


async def test_delete_mesh_with_secrets_is_a_conflict(api: Api) -> None:
    await _seed(api)
    assert (await api.put("/meshes/default/secrets/a", {"data": SECRET_B64}))[0] == 201
    status, err = await api.delete("/meshes/default")
    assert status == 409 and err["title"] == "Conflict"
    assert "secret" in err["detail"] and SECRET_B64 not in json.dumps(err)
    assert (await api.get("/meshes/default"))[0] == 200
    assert await api.delete("/meshes/default/secrets/a") == (200, {})
    assert await api.delete("/meshes/default") == (200, {})


# --------------------------------------------------------------------------- zone


async def _zone_with_synced(make_api: MakeApi) -> Api:
    zone = await make_api("zone", zone="zone-1")
    batch = _synced_batch(
        _g(Kind.MESH, "default", version=1),
        _g(Kind.SECRET, "synced", "default", SECRET, version=2),
        _g(Kind.GLOBAL_SECRET, "gsynced", "", SECRET, version=3),
        revision=3,
    )
    await zone.store.apply_batch(batch, "global-store", "now")
    return zone


async def test_zone_synced_rows_are_read_only(make_api: MakeApi) -> None:
    zone = await _zone_with_synced(make_api)
    before = zone.counts()
    for path, body in [
        ("/meshes/default/secrets/synced", {"data": OTHER_B64}),
        ("/global-secrets/gsynced", {"data": OTHER_B64}),
        ("/meshes/default", {"labels": {"env": "dev"}}),  # a change: unchanged is no error
    ]:
        status, err, _ = await zone.put(path, body)
        assert status == 409, path
        assert "global" in err["detail"] and err["title"] == "Conflict"
        assert SECRET_B64 not in json.dumps(err) and OTHER_B64 not in json.dumps(err)
        status, err = await zone.delete(path)
        assert status == 409 and "global" in err["detail"]
    assert zone.counts() == before
    assert zone.writes == []
    status, got = await zone.get("/meshes/default/secrets/synced")
    assert status == 200 and got["data"] == SECRET_B64
    assert got["labels"] == shown_labels("synced", "default")


ZONE_LOCAL = {"kuma.io/origin": "zone", "kuma.io/zone": "zone-1", "kuma.io/env": "universal"}


async def test_zone_local_resources(make_api: MakeApi) -> None:
    zone = await _zone_with_synced(make_api)
    # a zone-local secret in a synced mesh
    status, body, _ = await zone.put("/meshes/default/secrets/local", {"data": OTHER_B64})
    assert (status, body) == (201, {})
    local_labels = {
        **ZONE_LOCAL,
        "kuma.io/display-name": "local",
        "kuma.io/mesh": "default",
    }
    assert (await zone.get("/meshes/default/secrets/local"))[1]["labels"] == local_labels
    status, listing = await zone.get("/meshes/default/secrets")
    by_name = {i["name"]: i["labels"] for i in listing["items"]}
    assert by_name == {"local": local_labels, "synced": shown_labels("synced", "default")}
    # a zone's own resource, read and written back as it is, is accepted there
    got = (await zone.get("/meshes/default/secrets/local"))[1]
    assert (await zone.put("/meshes/default/secrets/local", got))[2] == "unchanged"
    assert len(zone.writes) == 1 and zone.writes[0].record is None
    # zone-local mesh and global secret
    assert (await zone.put("/meshes/zmesh", {"labels": {"env": "dev"}}))[0] == 201
    status, ms = await zone.get("/meshes")
    assert [(m["name"], m["labels"]["kuma.io/origin"]) for m in ms["items"]] == [
        ("default", "global"),
        ("zmesh", "zone"),
    ]
    assert (await zone.put("/global-secrets/zg", {"data": OTHER_B64}))[0] == 201
    assert (await zone.put("/global-secrets/zg", {"data": OTHER_B64}))[2] == "unchanged"
    assert (await zone.put("/global-secrets/zg", {"data": SECRET_B64}))[2] == "updated"
    assert await zone.delete("/global-secrets/zg") == (200, {})
    assert await zone.delete("/meshes/default/secrets/local") == (200, {})


async def test_zone_local_row_shadowing_a_synced_copy(make_api: MakeApi) -> None:
    zone = await make_api("zone", zone="zone-1")
    assert (await zone.put("/global-secrets/shared", {"data": OTHER_B64}))[0] == 201
    # global later syncs the same key: the zone-local row keeps being served
    batch = _synced_batch(_g(Kind.GLOBAL_SECRET, "shared", "", SECRET, version=1), revision=1)
    await zone.store.apply_batch(batch, "global-store", "now")
    status, got = await zone.get("/global-secrets/shared")
    assert got["data"] == OTHER_B64 and got["labels"]["kuma.io/origin"] == "zone"
    # the local row can still be changed; deleting it reveals global's copy
    status, _, result = await zone.put(
        "/global-secrets/shared", {"data": base64.b64encode(b"z").decode()}
    )
    assert (status, result) == (200, "updated")
    assert await zone.delete("/global-secrets/shared") == (200, {})
    status, got = await zone.get("/global-secrets/shared")
    assert got["data"] == SECRET_B64 and got["labels"] == shown_labels("shared")
    # and now it is read-only again: a new local row under that key is refused
    status, err, _ = await zone.put("/global-secrets/shared", {"data": OTHER_B64})
    assert status == 409 and "global" in err["detail"]


# --------------------------------------------------------------------------- logs, failures


async def test_writes_are_logged_without_data(api: Api) -> None:
    with capture_logs() as logs:
        await _seed(api)
        await api.put("/meshes/default/secrets/foo", {"data": SECRET_B64})
        await api.put("/meshes/default/secrets/foo", {"data": OTHER_B64})
        await api.put("/meshes/default/secrets/foo", {"data": OTHER_B64})  # unchanged
        await api.delete("/meshes/default/secrets/foo")
    written = [e for e in logs if e["event"] == "resource written"]
    assert [(e["type"], e["mesh"], e["name"]) for e in written] == [
        ("Mesh", "", "default"),
        ("Secret", "default", "foo"),
        ("Secret", "default", "foo"),
    ]
    assert all(e["log_level"] == "info" and e["origin"] == "global" for e in written)
    assert [e["version"] for e in written] == [1, 2, 3]
    deleted = [e for e in logs if e["event"] == "resource deleted"]
    assert len(deleted) == 1 and deleted[0]["version"] == 4 and deleted[0]["name"] == "foo"
    text = repr(logs)
    for value in (SECRET_B64, OTHER_B64, repr(SECRET), repr(OTHER), "s3cr3t", "another-secret"):
        assert value not in text


async def test_unexpected_error_is_500_without_details(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _seed(api)

    def boom(resource: Resource, now: str) -> WriteResult:
        raise RuntimeError(f"failed on {resource.data!r}")

    monkeypatch.setattr(api.engine, "put", boom)
    with capture_logs() as logs:
        resp = await api.client.put("/global-secrets/x", json={"data": SECRET_B64})
        text = await resp.text()
    assert resp.status == 500
    err = json.loads(text)
    assert err["title"] == "Internal server error" and err["causes"] == []
    assert "s3cr3t" not in text and SECRET_B64 not in text
    assert [e["event"] for e in logs] == ["unhandled error in API handler"]
    assert logs[0]["error_type"] == "RuntimeError" and logs[0]["log_level"] == "error"
    assert "s3cr3t" not in repr(logs) and SECRET_B64 not in repr(logs)


async def test_failing_on_commit_hook_does_not_fail_the_write(make_api: MakeApi) -> None:
    def hook(results: Sequence[WriteResult]) -> None:
        raise RuntimeError("hub down")

    api = await make_api(on_commit=hook)
    with capture_logs() as logs:
        assert (await api.put("/global-secrets/x", {"data": SECRET_B64}))[0] == 201
    assert any(e["event"] == "on_commit hook failed" for e in logs)
    assert (await api.get("/global-secrets/x"))[0] == 200


async def test_extra_routes(tmp_path: Path) -> None:
    from aiohttp import web

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    store: ResourceStore = open_global_store(tmp_path / "x.db")
    app = build_app(ApiContext(store=store, role="global"), [web.get("/status", status)])
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/status")
        assert await resp.json() == {"ok": True}
        resp = await client.put("/global-secrets/a", json={"data": SECRET_B64})
        assert resp.status == 201
        body = await (await client.get("/global-secrets/a")).json()
        assert body["creationTime"].endswith("Z")
    store.close()


# --------------------------------------------------------------------------- POST /_apply


async def _apply(api: Api, items: Any) -> tuple[int, Any]:
    resp = await api.client.post("/_apply", json={"items": items} if items is not None else {})
    return resp.status, await resp.json()


def _sec(name: str, mesh: str = "payments", data: str = SECRET_B64) -> dict[str, Any]:
    return {"type": "Secret", "mesh": mesh, "name": name, "data": data}


async def test_apply_many_in_one_transaction_meshes_first(api: Api) -> None:
    """Secrets listed before their Mesh still apply; each item gets its own revision."""
    head = api.engine.head()
    status, body = await _apply(
        api,
        [
            _sec("a"),
            _sec("b"),
            {"type": "Mesh", "name": "payments"},
            {"type": "GlobalSecret", "name": "g", "data": OTHER_B64},
        ],
    )
    assert status == 200, body
    assert [(i["type"], i["name"], i["result"]) for i in body["items"]] == [
        ("Mesh", "payments", "created"),
        ("Secret", "a", "created"),
        ("Secret", "b", "created"),
        ("GlobalSecret", "g", "created"),
    ]
    assert api.engine.head() == head + 4
    assert [w.record.revision for w in api.writes if w.record] == list(range(head + 1, head + 5))
    status, body = await _apply(
        api, [{"type": "Mesh", "name": "payments"}, _sec("a", data=OTHER_B64)]
    )
    assert [i["result"] for i in body["items"]] == ["unchanged", "updated"]


async def test_apply_audit_names_every_written_resource_in_few_lines(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An apply logs "resources written" lines naming each created or updated resource with
    its version, APPLIED_PER_LINE to a line (unchanged ones are left out), and never data."""
    monkeypatch.setattr(_resources, "APPLIED_PER_LINE", 2)
    await _seed(api)
    await _apply(api, [{"type": "Mesh", "name": "payments"}, _sec("a")])
    with capture_logs() as logs:
        status, _ = await _apply(
            api,
            [
                {"type": "Mesh", "name": "payments"},  # unchanged
                _sec("a", data=OTHER_B64),
                _sec("b"),
                {"type": "GlobalSecret", "name": "g", "data": OTHER_B64},
            ],
        )
    assert status == 200
    lines = [e for e in logs if e["event"] == "resources written"]
    assert [e["resources"] for e in lines] == [
        ["Secret payments/a v4 updated", "Secret payments/b v5 created"],
        ["GlobalSecret g v6 created"],
    ]
    assert all(e["log_level"] == "info" and e["origin"] == "global" for e in lines)
    assert not [e for e in logs if e["event"] == "resource written"]
    summary = [e for e in logs if e["event"] == "resources applied"]
    assert [(e["created"], e["updated"], e["unchanged"]) for e in summary] == [(2, 1, 1)]
    assert SECRET_B64 not in repr(logs) and OTHER_B64 not in repr(logs)
    # long names end a line before its names pass APPLIED_LINE_CHARS
    monkeypatch.setattr(_resources, "APPLIED_PER_LINE", 100)
    monkeypatch.setattr(_resources, "APPLIED_LINE_CHARS", 200)
    names = [f"{c}{'x' * 60}" for c in "abcde"]
    with capture_logs() as logs:
        status, _ = await _apply(api, [_sec(n) for n in names])
    assert status == 200
    lines = [e["resources"] for e in logs if e["event"] == "resources written"]
    assert [len(r) for r in lines] == [2, 2, 1]
    assert [r.split()[1] for line in lines for r in line] == [f"payments/{n}" for n in names]
    assert all(sum(len(r) + 4 for r in line) <= 200 for line in lines)


async def test_apply_is_all_or_nothing(api: Api) -> None:
    """One invalid item (or one missing mesh) refuses the request naming items[i]; nothing is written."""
    await _seed(api)
    before = api.counts()
    status, body = await _apply(api, [_sec("ok", "default"), _sec("Bad_Name", "default", "%%")])
    assert status == 400
    fields = {c["field"] for c in body["causes"]}
    assert {"items[1].name", "items[1].data"} <= fields
    status, body = await _apply(api, [_sec("ok", "default"), _sec("s", "nowhere")])
    assert status == 400
    assert body["causes"] == [
        {"field": "items[1].mesh", "message": "mesh 'nowhere' does not exist"}
    ]
    assert api.counts() == before
    assert SECRET_B64 not in json.dumps(body)


async def test_apply_refuses_duplicates_and_bad_shapes(api: Api) -> None:
    """The same key twice, or a body without an items list, is a 400 naming the field."""
    await _seed(api)
    status, body = await _apply(api, [_sec("x", "default"), _sec("x", "default")])
    assert status == 400 and body["causes"][0]["field"] == "items[1]"
    status, body = await _apply(api, None)
    assert status == 400 and body["causes"][0]["field"] == "items"


async def test_apply_on_a_zone_cannot_touch_synced_copies(make_api: MakeApi) -> None:
    """On a zone, an item whose key a synced copy holds makes the whole request a 409."""
    zone = await make_api("zone", zone="z1")
    await zone.store.apply_batch(
        _synced_batch(_g(Kind.MESH, "default"), _g(Kind.SECRET, "s", "default", b"g")),
        "gsid",
        "2026-11-29T00:00:00.000Z",
    )
    status, body = await _apply(zone, [_sec("mine", "default"), _sec("s", "default")])
    assert status == 409 and "items[1]" in body["detail"] and "global" in body["detail"]
    assert zone.engine.get(Key(Kind.SECRET, "default", "mine")) is None


@pytest.mark.parametrize(
    "res",
    [
        Resource(Kind.SECRET, "s", "default"),
        Resource(Kind.SECRET, "a" * 253, "m" * 253, data=b"\xff" * 70_000),
        Resource(Kind.GLOBAL_SECRET, "g", data=b"x", labels={"k" * 63: "v" * 63, "a": ""}),
        Resource(Kind.MESH, "m", spec={"mtls": {"enabledBackend": "ca-1"}}),
    ],
)
def test_size_bound_is_never_below_the_encoded_size(res: Resource) -> None:
    """The cheap bound the API checks first never under-counts the real encoded size."""
    now = "2026-01-01T00:00:00.000Z"
    assert _size_bound(res, now) >= encoded_message_size(res, now)
