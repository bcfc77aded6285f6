"""POST /_apply of Kubernetes-form Secrets and GlobalSecrets: in that form each is a
Kubernetes Secret in the control plane's namespace, so a name is one object. Applying it with
another mesh label is Kuma's "cannot change mesh of the Secret"; with the other type, a type
Kubernetes keeps. The Universal form keeps a name per mesh, as Kuma's Universal does."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kds.api import ApiContext, build_app
from kds.model import Key, Kind, Resource
from kds.store import GlobalStore
from kds.store.sqlite import GlobalEngine, SqliteGlobalStore
from tests.unit.store_backends import BACKENDS, T0

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


# The rule holds inside the write's transaction, on both backends: the API's read before the
# write cannot see a write made after it.


@pytest.fixture(params=sorted(BACKENDS))
async def backend_api(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[TestClient, GlobalStore]]:
    store = BACKENDS[request.param](tmp_path).global_store("global")
    client = TestClient(TestServer(build_app(ApiContext(store=store, role="global"))))
    await client.start_server()
    for mesh in ("default", "m2"):
        resp = await client.put(f"/meshes/{mesh}", json={"type": "Mesh", "name": mesh})
        assert resp.status in (200, 201)
    yield client, store
    await client.close()
    store.close()


async def test_a_name_taken_between_the_check_and_the_write_is_refused(
    backend_api: tuple[TestClient, GlobalStore],
) -> None:
    """Another write commits the name in another mesh after the API's read, before its
    write: the apply is refused with the answer the read would have given."""
    api, store = backend_api
    put_many = store.put_many
    racer: list[str] = []

    async def racing_put_many(*args: Any, **kw: Any) -> Any:
        await store.put(Resource(Kind.SECRET, racer[-1], mesh="m2", data=b"v"), T0)
        return await put_many(*args, **kw)

    store.put_many = racing_put_many  # type: ignore[method-assign]
    racer.append("raced")
    status, body = await _apply(api, _k8s("raced", "default"))
    assert status == 400, body
    assert body["detail"] == "nothing was applied"
    (cause,) = body["causes"]
    assert cause["field"] == "items[0].metadata.labels[kuma.io/mesh]"
    assert cause["message"] == (
        "cannot change mesh of the Secret: Secret 'raced' is in mesh 'm2'; delete the Secret "
        "first and apply it again (in the Kubernetes form a name is one Kubernetes Secret, "
        "whatever its mesh)"
    )
    assert await store.get(Key(Kind.SECRET, "default", "raced")) is None  # nothing applied
    # A GlobalSecret whose name a Secret takes meanwhile: refused the same way (field type).
    racer.append("raced-g")
    status, body = await _apply(api, _k8s("raced-g", kind="global-secret"))
    assert status == 400, body
    assert body["causes"][0]["field"] == "items[0].type"
    assert "a Secret 'raced-g' in mesh 'm2' exists" in body["causes"][0]["message"]
    assert await store.get(Key(Kind.GLOBAL_SECRET, "", "raced-g")) is None


async def test_two_applies_racing_for_one_name_in_two_meshes_end_with_one_refused(
    backend_api: tuple[TestClient, GlobalStore],
) -> None:
    api, store = backend_api
    put_many = store.put_many
    both_checked = asyncio.Barrier(2)

    async def after_both_checks(*args: Any, **kw: Any) -> Any:
        await both_checked.wait()  # each apply's read found the name free
        return await put_many(*args, **kw)

    store.put_many = after_both_checks  # type: ignore[method-assign]
    answers = await asyncio.gather(
        _apply(api, _k8s("contested", "default")), _apply(api, _k8s("contested", "m2"))
    )
    assert sorted(status for status, _ in answers) == [200, 400], answers
    (refused,) = [body for status, body in answers if status == 400]
    assert "cannot change mesh of the Secret" in refused["causes"][0]["message"]
    held = [await store.get(Key(Kind.SECRET, mesh, "contested")) for mesh in ("default", "m2")]
    assert sum(row is not None for row in held) == 1
