"""Filtered lists selected and paged in the database (ResourceStore.page's ``select``), on
every backend of the conformance suite."""

from __future__ import annotations

from kds.model import Key, Kind, Resource
from kds.store import ANY, Clause, GlobalStore, Selection, ZoneStore
from tests.unit.store_backends import GSID, MESH, T0, T1, inc_put, mk
from tests.unit.test_store_conformance import apply, dbatch, gstore, stores, zstore

__all__ = ["gstore", "stores", "zstore"]  # the fixtures, used by name


def _gs(name: str, labels: dict[str, str] | None = None) -> Resource:
    return Resource(Kind.GLOBAL_SECRET, name, data=b"v", labels=labels or {})


async def _names(
    store: GlobalStore | ZoneStore, select: Selection, **kw: int
) -> tuple[int, list[str]]:
    total, rows = await store.page(Kind.GLOBAL_SECRET, None, select=select, **kw)
    return total, [r.resource.name for r in rows]


async def test_name_part_is_a_case_sensitive_substring_with_no_wildcards(
    gstore: GlobalStore,
) -> None:
    for name in ("db-pass", "DB-pass", "a%b", "a_b", "axb", "back\\slash"):
        await gstore.put(_gs(name), T0)
    assert await _names(gstore, Selection("db")) == (1, ["db-pass"])
    assert await _names(gstore, Selection("%")) == (1, ["a%b"])
    assert await _names(gstore, Selection("_")) == (1, ["a_b"])
    assert await _names(gstore, Selection("\\")) == (1, ["back\\slash"])
    assert await _names(gstore, Selection("nothing")) == (0, [])


async def test_labels_match_exactly_and_cannot_be_forged_by_a_value(gstore: GlobalStore) -> None:
    """A label value holding another entry's text is not that entry."""
    await gstore.put(_gs("plain", {"team": "a", "tier": "db"}), T0)
    await gstore.put(_gs("longer", {"team": "ab"}), T0)
    await gstore.put(_gs("forged", {"x": 'y", "team": "a'}), T0)
    await gstore.put(_gs("quoted", {'k"': 'v"', "team": "b"}), T0)
    await gstore.put(_gs("none"), T0)

    def labels(**kv: str) -> Selection:
        return Selection(origins={"global": Clause(labels=kv)})

    assert await _names(gstore, labels(team="a")) == (1, ["plain"])
    assert await _names(gstore, labels(team="a", tier="db")) == (1, ["plain"])
    assert await _names(gstore, labels(team="a", tier="web")) == (0, [])
    assert await _names(gstore, labels(tier="")) == (0, [])
    q = Selection(origins={"global": Clause(labels={'k"': 'v"'})})
    assert await _names(gstore, q) == (1, ["quoted"])


async def test_selection_is_paged_and_counted_in_the_database(gstore: GlobalStore) -> None:
    for i in range(7):
        await gstore.put(_gs(f"s{i}", {"even": str(i % 2 == 0).lower()}), T0)
    sel = Selection("s", {"global": Clause(labels={"even": "true"})})
    assert await _names(gstore, sel) == (4, ["s0", "s2", "s4", "s6"])
    assert await _names(gstore, sel, offset=1, limit=2) == (4, ["s2", "s4"])
    assert await _names(gstore, sel, offset=4, limit=2) == (4, [])


async def test_per_origin_clauses_on_the_effective_view(zstore: ZoneStore) -> None:
    """A zone-local row hides its synced copy; each origin's rows meet that origin's clause
    (name, mesh), and an origin left out selects none of its rows."""
    await zstore.put(_gs("g1", {"mine": "yes"}), T1)  # will shadow the synced g1
    await zstore.put(_gs("local"), T1)
    synced = [inc_put(mk(MESH), 1), inc_put(_gs("g1"), 2), inc_put(_gs("g2"), 3)]
    await apply(zstore, dbatch(synced, 3), GSID, T0)
    only_zone = Selection(origins={"zone": ANY})
    assert await _names(zstore, only_zone) == (2, ["g1", "local"])
    assert await _names(zstore, Selection(origins={"global": ANY})) == (1, ["g2"])
    by_name = Selection(origins={"global": Clause(name="g1"), "zone": Clause(name="g1")})
    total, rows = await zstore.page(Kind.GLOBAL_SECRET, select=by_name)
    assert total == 1 and [(r.resource.name, r.origin, r.shadows_synced) for r in rows] == [
        ("g1", "zone", True)
    ]
    assert await _names(zstore, Selection(origins={})) == (0, [])
    secrets = Selection(origins={"zone": Clause(mesh="default")})
    await zstore.put(Resource(Kind.SECRET, "s", mesh="default", data=b"x"), T1)
    total, rows = await zstore.page(Kind.SECRET, select=secrets)
    assert total == 1 and rows[0].resource.key == Key(Kind.SECRET, "default", "s")
