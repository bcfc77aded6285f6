"""On a zone, global's copies are read-only, but writing one back as it is changes nothing:
a PUT or apply of a synced copy identical to what the zone holds is answered as unchanged
(a zone's listing applied again), while any change to it is still refused (409)."""

from __future__ import annotations

import json

from tests.unit.test_api import (
    OTHER_B64,
    SECRET_B64,
    MakeApi,
    _apply,
    _zone_with_synced,
    make_api,
)

__all__ = ["make_api"]  # the fixture, used by name


async def test_a_synced_copy_written_back_unchanged_is_answered_unchanged(
    make_api: MakeApi,
) -> None:
    zone = await _zone_with_synced(make_api)
    before = zone.counts()
    for path, body in [
        ("/meshes/default/secrets/synced", {"data": SECRET_B64}),
        ("/global-secrets/gsynced", {"data": SECRET_B64}),
        ("/meshes/default", {}),
    ]:
        status, answer, result = await zone.put(path, body)
        assert (status, answer, result) == (200, {}, "unchanged"), path
    assert zone.counts() == before  # no zone-local row made
    assert zone.writes == []  # nothing committed that changed anything
    status, got = await zone.get("/meshes/default/secrets/synced")
    assert got["labels"]["kuma.io/origin"] == "global"  # still global's copy


async def test_a_change_to_a_synced_copy_is_still_refused(make_api: MakeApi) -> None:
    zone = await _zone_with_synced(make_api)
    for path, body in [
        ("/meshes/default/secrets/synced", {"data": OTHER_B64}),
        ("/meshes/default/secrets/synced", {"data": SECRET_B64, "labels": {"team": "a"}}),
        ("/global-secrets/gsynced", {"data": OTHER_B64}),
        ("/meshes/default", {"labels": {"env": "dev"}}),
    ]:
        status, err, _ = await zone.put(path, body)
        assert status == 409, (path, body)
        assert err["title"] == "Conflict"
        assert (
            "is synced from global and read-only on this zone: change it on global"
            in (err["detail"])
        )
        assert SECRET_B64 not in json.dumps(err) and OTHER_B64 not in json.dumps(err)
    assert zone.writes == []


async def test_a_zone_listing_applied_again_reports_its_synced_copies_unchanged(
    make_api: MakeApi,
) -> None:
    zone = await _zone_with_synced(make_api)
    assert (await zone.put("/meshes/default/secrets/local", {"data": OTHER_B64}))[0] == 201
    synced = {"type": "Secret", "mesh": "default", "name": "synced", "data": SECRET_B64}
    local = {"type": "Secret", "mesh": "default", "name": "local", "data": OTHER_B64}
    status, body = await _apply(zone, [synced, local])
    assert status == 200, body
    assert [(i["name"], i["result"]) for i in body["items"]] == [
        ("synced", "unchanged"),
        ("local", "unchanged"),
    ]
    # One item changing a synced copy: the whole apply is refused, as before.
    changed = {**synced, "data": OTHER_B64}
    status, body = await _apply(zone, [changed, {**local, "data": SECRET_B64}])
    assert status == 409, body
    assert "items[0]" in body["detail"] and "synced from global" in body["detail"]
    assert (await zone.get("/meshes/default/secrets/local"))[1]["data"] == OTHER_B64


async def test_a_zone_s_get_answer_put_back_as_it_is_is_unchanged(make_api: MakeApi) -> None:
    """A zone's GET answer for global's copy shows ``kuma.io/origin: global``; written back as
    it is (kumactl get -o yaml, then apply) it was refused 400 for that label. It is taken as
    global's copy written back: unchanged, or 409 for a change, as without the labels."""
    zone = await _zone_with_synced(make_api)
    before = zone.counts()
    for path in ["/meshes/default/secrets/synced", "/global-secrets/gsynced", "/meshes/default"]:
        status, got = await zone.get(path)
        assert status == 200 and got["labels"]["kuma.io/origin"] == "global", got
        assert await zone.put(path, got) == (200, {}, "unchanged"), path
        status, body = await _apply(zone, [got])
        assert status == 200 and body["items"][0]["result"] == "unchanged", body
    _, got = await zone.get("/meshes/default/secrets/synced")
    status, err, _ = await zone.put("/meshes/default/secrets/synced", {**got, "data": OTHER_B64})
    assert status == 409 and "synced from global" in err["detail"]
    assert zone.counts() == before and zone.writes == []


async def test_a_write_showing_global_s_origin_where_the_zone_has_no_copy_is_refused(
    make_api: MakeApi,
) -> None:
    """The label would be false on what the write makes (a zone-local resource): refused,
    naming it."""
    zone = await _zone_with_synced(make_api)
    assert (await zone.put("/meshes/default/secrets/local", {"data": OTHER_B64}))[0] == 201
    shown = {"kuma.io/origin": "global"}
    for path in ["/meshes/default/secrets/new", "/meshes/default/secrets/local"]:
        status, err, _ = await zone.put(path, {"data": SECRET_B64, "labels": shown})
        assert status == 400, (path, err)
        [cause] = err["invalid_parameters"]
        assert cause["field"] == "labels[kuma.io/origin]"
        assert "only on a copy synced from global" in cause["reason"]
    item = {"type": "Secret", "mesh": "default", "name": "new", "data": SECRET_B64}
    status, body = await _apply(zone, [{**item, "labels": shown}])
    assert status == 400 and "items[0].labels[kuma.io/origin]" in json.dumps(body)
    assert (await zone.get("/meshes/default/secrets/new"))[0] == 404
    # A synced copy's view carries no zone labels: shown with one, it is refused by name.
    status, err, _ = await zone.put(
        "/meshes/default/secrets/synced",
        {"data": SECRET_B64, "labels": {**shown, "kuma.io/zone": "zone-1"}},
    )
    assert status == 400 and "not shown on a copy synced from global" in json.dumps(err)


async def test_a_zone_secret_named_as_global_s_builtin_ca_is_written_with_a_warning(
    make_api: MakeApi,
) -> None:
    """The conflict rule keeps a zone's own secret in place of global's copy: one named as
    global names a builtin CA's secret would stand in for that CA on this zone. The write
    is made (its name is the zone's to choose) and its answer says so."""
    zone = await _zone_with_synced(make_api)
    path = "/meshes/default/secrets/default.ca-builtin-cert-ca-1"
    status, answer, _ = await zone.put(path, {"data": OTHER_B64})
    assert status == 201
    [warning] = answer["warnings"]
    assert "name global gives a builtin mTLS CA's secret in mesh 'default'" in warning
    item = {"type": "Secret", "mesh": "default", "name": "default.ca-builtin-key-ca-1"}
    status, body = await _apply(zone, [{**item, "data": OTHER_B64}])
    assert status == 200 and body["warnings"][0].startswith("items[0]: Secret"), body
    # Any other name, or the same name on global, is written without it.
    assert (await zone.put("/meshes/default/secrets/ca-cert", {"data": OTHER_B64}))[1] == {}
    on_global = await make_api("global")
    assert (await on_global.put("/meshes/default", {}))[0] == 201
    assert (await on_global.put(path, {"data": OTHER_B64}))[:2] == (201, {})
