"""The fault suite's history checker (tests/faults/checker.py) catches each class of
violation planted in an otherwise clean history, and passes the clean one."""

from __future__ import annotations

import dataclasses

import pytest

from tests.faults.checker import Applied, History, Observation, Op, check

A, B, C = ("default", "a"), ("default", "b"), ("default", "c")
D1, D2 = b"\x01" * 16, b"\x02" * 16


def clean() -> History:
    """put a, put b, delete b, zone-a's own c; zone-a applies 1..3 contiguously, polls."""
    h = History()
    h.ops = [
        Op(1, "global", "put", A, "va", True, 1),
        Op(2, "global", "put", B, "vb", True, 2),
        Op(3, "global", "delete", B, "", True, 3),
        Op(4, "zone-a", "put", C, "mine"),
    ]
    h.applied = [
        Applied("zone-a", 1, 0, 1, True, True),
        Applied("zone-a", 1, 1, 2, False, True),
        Applied("zone-a", 2, 2, 2, False, True, start=True),  # restarted: its store at 2
        Applied("zone-a", 2, 2, 3, False, True),
        Applied("zone-a", 2, 3, 3, False, True, repair=True),
    ]
    h.observations = [
        Observation("zone-a", 2, 2, {A: ("va", "global"), B: ("vb", "global")}),
        Observation("zone-a", 4, 3, {A: ("va", "global"), C: ("mine", "zone")}),
    ]
    h.final_head = 3
    h.final_revisions = {"zone-a": 3}
    h.connected = {"zone-a"}
    h.global_leaves = {("Secret", "default", "a"): D1}
    h.zone_leaves = {"zone-a": {("Secret", "default", "a"): D1}}
    h.global_secrets = {A: "va"}
    h.zone_local = {"zone-a": {C: "mine"}}
    return h


def test_a_clean_history_has_no_violation() -> None:
    assert check(clean()) == []


def _kinds(h: History) -> set[str]:
    return {v.kind for v in check(h)}


def test_an_acknowledged_write_global_lost() -> None:
    h = clean()
    h.global_secrets = {}
    assert _kinds(h) == {"lost-write"}


def test_an_unacknowledged_write_may_or_may_not_have_happened() -> None:
    h = clean()
    h.ops.append(Op(5, "global", "put", A, "va2", False))
    assert check(h) == []
    h.global_secrets = {A: "va2"}
    assert check(h) == []
    h.global_secrets = {A: "other"}
    assert _kinds(h) == {"lost-write"}


def test_a_write_refused_as_not_made_must_not_be_seen() -> None:
    h = clean()
    h.ops.append(Op(5, "global", "put", A, "full1", False, refused=True))
    h.ops.append(Op(6, "zone-a", "put", C, "full2", False, refused=True))
    assert check(h) == []
    h.global_secrets = {A: "full1"}  # the refused put of a was made after all
    assert _kinds(h) == {"refused-made"}
    h = clean()
    h.ops.append(Op(5, "zone-a", "put", C, "full2", False, refused=True))
    h.observations.append(Observation("zone-a", 5, 3, {C: ("full2", "zone")}))
    assert "refused-made" in _kinds(h)


def test_a_zone_that_ends_behind_global() -> None:
    h = clean()
    h.final_revisions = {"zone-a": 2}
    assert _kinds(h) == {"not-reached"}


def test_a_gap_in_a_zone_s_revisions() -> None:
    h = clean()
    h.applied[3] = Applied("zone-a", 2, 3, 3, False, True)  # skipped (2, 3]
    assert "gap" in _kinds(h)


def test_a_new_life_may_start_ahead_of_its_last_logged_batch_never_behind() -> None:
    h = clean()
    h.applied[2:4] = [Applied("zone-a", 2, 3, 3, False, True, start=True)]
    assert check(h) == []  # killed after applying 3, before logging it
    h.applied[2] = Applied("zone-a", 2, 1, 1, False, True, start=True)
    assert "backwards" in _kinds(h)


def test_a_replaced_store_counts_even_when_its_life_recorded_nothing() -> None:
    h = clean()
    # Life 3 started on an emptied data dir and died before it connected; life 4 opens its
    # stream on that empty store, at 0, then takes a snapshot.
    h.applied += [
        Applied("zone-a", 4, 0, 0, False, True, start=True),
        Applied("zone-a", 4, 0, 3, True, True),
    ]
    assert "backwards" in _kinds(h)  # without the replaced store, 0 after 3 is going back
    h.reset_lives.add(("zone-a", 3))
    assert check(h) == []


def test_revisions_going_backwards() -> None:
    h = clean()
    h.applied.insert(2, Applied("zone-a", 1, 0, 1, True, True))  # a snapshot older than 2
    assert "backwards" in _kinds(h)


def test_a_replaced_store_may_start_anywhere_but_then_moves_on() -> None:
    h = clean()
    h.applied[2] = Applied("zone-a", 2, 1, 1, False, True, start=True)  # an old copy
    h.applied[3] = Applied("zone-a", 2, 1, 3, False, True)
    assert "backwards" in _kinds(h)
    h.reset_lives = {("zone-a", 2)}
    assert check(h) == []


def test_a_deleted_secret_served_again() -> None:
    h = clean()
    h.observations.append(Observation("zone-a", 4, 3, {B: ("vb", "global"), C: ("mine", "zone")}))
    assert _kinds(h) == {"resurrected"}
    # ... unless a later put explains it.
    h.ops.append(Op(5, "global", "put", B, "vb", False))
    assert check(h) == []


def test_a_zone_s_own_secret_changed_or_removed_by_sync() -> None:
    h = clean()
    h.observations.append(Observation("zone-a", 4, 3, {C: ("from-global", "global")}))
    assert _kinds(h) == {"local-changed"}
    h = clean()
    h.zone_local = {"zone-a": {C: "changed"}}
    assert _kinds(h) == {"local-changed"}


@pytest.mark.parametrize(
    "zone_leaves",
    [
        {},  # missing
        {("Secret", "default", "a"): D2},  # different bytes
        {("Secret", "default", "a"): D1, ("Secret", "default", "b"): D1},  # extra
    ],
)
def test_a_zone_that_ends_different_from_global(zone_leaves: dict) -> None:  # type: ignore[type-arg]
    h = dataclasses.replace(clean(), zone_leaves={"zone-a": zone_leaves})
    assert _kinds(h) == {"diverged"}


def test_a_restored_data_dir_excuses_the_zone_s_own_writes_before_it() -> None:
    h = clean()
    h.zone_local = {"zone-a": {}}  # the old copy did not hold c
    assert _kinds(h) == {"local-changed"}
    h.local_resets = {"zone-a": [4]}
    assert check(h) == []
