"""POST /_apply of Kubernetes-form Secrets and GlobalSecrets: in that form each is a
Kubernetes Secret in the control plane's namespace, so a name is one object. Applying it with
another mesh label is Kuma's "cannot change mesh of the Secret"; with the other type, a type
Kubernetes keeps. The Universal form keeps a name per mesh, as Kuma's Universal does."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kds.api import ApiContext, build_app
from kds.model import Key, Kind
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore

VALUE = base64.b64encode(b"value").decode()


def _k8s(name: str, mesh: str | None = None, kind: str = "secret") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "kuma-system"}
    if mesh is not None:
        meta["labels"] = {"kuma.io/mesh": mesh}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": {"value": VALUE},
        "type": f"system.kuma.io/{kind}",
    }


def _universal(name: str, mesh: str) -> dict[str, Any]:
    return {"type": "Secret", "mesh": mesh, "name": name, "data": VALUE}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, GlobalEngine]]:
    engine = GlobalEngine(tmp_path / "global.db")
    store = SqliteGlobalStore(engine)
    client = TestClient(TestServer(build_app(ApiContext(store=store, role="global"))))
    await client.start_server()
    for mesh in ("default", "m2"):
        resp = await client.put(f"/meshes/{mesh}", json={"type": "Mesh", "name": mesh})
        assert resp.status in (200, 201)
    yield client, engine
    await client.close()
    store.close()


async def _apply(client: TestClient, *items: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post("/_apply", json={"items": list(items)})
    return resp.status, await resp.json()


async def test_moving_a_kubernetes_secret_to_another_mesh_is_refused(
    client: tuple[TestClient, GlobalEngine],
) -> None:
    api, engine = client
    assert (await _apply(api, _k8s("s-lbl")))[0] == 200  # mesh default
    status, body = await _apply(api, _k8s("s-lbl", "m2"))
    assert status == 400, body
    (cause,) = body["causes"]
    assert cause["field"] == "items[0].metadata.labels[kuma.io/mesh]"
    assert "cannot change mesh of the Secret" in cause["message"]
    assert "'default'" in cause["message"] and "delete the Secret first" in cause["message"]
    assert engine.get(Key(Kind.SECRET, "m2", "s-lbl")) is None  # nothing applied
    # The same object applied again, unchanged, is fine.
    assert (await _apply(api, _k8s("s-lbl", "default")))[0] == 200


async def test_a_kubernetes_name_is_one_object_across_types_and_within_an_apply(
    client: tuple[TestClient, GlobalEngine],
) -> None:
    api, _ = client
    assert (await _apply(api, _k8s("sample-secret")))[0] == 200
    status, body = await _apply(api, _k8s("sample-secret", kind="global-secret"))
    assert status == 400
    assert body["causes"][0]["field"] == "items[0].type"
    assert "a Secret 'sample-secret' in mesh 'default' exists" in body["causes"][0]["message"]
    # Two meshes for one name in one apply: the second (and the first) is refused.
    status, body = await _apply(api, _k8s("twice", "default"), _k8s("twice", "m2"))
    assert status == 400 and len(body["causes"]) == 2


async def test_the_universal_form_keeps_a_name_per_mesh(
    client: tuple[TestClient, GlobalEngine],
) -> None:
    """Kuma's Universal form scopes a Secret's name by its mesh: unchanged."""
    api, engine = client
    assert (await _apply(api, _universal("shared", "default")))[0] == 200
    assert (await _apply(api, _universal("shared", "m2")))[0] == 200
    assert engine.get(Key(Kind.SECRET, "m2", "shared")) is not None
    # Either of them applied again in the Kubernetes form updates it in place.
    assert (await _apply(api, _k8s("shared", "m2")))[0] == 200
