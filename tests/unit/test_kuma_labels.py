"""The labels a zone computes for its own resources, as Kuma computes them
(pkg/core/resources/labels: kuma.io/zone and kuma.io/env only for the kinds a zone provides,
Secret and GlobalSecret, never a Mesh), and a zone's own answer written back as it is."""

from __future__ import annotations

import base64
import json

import pytest

from tests.unit.test_api import MakeApi
from tests.unit.test_api import make_api as make_api_fixture  # noqa: F401  # registers it

DATA = base64.b64encode(b"zone-own").decode()


@pytest.fixture
def make_api(make_api_fixture: MakeApi) -> MakeApi:  # noqa: F811
    return make_api_fixture


async def test_a_zone_mesh_has_no_zone_or_env_label(make_api: MakeApi) -> None:
    zone = await make_api("zone", zone="zone-1")
    assert (await zone.put("/meshes/zmesh", {"type": "Mesh", "name": "zmesh"}))[0] == 201
    got = (await zone.get("/meshes/zmesh"))[1]
    assert got["labels"] == {"kuma.io/display-name": "zmesh", "kuma.io/origin": "zone"}
    assert (await zone.put("/meshes/zmesh", got))[2] == "unchanged"  # GET then PUT
    listed = (await zone.get("/meshes?format=k8s"))[1]["items"][0]["metadata"]["labels"]
    assert listed == got["labels"]
    for label in ("kuma.io/zone", "kuma.io/env"):
        body = {"type": "Mesh", "name": "zmesh", "labels": {label: "x"}}
        status, err, _ = await zone.put("/meshes/zmesh", body)
        assert status == 400 and err["invalid_parameters"][0]["field"] == f"labels[{label}]"
        status, err, _ = await zone.put("/meshes/zmesh", {"labels": {label: "x"}})  # no type
        assert status == 400, err


async def test_a_zone_secret_and_global_secret_have_them(make_api: MakeApi) -> None:
    zone = await make_api("zone", zone="zone-1")
    assert (await zone.put("/meshes/zmesh", {"type": "Mesh", "name": "zmesh"}))[0] == 201
    assert (await zone.put("/meshes/zmesh/secrets/s", {"data": DATA}))[0] == 201
    assert (await zone.put("/globalsecrets/g", {"data": DATA}))[0] == 201
    for path in ("/meshes/zmesh/secrets/s", "/globalsecrets/g"):
        labels = (await zone.get(path))[1]["labels"]
        assert labels["kuma.io/zone"] == "zone-1" and labels["kuma.io/env"] == "universal"


@pytest.mark.parametrize(
    "item",
    [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gs", "labels": {"kuma.io/mesh": "default"}},
            "data": {"value": DATA},
            "type": "system.kuma.io/global-secret",
        },
        {
            "apiVersion": "kuma.io/v1alpha1",
            "kind": "Mesh",
            "metadata": {"name": "mk", "labels": {"kuma.io/mesh": "default"}},
        },
    ],
)
async def test_only_a_secret_has_a_mesh_label_in_either_form(
    make_api: MakeApi, item: dict[str, object]
) -> None:
    """The Universal form refuses kuma.io/mesh on a GlobalSecret or a Mesh; the Kubernetes
    form refuses it too, so nothing stored carries a label its own GET-then-PUT would fail on."""
    api = await make_api()
    resp = await api.client.post("/_apply", json={"items": [item]})
    body = await resp.json()
    assert resp.status == 400, body
    assert "metadata.labels[kuma.io/mesh]" in json.dumps(body)
    assert "only a Secret has a mesh" in json.dumps(body)
    assert (await api.get("/globalsecrets"))[1]["total"] == 0
    assert (await api.get("/meshes"))[1]["total"] == 0


@pytest.mark.parametrize("role", ["global", "zone"])
async def test_a_put_without_a_name_may_carry_its_display_name(
    make_api: MakeApi, role: str
) -> None:
    """A PUT's body may leave the name to its path; kuma.io/display-name is then checked
    against the path's name, not refused as if the name were missing."""
    api = await make_api(role, zone="zone-1" if role == "zone" else "")
    body = {"type": "Mesh", "labels": {"kuma.io/display-name": "m7"}}
    status, answer, _ = await api.put("/meshes/m7", body)
    assert status == 201, answer
    secret = {"data": DATA, "labels": {"kuma.io/display-name": "s7", "kuma.io/mesh": "m7"}}
    status, answer, _ = await api.put("/meshes/m7/secrets/s7", secret)
    assert status == 201, answer
    global_secret = {"data": DATA, "labels": {"kuma.io/display-name": "g7"}}
    status, answer, _ = await api.put("/globalsecrets/g7", global_secret)
    assert status == 201, answer
    status, answer, _ = await api.put("/meshes/m8", {"labels": {"kuma.io/display-name": "m7"}})
    assert status == 400 and answer["causes"][0]["field"] == "labels[kuma.io/display-name]"
    assert "must be 'm8'" in answer["causes"][0]["message"]
