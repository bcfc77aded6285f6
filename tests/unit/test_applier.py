"""Unit tests for kds.protocol.applier.plan_batch: the pure zone-side plan of one batch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from kds.integrity import check_written
from kds.model import Key, Kind, Resource
from kds.protocol.applier import DecodedBatch, Incoming, OwnMtls, Plan, ZoneView, plan_batch
from tests import certs

MESH = Key(Kind.MESH, "", "default")
OTHER_MESH = Key(Kind.MESH, "", "other")
S1 = Key(Kind.SECRET, "default", "s1")
S2 = Key(Kind.SECRET, "default", "s2")
G1 = Key(Kind.GLOBAL_SECRET, "", "g1")
# A time as global writes it (kds.clock.rfc3339).
T0 = "2026-11-30T00:00:00.000Z"


def res(key: Key, data: bytes = b"v", version: int = 1) -> Resource:
    return Resource(
        key.kind,
        key.name,
        mesh=key.mesh,
        data=b"" if key.kind is Kind.MESH else data,
        creation_time=T0,
        modification_time=T0,
        version=version,
    )


def put(key: Key, rev: int = 1, data: bytes = b"v") -> Incoming:
    return Incoming(rev, key, res(key, data, rev))


def delete(key: Key, rev: int = 1) -> Incoming:
    return Incoming(rev, key)


def batch(
    changes: Iterable[Incoming],
    *,
    revision: int = 10,
    snapshot: bool = False,
    final: bool = True,
    from_revision: int = 0,
) -> DecodedBatch:
    return DecodedBatch(
        seq=1,
        from_revision=from_revision,
        revision=revision,
        snapshot=snapshot,
        final=final,
        head_revision=revision,
        changes=tuple(changes),
    )


def view(
    *,
    local: Iterable[Key] = (),
    synced: Iterable[Key] = (),
    local_meshes: Iterable[str] = (),
    synced_meshes: Iterable[str] = (),
    secrets_per_mesh: Mapping[str, tuple[int, int]] | None = None,
    stale: Iterable[Key] = (),
) -> ZoneView:
    return ZoneView(
        local=frozenset(local),
        synced=frozenset(synced),
        local_meshes=frozenset(local_meshes),
        synced_meshes=frozenset(synced_meshes),
        secrets_per_mesh=dict(secrets_per_mesh or {}),
        stale=tuple(stale),
    )


def put_keys(plan: Plan) -> list[Key]:
    return [r.key for r in plan.puts]


def rejected_keys(plan: Plan) -> list[Key]:
    return [k for k, _ in plan.rejected]


# --------------------------------------------------------------------------- puts and deletes


def test_empty_batch_records_revision() -> None:
    """An empty final batch changes nothing and records its revision."""
    plan = plan_batch(batch([], revision=7), view())
    assert plan == Plan(record_revision=7)


def test_puts_applied_in_order() -> None:
    """Mesh, Secret and GlobalSecret puts are planned in batch order."""
    plan = plan_batch(batch([put(MESH), put(S1), put(G1)]), view())
    assert put_keys(plan) == [MESH, S1, G1]
    assert plan.deletes == [] and plan.rejected == []
    assert plan.record_revision == 10


def test_put_carries_resource_unchanged() -> None:
    """A planned put is the resource exactly as received (version, data)."""
    inc = put(G1, rev=5, data=b"secret-bytes")
    plan = plan_batch(batch([inc]), view())
    assert plan.puts == [inc.resource]


def test_update_of_synced_key() -> None:
    """A put over an existing synced copy is planned as a put, not a conflict."""
    plan = plan_batch(batch([put(S1)]), view(synced=[S1], synced_meshes=["default"]))
    assert put_keys(plan) == [S1]
    assert plan.new_conflicts == []


def test_delete_of_synced_key() -> None:
    """A delete of a synced copy is planned."""
    plan = plan_batch(batch([delete(G1)]), view(synced=[G1]))
    assert plan.deletes == [G1]
    assert plan.rejected == []


def test_delete_of_absent_key_is_idempotent() -> None:
    """Deleting a key the zone does not hold is a no-op, not a rejection."""
    plan = plan_batch(batch([delete(G1), delete(S1), delete(MESH)]), view())
    assert plan.deletes == [] and plan.rejected == []
    assert plan.record_revision == 10
    assert plan.already_gone == [G1, S1, MESH]  # nothing done for them, to report as such


def test_a_key_a_batch_did_change_is_not_already_gone() -> None:
    """A delete that found nothing, of a key the same batch deleted or put, is not
    reported as a change that did nothing."""
    twice = plan_batch(batch([delete(G1, 1), delete(G1, 2)]), view(synced=[G1]))
    assert twice.deletes == [G1] and twice.already_gone == []
    then_put = plan_batch(batch([delete(S1, 1), put(S1, 2)]), view(synced_meshes=["default"]))
    assert then_put.puts and then_put.already_gone == []
    mixed = plan_batch(batch([delete(S1), delete(S2)]), view(synced=[S1]))
    assert mixed.deletes == [S1] and mixed.already_gone == [S2]


def test_double_delete_in_one_batch_is_idempotent() -> None:
    """The same key deleted twice in a batch is deleted once."""
    plan = plan_batch(batch([delete(G1, 1), delete(G1, 2)]), view(synced=[G1]))
    assert plan.deletes == [G1]


def test_delete_of_local_only_key_never_touches_it() -> None:
    """A delete for a key the zone holds only locally does nothing and reports nothing."""
    plan = plan_batch(batch([delete(G1)]), view(local=[G1]))
    assert plan.deletes == [] and plan.resolved_conflicts == [] and plan.rejected == []


def test_put_then_delete_same_key_leaves_it_deleted() -> None:
    """An uncoalesced range put-then-delete of one key plans no put of that key."""
    plan = plan_batch(batch([put(G1, 1), delete(G1, 2)]), view())
    assert G1 not in put_keys(plan)


def test_put_then_delete_of_synced_key_leaves_it_deleted() -> None:
    """An update then a delete of a synced key plans its delete and no put."""
    plan = plan_batch(batch([put(G1, 1), delete(G1, 2)]), view(synced=[G1]))
    assert plan.deletes == [G1]
    assert G1 not in put_keys(plan)


def test_delete_then_put_same_key_leaves_it_present() -> None:
    """An uncoalesced range delete-then-put of one key ends with the put."""
    plan = plan_batch(batch([delete(G1, 1), put(G1, 2, b"new")]), view(synced=[G1]))
    assert plan.puts[-1].key == G1 and plan.puts[-1].data == b"new"


def test_put_delete_put_same_key_ends_present() -> None:
    """put, delete, put of one key in one batch ends with the last put."""
    plan = plan_batch(batch([put(G1, 1), delete(G1, 2), put(G1, 3, b"last")]), view())
    assert [r.data for r in plan.puts if r.key == G1] == [b"last"]


def test_conflict_begun_and_ended_in_one_batch_not_reported() -> None:
    """A local key put then deleted by global in one batch reports neither begin nor end."""
    plan = plan_batch(batch([put(G1, 1), delete(G1, 2)]), view(local=[G1]))
    assert plan.new_conflicts == [] and plan.resolved_conflicts == []
    assert G1 not in put_keys(plan)


def test_secret_put_then_delete_frees_mesh_delete() -> None:
    """A Secret put then deleted in one batch does not block its Mesh's delete."""
    v = view(synced=[MESH], synced_meshes=["default"], secrets_per_mesh={"default": (0, 0)})
    plan = plan_batch(batch([put(S1, 1), delete(S1, 2), delete(MESH, 3)]), v)
    assert plan.rejected == []
    assert MESH in plan.deletes and put_keys(plan) == []


# --------------------------------------------------------------------------- meshes and secrets


def test_secret_without_mesh_rejected_others_applied() -> None:
    """A Secret whose Mesh the zone does not hold is rejected; the rest is applied."""
    s_other = Key(Kind.SECRET, "nomesh", "s")
    plan = plan_batch(batch([put(s_other), put(G1), put(S1)]), view(synced_meshes=["default"]))
    assert rejected_keys(plan) == [s_other]
    assert "nomesh" in plan.rejected[0][1]
    assert put_keys(plan) == [G1, S1]
    assert plan.record_revision == 10


def test_secret_in_zone_local_mesh_accepted() -> None:
    """A synced Secret may live in a zone-local Mesh."""
    plan = plan_batch(batch([put(S1)]), view(local_meshes=["default"]))
    assert put_keys(plan) == [S1] and plan.rejected == []


def test_mesh_put_and_secret_put_in_one_batch() -> None:
    """A Mesh put followed by a Secret put in that Mesh, in one batch, is accepted."""
    plan = plan_batch(batch([put(MESH), put(S1), put(S2)]), view())
    assert put_keys(plan) == [MESH, S1, S2]
    assert plan.rejected == []


def test_secret_deletes_then_mesh_delete_ok() -> None:
    """Deleting a Mesh's synced Secrets then the Mesh, in one batch, is accepted."""
    v = view(
        synced=[MESH, S1, S2],
        synced_meshes=["default"],
        secrets_per_mesh={"default": (0, 2)},
    )
    plan = plan_batch(batch([delete(S1), delete(S2), delete(MESH)]), v)
    assert plan.deletes == [S1, S2, MESH]
    assert plan.rejected == []


def test_mesh_delete_with_remaining_synced_secret_rejected() -> None:
    """A Mesh delete while a synced Secret still lives in it is rejected."""
    v = view(
        synced=[MESH, S1, S2],
        synced_meshes=["default"],
        secrets_per_mesh={"default": (0, 2)},
    )
    plan = plan_batch(batch([delete(S1), delete(MESH)]), v)
    assert plan.deletes == [S1]
    assert rejected_keys(plan) == [MESH]


def test_mesh_delete_with_zone_local_secrets_rejected() -> None:
    """A synced Mesh holding zone-local Secrets is not deleted; the delete is rejected."""
    v = view(synced=[MESH], synced_meshes=["default"], secrets_per_mesh={"default": (1, 0)})
    plan = plan_batch(batch([delete(MESH), put(G1)]), v)
    assert plan.deletes == []
    assert rejected_keys(plan) == [MESH]
    assert "1 zone-local" in plan.rejected[0][1]
    assert put_keys(plan) == [G1]
    assert plan.record_revision == 10


def test_mesh_delete_allowed_when_zone_local_mesh_remains() -> None:
    """A synced Mesh whose name the zone also holds locally may go: its Secrets keep a Mesh."""
    v = view(
        local=[MESH],
        synced=[MESH],
        local_meshes=["default"],
        synced_meshes=["default"],
        secrets_per_mesh={"default": (2, 1)},
    )
    plan = plan_batch(batch([delete(MESH)]), v)
    assert plan.deletes == [MESH]
    assert plan.resolved_conflicts == [MESH]


def test_secret_put_after_mesh_delete_in_batch_rejected() -> None:
    """Once a batch deleted a Mesh, a later Secret put in it is rejected."""
    v = view(synced=[MESH], synced_meshes=["default"], secrets_per_mesh={"default": (0, 0)})
    plan = plan_batch(batch([delete(MESH), put(S1)]), v)
    assert plan.deletes == [MESH]
    assert rejected_keys(plan) == [S1]


def test_secret_put_then_mesh_delete_rejected() -> None:
    """A Secret put into a Mesh counts against that Mesh's delete in the same batch."""
    v = view(synced=[MESH], synced_meshes=["default"], secrets_per_mesh={"default": (0, 0)})
    plan = plan_batch(batch([put(S1), delete(MESH)]), v)
    assert put_keys(plan) == [S1]
    assert rejected_keys(plan) == [MESH]


# --------------------------------------------------------------------------- conflicts


def test_conflict_begins_when_local_key_receives_put() -> None:
    """A put for a key the zone holds locally with no synced copy is a new conflict."""
    plan = plan_batch(batch([put(G1)]), view(local=[G1]))
    assert plan.new_conflicts == [G1]
    assert put_keys(plan) == [G1]  # global's copy is kept aside
    assert plan.rejected == []


def test_repeated_put_of_conflicted_key_not_new() -> None:
    """A put for a key already in conflict (synced copy kept aside) is not a new conflict."""
    plan = plan_batch(batch([put(G1)]), view(local=[G1], synced=[G1]))
    assert plan.new_conflicts == []
    assert put_keys(plan) == [G1]


def test_two_puts_of_new_conflict_reported_once() -> None:
    """Two puts of the same locally-held key in one batch report the conflict once."""
    plan = plan_batch(batch([put(G1, 1), put(G1, 2)]), view(local=[G1]))
    assert plan.new_conflicts == [G1]


def test_delete_of_conflicted_key_resolves_conflict() -> None:
    """Deleting global's copy of a conflicted key ends the conflict."""
    plan = plan_batch(batch([delete(G1)]), view(local=[G1], synced=[G1]))
    assert plan.deletes == [G1]
    assert plan.resolved_conflicts == [G1]


def test_mesh_conflict() -> None:
    """A synced Mesh put over a zone-local Mesh of the same name is a conflict."""
    plan = plan_batch(batch([put(MESH), put(S1)]), view(local=[MESH], local_meshes=["default"]))
    assert plan.new_conflicts == [MESH]
    assert put_keys(plan) == [MESH, S1]


# --------------------------------------------------------------------------- snapshots and parts


def test_non_final_part_records_no_revision() -> None:
    """A non-final part is applied but does not record the revision."""
    plan = plan_batch(batch([put(G1)], final=False), view())
    assert put_keys(plan) == [G1]
    assert plan.record_revision is None


def test_non_final_snapshot_part_removes_nothing() -> None:
    """Only the final snapshot part removes stale synced keys."""
    plan = plan_batch(
        batch([put(G1)], snapshot=True, final=False),
        view(synced=[S1], stale=[S1], synced_meshes=["default"]),
    )
    assert plan.deletes == [] and plan.stale_removed == 0
    assert plan.record_revision is None


def test_final_snapshot_part_removes_stale_secrets_before_meshes() -> None:
    """The final snapshot part deletes stale keys, Secrets before their Mesh."""
    stale = [MESH, S1, G1, S2]
    v = view(
        synced=stale,
        synced_meshes=["default"],
        secrets_per_mesh={"default": (0, 2)},
        stale=stale,
    )
    plan = plan_batch(batch([], snapshot=True, final=True, revision=20), v)
    assert set(plan.deletes) == set(stale)
    assert plan.deletes[-1] == MESH
    assert plan.stale_removed == 4
    assert plan.rejected == []
    assert plan.record_revision == 20


def test_snapshot_stale_mesh_with_local_secrets_rejected() -> None:
    """A stale synced Mesh still holding zone-local Secrets is rejected, not deleted."""
    v = view(
        synced=[MESH, S1],
        synced_meshes=["default"],
        secrets_per_mesh={"default": (3, 1)},
        stale=[MESH, S1],
    )
    plan = plan_batch(batch([put(G1)], snapshot=True, final=True), v)
    assert plan.deletes == [S1]
    assert rejected_keys(plan) == [MESH]
    assert plan.stale_removed == 1


def test_snapshot_stale_conflicted_key_resolves_conflict() -> None:
    """A stale synced copy shadowed by a local row is removed and its conflict resolved."""
    v = view(local=[G1], synced=[G1], stale=[G1])
    plan = plan_batch(batch([], snapshot=True, final=True), v)
    assert plan.deletes == [G1]
    assert plan.resolved_conflicts == [G1]


def test_non_snapshot_final_ignores_stale() -> None:
    """Stale keys are only acted on for snapshots, never for an ordinary range."""
    plan = plan_batch(batch([], snapshot=False, final=True), view(synced=[G1], stale=[G1]))
    assert plan.deletes == []


# --------------------------------------------------------------------------- bad changes


def test_undecodable_change_rejected_without_stalling_others() -> None:
    """A change that could not be decoded (key None) is rejected; the rest applies."""
    bad = Incoming(3, None, None, "unknown kind 7")
    plan = plan_batch(batch([put(G1, 2), bad, put(MESH, 4)]), view())
    assert put_keys(plan) == [G1, MESH]
    assert len(plan.rejected) == 1
    assert plan.rejected[0][1] == "unknown kind 7"
    assert plan.record_revision == 10


def test_undecodable_change_without_reason_gets_one() -> None:
    """An undecodable change with no error text still gets a reason."""
    plan = plan_batch(batch([Incoming(3, None)]), view())
    assert plan.rejected and plan.rejected[0][1]


def test_change_with_error_rejected_under_its_key() -> None:
    """A change with a key and a decode error is rejected under that key, not applied."""
    bad = Incoming(3, G1, res(G1), "bad spec json")
    plan = plan_batch(batch([bad, put(S1)]), view(synced_meshes=["default"]))
    assert plan.rejected == [(G1, "bad spec json")]
    assert put_keys(plan) == [S1]


def test_invalid_resource_name_rejected() -> None:
    """A put whose resource breaks validation (bad name) is rejected; others apply."""
    bad_key = Key(Kind.GLOBAL_SECRET, "", "Bad_Name")
    plan = plan_batch(batch([put(bad_key), put(G1)]), view())
    assert rejected_keys(plan) == [bad_key]
    assert "invalid resource" in plan.rejected[0][1]
    assert put_keys(plan) == [G1]


@pytest.mark.parametrize(
    "value",
    [
        "c5",  # what a test's fake global once stamped
        "",
        "2026-11-30",
        "2026-11-30T00:00:00",  # no zone: whose midnight?
        "2026-11-30 00:00:00Z",
        "2026-11-30t00:00:00z",
        "2026-11-30T00:00:00.Z",
        "2026-11-30T00:00:00.1234567890Z",  # finer than nanoseconds
        "2026-11-30T00:00:00+0200",
        "2026-11-30T00:00:00Z\n",
        " 2026-11-30T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-30T24:00:00Z",
        "2026-11-30T00:00:60Z",
        "2026-11-30T00:00:00+24:00",
        "0000-11-30T00:00:00Z",
        "\uff12\uff10\uff12\uff16-11-30T00:00:00Z",  # full-width digits
        "2026-11-30T00:00:00Z" + "0" * 100_000,
    ],
)
@pytest.mark.parametrize("field", ["creation_time", "modification_time"])
def test_a_change_whose_times_are_not_rfc3339_timestamps_is_rejected(
    field: str, value: str
) -> None:
    """Global sends each resource's times as it wrote them; the zone stores and serves them
    as given (kdsctl shows their age), so a change with anything but an RFC 3339 timestamp
    there is rejected on its own, naming the field and never the value."""
    bad = Incoming(1, S1, res(S1).with_meta(**{field: value}))
    plan = plan_batch(batch([bad, put(S2)]), view(synced_meshes=["default"]))
    assert rejected_keys(plan) == [S1]
    reason = plan.rejected[0][1]
    assert reason.startswith(f"invalid resource: {field}: must be an RFC 3339 timestamp")
    assert len(reason) < 200 and (len(value) < 3 or value not in reason)
    assert put_keys(plan) == [S2]


@pytest.mark.parametrize(
    "value",
    [
        T0,  # global's own form: milliseconds, in UTC
        "2026-11-30T00:00:00Z",
        "2026-11-30T00:00:00.5Z",
        "2026-11-30T00:00:00.123456789Z",  # nanoseconds, as Go's RFC3339Nano writes them
        "2026-11-30T01:00:00+01:00",
        "2026-11-29T16:30:00.25-07:30",
        "2024-02-29T23:59:59Z",
    ],
)
def test_a_change_whose_times_are_rfc3339_timestamps_is_applied(value: str) -> None:
    """What global writes, and the other RFC 3339 forms an older or newer global could."""
    good = Incoming(1, S1, res(S1).with_meta(creation_time=value, modification_time=value))
    plan = plan_batch(batch([good]), view(synced_meshes=["default"]))
    assert (plan.rejected, put_keys(plan)) == ([], [S1])


def test_secret_with_empty_data_rejected() -> None:
    """A synced Secret with no data is rejected as invalid."""
    inc = Incoming(1, G1, Resource(Kind.GLOBAL_SECRET, "g1", data=b""))
    plan = plan_batch(batch([inc]), view())
    assert rejected_keys(plan) == [G1]


def test_zone_accepts_data_larger_than_default_limit() -> None:
    """Zones accept whatever size global accepted (the size limit is global's business)."""
    big = Incoming(1, G1, res(G1, b"x" * (2 * 1024 * 1024)))
    plan = plan_batch(batch([big]), view())
    assert put_keys(plan) == [G1]


def test_rejection_messages_never_show_data() -> None:
    """Rejection reasons name keys and rules, never secret data."""
    bad = Incoming(
        1, Key(Kind.SECRET, "nomesh", "s"), res(Key(Kind.SECRET, "nomesh", "s"), b"hunter2")
    )
    bad2 = Incoming(
        2, Key(Kind.GLOBAL_SECRET, "", "X"), res(Key(Kind.GLOBAL_SECRET, "", "X"), b"hunter2")
    )
    plan = plan_batch(batch([bad, bad2]), view())
    assert len(plan.rejected) == 2
    assert all("hunter2" not in reason for _, reason in plan.rejected)


def test_a_synced_secret_the_zones_own_mesh_uses_is_not_deleted() -> None:
    """The zone's own Mesh "default" (kept in place of global's) uses global's copy of s1 in
    its mTLS: global deleting s1 is refused, so that Mesh keeps its CA; s2, which it does not
    use, goes; a zone-local s1 of its own would stay anyway, so the synced copy may go."""
    v = ZoneView(
        synced=frozenset({S1, S2}),
        local_meshes=frozenset({"default"}),
        synced_meshes=frozenset({"default"}),
        local_backend_secrets={"default": frozenset({"s1"})},
    )
    plan = plan_batch(batch([delete(S1), delete(S2)]), v)
    assert plan.deletes == [S2]
    assert plan.rejected == [(S1, "this zone's own mesh 'default' uses it in its mTLS")]
    shadowed = ZoneView(
        local=frozenset({S1}),
        synced=frozenset({S1}),
        local_meshes=frozenset({"default"}),
        local_backend_secrets={"default": frozenset({"s1"})},
    )
    assert plan_batch(batch([delete(S1)]), shadowed).deletes == [S1]


# The zone's own Mesh "default" (kept in place of global's): backend ca-1 uses c and k.
C, K = Key(Kind.SECRET, "default", "c"), Key(Kind.SECRET, "default", "k")


def own_mesh(*backends: tuple[str, str, str], skip_validation: bool = False) -> Resource:
    mtls: dict[str, object] = {
        "backends": [
            {
                "name": name,
                "type": "provided",
                "conf": {"cert": {"secret": cert}, "key": {"secret": key}},
            }
            for name, cert, key in backends or [("ca-1", "c", "k")]
        ]
    }
    if skip_validation:
        mtls["skipValidation"] = True
    return Resource(Kind.MESH, "default", spec={"mtls": mtls})


def own_view(mesh: Resource, secrets: Mapping[str, bytes], local: Iterable[Key] = ()) -> ZoneView:
    """The zone's own Mesh ``mesh`` uses the Secrets ``secrets`` names, global's copies of
    them synced (those in ``local`` the zone's own instead)."""
    held = {n: res(Key(Kind.SECRET, "default", n), data) for n, data in secrets.items()}
    keys = [r.key for r in held.values()]
    return ZoneView(
        local=frozenset(local),
        synced=frozenset(keys),
        local_meshes=frozenset({"default"}),
        synced_meshes=frozenset({"default"}),
        own_mtls={"default": OwnMtls(mesh, held, check_written)},
    )


A = certs.ca("a")  # the CA the zone's own Mesh uses now
B = certs.ca("b")  # another


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"c": certs.GARBAGE}, "secret 'c' does not hold an X.509 certificate in PEM"),
        ({"c": certs.leaf().cert}, "secret 'c' is not a CA certificate: basicConstraints has"),
        ({"c": certs.ca_without_cert_sign().cert}, "keyUsage lacks keyCertSign"),
        ({"k": certs.other_key()}, "secret 'k' is not the private key of the certificate"),
        ({"k": b"not a key"}, "secret 'k' does not hold an unencrypted private key"),
        ({"c": B.cert}, "secret 'k' is not the private key of the certificate"),  # half a CA
    ],
)
def test_an_update_that_breaks_the_zones_own_mesh_ca_is_rejected(
    changes: dict[str, bytes], problem: str
) -> None:
    """Global replacing its copy of a Secret the zone's own Mesh uses as its CA with what is
    no valid CA for that backend (global's API check of a Secret a backend uses) is
    rejected, naming the mesh, the backend and the problem: that Mesh keeps its CA. A put of
    a Secret it does not use applies beside it."""
    v = own_view(own_mesh(), {"c": A.cert, "k": A.key})
    puts = [put(Key(Kind.SECRET, "default", n), 2, data) for n, data in changes.items()]
    plan = plan_batch(batch([*puts, put(S2, 3)]), v)
    assert put_keys(plan) == [S2]
    ((key, reason),) = plan.rejected
    assert key.name in changes
    assert reason.startswith(
        "this zone's own mesh 'default' mTLS backend 'ca-1' uses this secret: mtls.backends[0]."
    )
    assert problem in reason and len(reason) < 200


def test_the_reason_an_update_of_the_zones_own_ca_is_rejected() -> None:
    v = own_view(own_mesh(), {"c": A.cert, "k": A.key})
    plan = plan_batch(batch([put(C, 2, certs.GARBAGE)]), v)
    assert plan.rejected == [
        (
            C,
            "this zone's own mesh 'default' mTLS backend 'ca-1' uses this secret: "
            "mtls.backends[0].conf.cert.secret: secret 'c' does not hold an X.509 certificate "
            "in PEM",
        )
    ]


def test_an_update_that_keeps_the_zones_own_mesh_ca_valid_is_applied() -> None:
    """A new CA, its cert and key in one batch (in either order), or global's copy sent again
    unchanged (a snapshot), is applied."""
    v = own_view(own_mesh(), {"c": A.cert, "k": A.key})
    for changes in ([put(C, 2, B.cert), put(K, 3, B.key)], [put(K, 2, B.key), put(C, 3, B.cert)]):
        plan = plan_batch(batch(changes), v)
        assert plan.rejected == [] and sorted(put_keys(plan)) == [C, K]
    plan = plan_batch(batch([put(C, 2, A.cert)]), v)
    assert (plan.rejected, put_keys(plan)) == ([], [C])


def test_a_new_ca_is_rejected_whole_when_half_of_it_is_not_valid() -> None:
    """A cert and key sent together where the key is no key: both are rejected, so the Mesh
    keeps its old pair rather than a new cert with the old key."""
    v = own_view(own_mesh(), {"c": A.cert, "k": A.key})
    plan = plan_batch(batch([put(C, 2, B.cert), put(K, 3, b"not a key")]), v)
    assert put_keys(plan) == [] and sorted(rejected_keys(plan)) == [C, K]


def test_refusing_one_put_to_the_zones_own_ca_refuses_the_put_it_broke() -> None:
    """Backends ca-1 (c, k) and ca-2 (c, k2) share c. A new CA for ca-1 breaks ca-2 (k2 no
    longer matches c), so c is rejected; k alone no longer matches the c that stays, so it
    is rejected too: each backend is left as it was, valid."""
    mesh = own_mesh(("ca-1", "c", "k"), ("ca-2", "c", "k2"))
    v = own_view(mesh, {"c": A.cert, "k": A.key, "k2": A.key})
    plan = plan_batch(batch([put(C, 2, B.cert), put(K, 3, B.key)]), v)
    assert put_keys(plan) == []
    assert rejected_keys(plan) == [C, K]
    assert "backend 'ca-1'" in plan.rejected[1][1]


def test_updates_the_zones_own_mesh_ca_does_not_see_are_not_checked() -> None:
    """Global's copy of a Secret the zone holds itself is kept aside (a conflict), and the
    Mesh uses the zone's own; a Mesh that skips validation takes any content, as global's API
    does for one of its own."""
    shadowed = own_view(own_mesh(), {"c": A.cert, "k": A.key}, local=[C])
    plan = plan_batch(batch([put(C, 2, certs.GARBAGE)]), shadowed)
    assert (plan.rejected, put_keys(plan), plan.new_conflicts) == ([], [C], [])
    skipping = own_view(own_mesh(skip_validation=True), {"c": A.cert, "k": A.key})
    plan = plan_batch(batch([put(C, 2, certs.GARBAGE)]), skipping)
    assert (plan.rejected, put_keys(plan)) == ([], [C])


def test_a_batch_putting_and_deleting_the_same_keys_plans_in_linear_time() -> None:
    """No global sends it (ranges are coalesced), but a batch may: 16,000 puts each deleted
    again later in the batch held a zone's store for 100 s while each delete rebuilt the list
    of puts. 20,000 pairs plan in well under a second now (a bound 50 times that)."""
    import time

    keys = [Key(Kind.GLOBAL_SECRET, "", f"g{i}") for i in range(20_000)]
    changes = [put(k) for k in keys] + [delete(k) for k in keys] + [put(keys[0], data=b"w")]
    started = time.process_time()
    plan = plan_batch(batch(changes), view(synced=keys[:10]))
    assert time.process_time() - started < 10.0
    assert put_keys(plan) == [keys[0]] and plan.puts[0].data == b"w"
    assert sorted(plan.deletes, key=str) == sorted(keys, key=str)
