"""Zone streams claimed by global instances sharing one PostgreSQL store (globalcp.zones).

Each zone's saved status names the global instance holding its stream and until when that
claim holds (``lease_until``); the holder renews it every half lease while the stream
lives. Every instance shows the zones it does not hold as the store says, re-read at most
once a second; a claim past its lease shows its zone Offline: the instance holding it
stopped (killed, or cut off from the store). The store keeps a status describing a newer
stream over one describing an older stream (kds.store.interface), so the instance that took a
zone's new stream wins over the one whose stream ended. ``lease_until`` is in this
instance's clock here; the store keeps it on PostgreSQL's clock and converts it on the way
in and out (kds.store.postgres._global), so instances whose clocks differ agree on it.

An instance that cannot save its renewals (cut off from the store while others still reach
it) must not keep the streams: the others take its zones once its claims lapse, and it no
longer sees their writes. So each claim's deadline is the lease the store last accepted
(a new claim: its first lease); a stream whose deadline is less than ``LAPSE_MARGIN`` away
is ended (``lapsing``), and until a save works again the instance refuses new streams
(``cut_off``), so its zones reconnect to another instance rather than to it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from kds.store import GlobalStore

__all__ = ["LAPSE_MARGIN", "ZoneClaims"]

# A claim the store does not hold renewed is given up this many seconds (at most a tenth of
# the lease) before it lapses, so its stream has ended by the time another instance may take
# the zone.
LAPSE_MARGIN = 1.0


class Claimed(Protocol):
    online: bool
    global_instance: str
    lease_until: float
    disconnected_at: float
    disconnect_reason: str


S = TypeVar("S", bound=Claimed)


class ZoneClaims:
    def __init__(self, instance_id: str, lease: float, clock: Callable[[], float]):
        self.instance_id = instance_id
        self.lease = lease
        self.clock = clock
        self._refreshed = 0.0
        # Zone -> until when the store holds this instance's claim (or, not yet saved, until
        # when its first lease runs).
        self._deadline: dict[str, float] = {}
        self.cut_off = False  # a claim lapsed unsaved and no save has worked since

    def mine(self, state: Claimed) -> bool:
        return state.online and state.global_instance == self.instance_id

    def held_elsewhere(self, state: Claimed) -> bool:
        """Another instance holds ``state``'s stream, its claim unexpired."""
        return state.online and not self.mine(state) and state.lease_until > self.clock()

    def claim(self, state: Claimed, name: str) -> None:
        state.lease_until = self.clock() + self.lease
        self._deadline[name] = state.lease_until

    def saved(self, leases: dict[str, float]) -> None:
        """The store took these zones' statuses, with this instance's claims running until
        the times given."""
        self._deadline.update(leases)
        self.cut_off = False

    def lapsing(self, states: dict[str, S]) -> list[str]:
        """The zones whose streams this instance holds on a claim the store has not renewed
        and that lapses within the margin: the caller ends those streams. Each is returned
        once per claim."""
        now = self.clock()
        margin = min(LAPSE_MARGIN, self.lease / 10)
        lapsing: list[str] = []
        for name, until in list(self._deadline.items()):
            state = states.get(name)
            if state is None or not self.mine(state):
                del self._deadline[name]  # its stream ended: nothing held
            elif until - now <= margin:
                del self._deadline[name]
                lapsing.append(name)
        if lapsing:
            self.cut_off = True
        return lapsing

    def renew(self, states: Iterable[S]) -> list[S]:
        """The claims of this instance due for renewal (half a lease before they lapse),
        renewed; the caller saves them."""
        now = self.clock()
        due = [s for s in states if self.mine(s) and s.lease_until - now < self.lease / 2]
        for s in due:
            s.lease_until = now + self.lease
        return due

    async def refresh(
        self,
        store: GlobalStore,
        zones: dict[str, S],
        unsaved: set[str],
        parse: Callable[[str, str], S],
    ) -> None:
        """Take the store's view of the zones this instance does not hold (at most once a
        second) into ``zones``; a lapsed claim shows its zone Offline."""
        now = self.clock()
        if now - self._refreshed < 1.0:
            return
        self._refreshed = now
        for name, text in (await store.zone_statuses()).items():
            held = zones.get(name)
            if name in unsaved or (held is not None and self.mine(held)):
                continue  # this instance's news about the zone is the newest
            state = parse(name, text)
            if state.online and state.lease_until <= now:
                state.online = False
                state.disconnected_at = state.lease_until
                state.disconnect_reason = (
                    f"global instance {state.global_instance} stopped renewing its claim"
                )
            zones[name] = state
