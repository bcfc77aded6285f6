"""Query parameters and paths a client cannot be trusted with, on the list and item routes
of Kuma's API: label filters with odd keys, repeated parameters, and error answers that
quote what the request sent (always escaped and cut, never growing with the request)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kds.api import ApiContext, build_app
from kds.api.auth import ApiTokens
from tests.unit.store_backends import BACKENDS
from tests.unit.test_api import Api, MakeApi
from tests.unit.test_api import make_api as make_api_fixture  # noqa: F401  # registers it


@pytest.fixture
def make_api(make_api_fixture: MakeApi) -> MakeApi:  # noqa: F811
    return make_api_fixture


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    api = await make_api()
    assert (await api.put("/meshes/default", {"type": "Mesh", "name": "default"}))[0] == 201
    return api


DATA = base64.b64encode(b"never-shown-to-read-only").decode()


def _fields(body: dict[str, object]) -> list[str]:
    return [p["field"] for p in body["invalid_parameters"]]  # type: ignore[attr-defined,index]


async def test_a_filter_operator_is_refused_as_kuma_refuses_it(api: Api) -> None:
    """Kuma's key ends at the first ']': filter[labels.K][eq] is "advanced filters are not
    supported" (400), never a filter on a key named "K][eq" that silently matches nothing."""
    status, body = await api.get("/meshes?filter[labels.kuma.io/origin][eq]=global")
    assert status == 400
    assert _fields(body) == ["filter[labels.kuma.io/origin][eq]"]
    assert "advanced filters are not supported" in body["invalid_parameters"][0]["reason"]
    status, body = await api.get("/meshes?filter[labels.kuma.io/origin]=global")
    assert status == 200 and [i["name"] for i in body["items"]] == ["default"]


async def test_a_repeated_filter_takes_its_last_value_and_is_refused_once(api: Api) -> None:
    status, body = await api.get(
        "/meshes?filter[labels.kuma.io/origin]=zone&filter[labels.kuma.io/origin]=global"
    )
    assert status == 200 and body["total"] == 1
    status, body = await api.get("/meshes?filter[x]=1&filter[x]=2")
    assert status == 400 and _fields(body) == ["filter[x]"]


async def test_refused_filters_are_named_escaped_and_few(api: Api) -> None:
    query = "&".join(f"filter[%1b[31m{i}]=1" for i in range(200))
    resp = await api.client.get(f"/meshes?{query}")
    text = await resp.text()
    assert resp.status == 400
    body = json.loads(text)
    assert len(body["invalid_parameters"]) == 10
    assert "\x1b" not in json.dumps(body, ensure_ascii=False)
    assert body["invalid_parameters"][0]["field"] == "filter[\\x1b[31m0]"


@pytest.mark.parametrize(
    "path",
    [
        "/meshes/default/secrets/%1b]0;owned%07{long}",
        "/globalsecrets/%1b[2J{long}",
        "/meshes/%1b[2J{long}/secrets",
        "/no-such-path/%1b[2J{long}",
    ],
)
async def test_an_error_quoting_the_path_is_escaped_and_bounded(api: Api, path: str) -> None:
    long = "x" * 6000
    resp = await api.client.get(path.format(long=long))
    text = await resp.text()
    assert resp.status == 404, text
    body = json.loads(text)
    shown = json.dumps(body, ensure_ascii=False)
    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b" in body["detail"]
    assert len(body["detail"]) < 2200 and len(text) < 8 * 1024


@pytest.mark.parametrize(
    "path",
    [
        "/secrets",
        "/secrets?format=k8s",
        "/secrets?filter[labels.kuma.io/origin]=global&name=s",
        "/meshes/default/secrets?format=k8s",
        "/meshes/default/secrets/s?format=k8s",
        "/globalsecrets",
        "/globalsecrets?format=k8s",
        "/globalsecrets/g",
        "/globalsecrets/g?format=kubernetes",
    ],
)
async def test_the_read_only_token_sees_no_data_on_kumas_paths_and_forms(
    make_api: MakeApi, tmp_path: Path, path: str
) -> None:
    tokens = ApiTokens(admin="a" * 20, read_only="r" * 20, admin_file=tmp_path / "admin-token")
    api = await make_api(tokens=tokens)
    admin = {"Authorization": "Bearer " + "a" * 20}
    for p, body in [
        ("/meshes/default", {"type": "Mesh", "name": "default"}),
        (
            "/meshes/default/secrets/s",
            {"type": "Secret", "mesh": "default", "name": "s", "data": DATA},
        ),
        ("/globalsecrets/g", {"type": "GlobalSecret", "name": "g", "data": DATA}),
    ]:
        assert (await api.client.put(p, json=body, headers=admin)).status in (200, 201)
    resp = await api.client.get(path, headers={"Authorization": "Bearer " + "r" * 20})
    text = await resp.text()
    assert resp.status == 200, text
    assert '"s"' in text or '"g"' in text, text
    assert DATA not in text and '"data"' not in text and '"value"' not in text


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("global.example:5681", "http://global.example:5681/meshes?size=1&offset=1"),
        ("[::1]:5681", "http://[::1]:5681/meshes?size=1&offset=1"),
        ("a:b:c", "/meshes?size=1&offset=1"),  # was a 500
        ("evil.example/x?y#", "/meshes?size=1&offset=1"),  # was http://evil.example/x?y#/...
        ("a b", "/meshes?size=1&offset=1"),
    ],
)
async def test_the_next_page_names_only_a_host_the_host_header_can_be(
    api: Api, host: str, shown: str
) -> None:
    assert (await api.put("/meshes/other", {"type": "Mesh", "name": "other"}))[0] == 201
    resp = await api.client.get("/meshes?size=1", headers={"Host": host})
    text = await resp.text()
    assert resp.status == 200, text
    assert json.loads(text)["next"] == shown


@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_a_nul_in_the_path_or_a_parameter_is_a_400_on_every_store(
    tmp_path: Path, backend: str
) -> None:
    """No name holds a NUL; PostgreSQL refuses one in any text it is sent, so these reads
    were each a 500 on it, logged with their stack, and 404s on SQLite."""
    store = BACKENDS[backend](tmp_path).global_store("g")
    client = TestClient(TestServer(build_app(ApiContext(store=store, role="global"))))
    await client.start_server()
    try:
        for method, path, field in [
            ("GET", "/meshes/a%00b", "path"),
            ("DELETE", "/meshes/default/secrets/a%00b", "path"),
            ("GET", "/meshes/a%00b/secrets", "path"),
            ("PUT", "/meshes/a%00b/secrets/s", "path"),
            ("GET", "/globalsecrets/g%00", "path"),
            ("GET", "/_kri/kri_m____a%00_", "path"),
            ("GET", "/meshes?name=a%00", "name"),
            ("GET", "/secrets?filter[labels.kuma.io/mesh]=%00", "filter[labels.kuma.io/mesh]"),
        ]:
            resp = await client.request(method, path, json={} if method == "PUT" else None)
            text = await resp.text()
            assert resp.status == 400, (path, text)
            assert _fields(json.loads(text)) == [field], text
    finally:
        await client.close()
        store.close()
