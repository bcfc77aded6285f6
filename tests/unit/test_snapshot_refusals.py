"""A snapshot's final part also removes, on the zone, the synced copies it did not carry; the
zone may refuse such a delete (a Mesh its own secrets still live in). Its ack then names a key
the snapshot did not send, and global records the refusal instead of ending the stream as a
protocol error (which dropped the stream after every such snapshot, and with anti-entropy off
left global showing the zone synced while it kept the Mesh)."""

from __future__ import annotations

import shutil
from pathlib import Path

from kds.model import Key, Kind, Resource
from tests.unit.inprocess import running_pair, wait_until

T0 = "2026-11-30T00:00:00.000Z"
PAYMENTS = Key(Kind.MESH, "", "payments")


async def test_a_refused_delete_of_a_copy_a_snapshot_left_out_is_recorded(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    # The zone syncs Mesh payments from one global and keeps a secret of its own in it.
    async with running_pair(first) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        await pair.store.put(Resource(Kind.MESH, "payments"), T0)
        zone = pair.start_zone("zone-a")
        await wait_until(lambda: zone.client.status.applied_revision == pair.hub.head)
        own = Resource(Kind.SECRET, "own", mesh="payments", data=b"eA==")
        await zone.store.put(own, T0)
        await pair.stop_zone("zone-a")
    for f in first.glob("zone-a.db*"):
        shutil.copy(f, second / f.name)
    # Another global (another store: the zone takes a snapshot) has no Mesh payments.
    async with running_pair(second, anti_entropy_interval=0) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        zone = pair.start_zone("zone-a")
        await wait_until(
            lambda: (
                zone.client.status.applied_revision == pair.hub.head
                and pair.tracker.zones["zone-a"].acked_revision == pair.hub.head
            ),
            what="the snapshot acknowledged",
        )
        state = pair.tracker.zones["zone-a"]
        view = await pair.tracker.view("zone-a")
        assert view is not None
        refused = view.overview()["refused"]
        assert [r["key"] for r in refused] == ["Mesh:payments"], refused
        assert "mesh still holds 1 zone-local" in refused[0]["reason"]
        assert "protocol error" not in (state.last_error or "")
        assert zone.client.status.connections == 1  # the stream was not dropped
        assert await zone.store.get(PAYMENTS) is not None  # the zone keeps its Mesh
