"""The list's ``name`` and ``filter[labels.K]=V``, selected in the store: the same rows as
selecting, in Python, on the labels each answer shows (computed ones included), paged alike."""

from __future__ import annotations

import itertools
from urllib.parse import urlencode

import pytest

from kds.api._labels import computed_labels
from kds.model import Kind, Resource
from tests.unit.test_api import SECRET_B64, Api, MakeApi, _g, _synced_batch
from tests.unit.test_api import make_api as make_api_fixture  # noqa: F401  # registers it


@pytest.fixture
def make_api(make_api_fixture: MakeApi) -> MakeApi:  # noqa: F811
    return make_api_fixture


def _labelled(kind: Kind, name: str, mesh: str, labels: dict[str, str], version: int) -> Resource:
    return Resource.of(
        kind=kind,
        mesh=mesh,
        name=name,
        data=b"v",
        labels=labels,
        spec={},
        creation_time="2026-11-28T00:00:00.000Z",
        modification_time="2026-11-28T00:00:00.000Z",
        version=version,
    )


async def _zone(make_api: MakeApi) -> Api:
    """A zone with synced rows, zone-local rows, and a local row shadowing a synced one."""
    zone = await make_api("zone", zone="east")
    synced = [
        _g(Kind.MESH, "default", version=1),
        _labelled(Kind.GLOBAL_SECRET, "shared", "", {"team": "a"}, 2),
        _labelled(Kind.GLOBAL_SECRET, "gonly", "", {"team": "b"}, 3),
        _labelled(Kind.SECRET, "s-synced", "default", {"team": "a"}, 4),
    ]
    for name, team in (("shared", "b"), ("local-a", "a"), ("zone.x", "a")):
        body = {"data": SECRET_B64, "labels": {"team": team}}
        assert (await zone.put(f"/global-secrets/{name}", body))[0] == 201
    await zone.store.apply_batch(_synced_batch(*synced, revision=4), "gs", "now")
    body = {"data": SECRET_B64, "labels": {"team": "a"}}
    assert (await zone.put("/meshes/default/secrets/s-local", body))[0] == 201
    return zone


QUERIES = [
    {"name": "a"},
    {"name": "e.x"},
    {"name": "A"},
    {"filter[labels.team]": "a"},
    {"filter[labels.team]": "b", "name": "sh"},
    {"filter[labels.kuma.io/origin]": "zone"},
    {"filter[labels.kuma.io/origin]": "global"},
    {"filter[labels.kuma.io/origin]": "other"},
    {"filter[labels.kuma.io/zone]": "east"},
    {"filter[labels.kuma.io/zone]": "west"},
    {"filter[labels.kuma.io/env]": "universal", "filter[labels.team]": "a"},
    {"filter[labels.kuma.io/display-name]": "shared"},
    {"filter[labels.kuma.io/mesh]": "default"},
    {"filter[labels.kuma.io/mesh]": "other"},
]


@pytest.mark.parametrize("path", ["/global-secrets", "/secrets", "/meshes"])
async def test_filters_select_what_the_answers_show(make_api: MakeApi, path: str) -> None:
    zone = await _zone(make_api)
    ctx_zone = "east"
    kind = {"/global-secrets": Kind.GLOBAL_SECRET, "/secrets": Kind.SECRET}.get(path, Kind.MESH)
    everything = zone.engine.list_rows(kind)
    for query in QUERIES:
        filters = {k[len("filter[labels.") : -1]: v for k, v in query.items() if k != "name"}
        part = query.get("name", "")
        expected = []
        for row in everything:
            shown = {**row.resource.labels}
            shown.update(_computed(row.resource, row.origin, ctx_zone))
            if part in row.resource.name and all(shown.get(k) == v for k, v in filters.items()):
                expected.append(row.resource.name)
        for size, offset in itertools.product((1, 2, 100), (0, 1, 3)):
            q = urlencode({**query, "size": size, "offset": offset})
            status, listing = await zone.get(f"{path}?{q}")
            assert status == 200, listing
            assert listing["total"] == len(expected), query
            names = [i["name"] for i in listing["items"]]
            assert names == expected[offset : offset + size], (query, size, offset)


def _computed(resource: Resource, origin: str, zone: str) -> dict[str, str]:
    class Ctx:  # what computed_labels reads of the API context
        pass

    ctx = Ctx()
    ctx.zone = zone  # type: ignore[attr-defined]
    return computed_labels(ctx, resource, origin)  # type: ignore[arg-type]
