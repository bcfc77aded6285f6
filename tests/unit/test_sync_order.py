"""Sync order of Meshes with mTLS and their Secrets (kds.protocol.records.sync_units).

A real GlobalEngine takes random transactions under the mTLS rules; a real ZoneEngine
receives ranges and snapshots packed into small messages and applies them part
by part, sometimes cut mid-range (it then resumes from its revision, as after a reconnect).
After every part the zone commits: no rejection, every Secret's Mesh exists, and no synced
Mesh names a backend Secret the zone lacks.
"""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kds._pb import sync_pb2 as pb
from kds.errors import KdsError
from kds.model import Key, Kind, Resource
from kds.mtls import secret_refs
from kds.protocol.batching import coalesce, pack
from kds.protocol.records import ChangeRecord, sync_units
from kds.store.sqlite import GlobalEngine, ZoneEngine
from kds.wire import assemble_batch, change_delete, change_put, decode_batch
from tests import certs

NOW = "2026-11-29T01:00:00.000Z"
MESHES = ["m1", "m2"]
MAX_BYTES = 1400  # a Mesh with its two CA secrets fits; a range of several does not


def provided(mesh: str, cert: str, key: str) -> Resource:
    backend = {
        "name": "ca-1",
        "type": "provided",
        "config": {"cert": {"secret": cert}, "key": {"secret": key}},
    }
    return Resource(
        Kind.MESH, mesh, spec={"mtls": {"enabledBackend": "ca-1", "backends": [backend]}}
    )


def builtin(mesh: str, backend: str) -> Resource:
    b = {"name": backend, "type": "builtin", "config": {"caCert": {"keyType": "ECDSA"}}}
    return Resource(Kind.MESH, mesh, spec={"mtls": {"enabledBackend": backend, "backends": [b]}})


def secret(mesh: str, name: str, data: bytes) -> Resource:
    return Resource(Kind.SECRET, name, mesh, data)


def as_synced(r: Resource) -> Resource:
    """``r`` with the times global stamps on what it sends."""
    return r.with_meta(creation_time=NOW, modification_time=NOW)


def random_tx(g: GlobalEngine, rng: random.Random) -> None:
    """One global transaction the API could make; refused ones change nothing."""
    m = rng.choice(MESHES)
    n = rng.randint(0, 99)
    op = rng.randrange(8)
    ca = certs.ca(f"ca-{n % 3}")
    try:
        if op == 0:  # a new pair of CA secrets and the mesh switched to them, in one apply
            items = [
                secret(m, f"cert-{n}", ca.cert),
                secret(m, f"key-{n}", ca.key),
                provided(m, f"cert-{n}", f"key-{n}"),
            ]
            rng.shuffle(items)
            g.put_many(sorted(items, key=lambda r: r.kind is not Kind.MESH), NOW)
        elif op == 1:
            g.put(builtin(m, f"b{n % 2}"), NOW)
        elif op == 2:
            g.put(Resource(Kind.MESH, m), NOW)  # mtls off
        elif op in (3, 8):
            g.put(secret(m, f"plain-{n % 3}", b"x" * rng.randint(1, 500)), NOW)
        elif op in (4, 5):  # delete some secret of the mesh
            names = [r.resource.name for r in g.list_rows(Kind.SECRET, m)]
            if names:
                g.delete(Key(Kind.SECRET, m, rng.choice(names)))
        else:
            g.delete(Key(Kind.MESH, "", m))
    except KdsError:
        pass


class Zone:
    def __init__(self, path: Path):
        self.store = ZoneEngine(path)
        self.seq = 0

    @property
    def revision(self) -> int:
        return self.store.sync_state().applied_revision

    def receive(
        self,
        g: GlobalEngine,
        records: list[ChangeRecord],
        frm: int,
        snapshot: bool,
        cut: int | None,
    ) -> None:
        """Apply the parts in order; stop before part ``cut`` (a link cut mid-range)."""
        parts = list(pack(records, MAX_BYTES))
        assert snapshot or not any(p.split_unit for p in parts)
        for i, part in enumerate(parts):
            if cut is not None and i == cut:
                return
            self.seq += 1
            data = assemble_batch(
                seq=self.seq,
                from_revision=frm,
                revision=g.head(),
                snapshot=snapshot,
                final=part.final,
                head_revision=g.head(),
                framed_changes=[r.framed for r in part.records],
                chain=g.chain_at(g.head()) or b"" if part.final else b"",
            )
            assert len(data) <= MAX_BYTES
            batch, undecodable = decode_batch(pb.GlobalMessage.FromString(data).batch)
            assert not undecodable
            result = self.store.apply_batch(batch, g.store_id, NOW)
            assert result.rejected == []
            self.check()

    def check(self) -> None:
        for row in self.store.list_rows(Kind.MESH):
            for ref in secret_refs(row.resource.name, row.resource.spec):
                key = Key(Kind.SECRET, row.resource.name, ref.secret)
                assert self.store.get(key) is not None, f"{row.resource.name} lacks {ref.secret}"
        meshes = {r.resource.name for r in self.store.list_rows(Kind.MESH)}
        for row in self.store.list_rows(Kind.SECRET):
            assert row.resource.mesh in meshes

    def sync(self, g: GlobalEngine, rng: random.Random, may_cut: bool = True) -> None:
        cut = rng.choice([None, None, 0, 1, 2]) if may_cut else None
        if rng.random() < 0.2 or self.revision == 0:
            self.receive(g, g.snapshot().changes, 0, True, cut)
        else:
            frm = self.revision
            self.receive(g, coalesce(g.changes_after(frm, g.head())), frm, False, cut)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
    database=None,
)
@given(seed=st.integers(0, 2**32), steps=st.integers(10, 60))
def test_zone_never_holds_a_mesh_without_its_backend_secrets(
    tmp_path_factory: object, seed: int, steps: int
) -> None:
    """Random mTLS histories, synced in small parts, cut at random: the zone never holds a
    Mesh naming a Secret it lacks, nor a Secret without its Mesh, and ends equal to global."""
    rng = random.Random(seed)
    tmp = Path(tmp_path_factory.mktemp("order"))  # type: ignore[attr-defined]
    g = GlobalEngine(tmp / "g.db")
    z = Zone(tmp / "z.db")
    try:
        for _ in range(steps):
            random_tx(g, rng)
            if rng.random() < 0.3:
                z.sync(g, rng)
        z.sync(g, rng, may_cut=False)
        assert z.revision == g.head()
        synced = {(r.resource.key, r.resource.data) for k in Kind for r in z.store.list_rows(k)}
        want = {(r.resource.key, r.resource.data) for k in Kind for r in g.list_rows(k)}
        assert synced == want
    finally:
        g.close()
        z.store.close()


def rec(revision: int, res: Resource | None = None, key: Key | None = None) -> ChangeRecord:
    if res is not None:
        return ChangeRecord(revision, res.key, False, change_put(revision, res))
    assert key is not None
    return ChangeRecord(revision, key, True, change_delete(revision, key))


def test_units_keep_a_mesh_with_its_backend_secrets_and_a_deleted_mesh_with_its_deletes() -> None:
    """Phase 1: Mesh + its backend secret puts; phase 2: the rest; phase 3: a Mesh delete
    preceded by its secrets' deletes, each a unit."""
    records = [
        rec(1, secret("m1", "cert", b"c")),
        rec(2, secret("m1", "key", b"k")),
        rec(3, secret("m1", "other", b"o")),
        rec(4, provided("m1", "cert", "key")),
        rec(5, key=Key(Kind.SECRET, "m2", "s")),
        rec(6, key=Key(Kind.MESH, "", "m2")),
        rec(7, Resource(Kind.GLOBAL_SECRET, "g", data=b"g")),
    ]
    units = [[r.revision for r in unit] for unit in sync_units(records)]
    assert units == [[4, 1, 2], [3], [7], [5, 6]]


def test_a_range_whose_unit_cannot_fit_says_so() -> None:
    """A unit larger than a message is split only when it must, and the parts say so."""
    big = [rec(1, provided("m1", "c", "k")), rec(2, secret("m1", "c", b"x" * 600))]
    big.append(rec(3, secret("m1", "k", b"y" * 600)))
    assert [p.split_unit for p in pack(big, 1000)] == [True, True]
    assert [p.split_unit for p in pack(big, 2000)] == [False]


def test_hub_head_stops_only_at_the_end_of_a_transaction() -> None:
    """A transaction's records reach the hub in one call, so no range ends inside one (a
    Mesh without the secrets committed with it)."""
    from globalcp.hub import Hub

    hub = Hub(0, 0, 100)
    tx = [rec(1, provided("m1", "c", "k")), rec(2, secret("m1", "c", b"c"))]
    tx.append(rec(3, secret("m1", "k", b"k")))
    hub.publish_many(tx[1:])  # a later transaction's records arriving first: head waits
    assert hub.head == 0
    hub.publish_many(tx[:1])
    assert hub.head == 3


def test_store_reports_each_transaction_once(tmp_path: Path) -> None:
    calls: list[list[int]] = []
    g = GlobalEngine(
        tmp_path / "g.db",
        on_commit=lambda results: calls.append([r.record.revision for r in results if r.record]),
    )
    ca = certs.ca()
    g.put_many(
        [Resource(Kind.MESH, "m1"), secret("m1", "c", ca.cert), secret("m1", "k", ca.key)], NOW
    )
    g.put(provided("m1", "c", "k"), NOW)
    g.close()
    assert calls == [[1, 2, 3], [4]]


def test_a_mesh_and_its_backend_secrets_must_fit_one_message(tmp_path: Path) -> None:
    """Global refuses a Mesh whose unit could not travel in one message (field mtls), and a
    secret update that would make it too large (field data); nothing is written."""
    from kds.errors import InvalidReferences

    g = GlobalEngine(tmp_path / "g.db", max_message_bytes=2000)
    try:
        g.put_many([Resource(Kind.MESH, "m1"), secret("m1", "c", b"c" * 900)], NOW)
        g.put(secret("m1", "k", b"k" * 900), NOW)
        mesh = provided("m1", "c", "k")
        skip = {"mtls": {**mesh.spec["mtls"], "skipValidation": True}}
        try:
            g.put(mesh.with_meta(spec=skip), NOW)
        except InvalidReferences as e:
            assert [err.field for err in e.errors] == ["mtls"]
            assert "over the sync message limit of 2000 bytes" in str(e)
        else:
            raise AssertionError("an oversized unit was accepted")
        g.put(secret("m1", "k", b"k" * 500), NOW)
        g.put(mesh.with_meta(spec=skip), NOW)
        head = g.head()
        try:
            g.put(secret("m1", "c", b"c" * 1400), NOW)
        except InvalidReferences as e:
            assert [err.field for err in e.errors] == ["data"]
        else:
            raise AssertionError("a secret update past the unit limit was accepted")
        assert g.head() == head
    finally:
        g.close()


def test_a_mesh_delete_a_zone_refuses_keeps_its_backend_secrets(tmp_path: Path) -> None:
    """A zone-local Secret keeps a synced Mesh from being deleted on that zone; the deletes of
    the CA secrets sent with it are refused too, so the Mesh that stays keeps its CA."""
    from kds.protocol.applier import DecodedBatch, Incoming

    z = ZoneEngine(tmp_path / "z.db")
    try:
        mesh = builtin("m1", "b1")
        cert = secret("m1", "m1.ca-builtin-cert-b1", b"c")
        key = secret("m1", "m1.ca-builtin-key-b1", b"k")
        puts = tuple(Incoming(i + 1, r.key, as_synced(r)) for i, r in enumerate([mesh, cert, key]))
        z.apply_batch(DecodedBatch(1, 0, 3, False, True, 3, puts), "g", NOW)
        z.put(secret("m1", "local", b"l"), NOW)  # the zone's own secret in the mesh
        deletes = tuple(Incoming(4 + i, r.key) for i, r in enumerate([cert, key, mesh]))
        result = z.apply_batch(DecodedBatch(2, 3, 6, False, True, 6, deletes), "g", NOW)
        assert sorted(k.name for k, _ in result.rejected) == [
            "m1",
            "m1.ca-builtin-cert-b1",
            "m1.ca-builtin-key-b1",
        ]
        assert z.get(mesh.key) is not None
        assert z.get(cert.key) is not None and z.get(key.key) is not None
        assert result.applied_revision == 6  # reported once, never retried
    finally:
        z.close()


def test_conflict_rules_apply_to_ca_secrets_on_a_zone(tmp_path: Path) -> None:
    """A zone's own secret named like a backend's keeps its place (a conflict, reported);
    global's copy is kept aside and served when the zone's own is deleted."""
    from kds.protocol.applier import DecodedBatch, Incoming

    z = ZoneEngine(tmp_path / "z.db")
    try:
        ca = certs.ca()
        z.apply_batch(
            DecodedBatch(
                1,
                0,
                1,
                False,
                True,
                1,
                (Incoming(1, Key(Kind.MESH, "", "m1"), as_synced(Resource(Kind.MESH, "m1"))),),
            ),
            "g",
            NOW,
        )
        z.put(secret("m1", "c", b"zone's own"), NOW)
        unit = [provided("m1", "c", "k"), secret("m1", "c", ca.cert), secret("m1", "k", ca.key)]
        changes = tuple(Incoming(2 + i, r.key, as_synced(r)) for i, r in enumerate(unit))
        result = z.apply_batch(DecodedBatch(2, 1, 4, False, True, 4, changes), "g", NOW)
        assert result.rejected == [] and result.new_conflicts == [Key(Kind.SECRET, "m1", "c")]
        row = z.get(Key(Kind.SECRET, "m1", "c"))
        assert row is not None and row.origin == "zone" and row.resource.data == b"zone's own"
        z.delete(Key(Kind.SECRET, "m1", "c"))  # the zone's own: global's copy takes its place
        row = z.get(Key(Kind.SECRET, "m1", "c"))
        assert row is not None and row.origin == "global" and row.resource.data == ca.cert
    finally:
        z.close()
