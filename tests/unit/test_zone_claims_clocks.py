"""Global instances sharing a PostgreSQL store whose clocks disagree by more than a lease
still agree on who holds a zone: the store keeps claim times on PostgreSQL's clock and
gives each instance the time left on a claim in its own clock (kds.store.postgres)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from globalcp.zone_claims import ZoneClaims
from globalcp.zone_state import ZoneState
from kds.store import GlobalStore, PgTarget, open_global_store
from tests.pgserver import shared_server

LEASE = 10.0
SKEW = 30.0  # seconds: three leases


def _instances(
    skew: float,
) -> tuple[tuple[GlobalStore, ZoneClaims], tuple[GlobalStore, ZoneClaims]]:
    """Instance A on this host's clock, B on one ``skew`` seconds off, on one store."""
    target = PgTarget(shared_server().url, f"claims_{uuid.uuid4().hex[:10]}")
    a_clock: Callable[[], float] = time.time
    b_clock: Callable[[], float] = lambda: time.time() + skew  # noqa: E731
    return (
        (open_global_store(target, clock=a_clock), ZoneClaims("global-a", LEASE, a_clock)),
        (open_global_store(target, clock=b_clock), ZoneClaims("global-b", LEASE, b_clock)),
    )


def _held_by_a(claims: ZoneClaims, lease_left: float) -> ZoneState:
    state = ZoneState("zone-1")
    state.online = True
    state.global_instance = "global-a"
    state.connected_at = claims.clock()
    claims.claim(state, "zone-1")
    state.lease_until = claims.clock() + lease_left
    return state


async def _seen_by(store: GlobalStore, claims: ZoneClaims) -> ZoneState:
    zones: dict[str, ZoneState] = {}
    await claims.refresh(store, zones, set(), ZoneState.from_json)
    return zones["zone-1"]


async def test_a_live_claim_holds_for_an_instance_whose_clock_is_ahead() -> None:
    (a, claims_a), (b, claims_b) = _instances(+SKEW)
    try:
        await a.save_zone_statuses({"zone-1": _held_by_a(claims_a, LEASE).to_json()})
        seen = await _seen_by(b, claims_b)
        assert seen.online and claims_b.held_elsewhere(seen)
        assert 0 < seen.lease_until - claims_b.clock() <= LEASE
        # A's own view of what it saved is in its own clock too.
        mine = (await a.zone_statuses())["zone-1"]
        left = ZoneState.from_json("zone-1", mine).lease_until - claims_a.clock()
        assert 0 < left <= LEASE
    finally:
        a.close()
        b.close()


async def test_a_lapsed_claim_lapses_for_an_instance_whose_clock_is_behind() -> None:
    (a, claims_a), (b, claims_b) = _instances(-SKEW)
    try:
        await a.save_zone_statuses({"zone-1": _held_by_a(claims_a, -1.0).to_json()})
        seen = await _seen_by(b, claims_b)
        assert not seen.online and not claims_b.held_elsewhere(seen)
        assert "global-a stopped renewing its claim" in seen.disconnect_reason
    finally:
        a.close()
        b.close()
