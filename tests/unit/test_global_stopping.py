"""Global stopping, end to end in one process (a real servicer and zone client over loopback
gRPC): what a zone that dials meanwhile gets."""

from __future__ import annotations

from pathlib import Path

from kds.model import Kind, Resource
from tests.unit.inprocess import running_pair, wait_until

T0 = "2026-11-30T00:00:00.000Z"


async def test_a_stream_that_arrives_while_global_stops_is_refused(tmp_path: Path) -> None:
    """Once global is stopping, a zone that dials is refused (UNAVAILABLE) instead of being
    admitted: admitted, its stream ran until grpc's grace cancelled it, holding the shutdown
    up that long. The zone retries, as after any refusal."""
    async with running_pair(tmp_path) as pair:
        await pair.store.put(Resource(Kind.MESH, "default"), T0)
        pair.servicer.stop()  # what global's shutdown does first, before the server stops
        zone = pair.start_zone("zone-a")
        await wait_until(
            lambda: "shutting down" in zone.client.status.last_error, what="the refusal"
        )
        assert "UNAVAILABLE" in zone.client.status.last_error
        assert pair.servicer.links == {} and zone.client.status.applied_revision == 0
