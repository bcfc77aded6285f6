"""The zone's own view of its sync (served by zonecp.status) and how a store failure is
reported as the zone's problem (to global, in its status report, and on /status)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from kds.errors import StoreDamaged, StoreError, StoreFull
from kds.model import Key
from kds.protocol.zone_session import ZoneSession

__all__ = ["DISK_FULL", "ZoneSyncStatus", "store_problem"]


@dataclass
class ZoneSyncStatus:
    """The zone's own view of its sync, served by zonecp.status (times: wall-clock seconds).

    The protocol's state (connected, ready, heads, revisions, how streams started, counts) is
    the session's, read through; the times, errors, dial attempts and conflicts are the
    client's."""

    session: ZoneSession
    global_address: str = ""
    connected_since: float = 0.0
    disconnected_at: float = 0.0
    last_message_at: float = 0.0
    applied_at: str = ""  # when the last complete range or snapshot was applied
    last_error: str = ""
    last_error_at: float = 0.0
    attempts: int = 0  # failed dial attempts in a row
    conflicts: list[Key] = field(default_factory=list)
    problem: str = ""  # why the zone cannot apply what global sends ("": nothing is wrong)
    problem_at: float = 0.0
    # Anti-entropy, as this zone saw it: checks global ran (first queries answered), when the
    # last one started and at which revision, the nodes this zone reported different in it,
    # and the synced resources repaired (count, when, the last ones by key).
    checks: int = 0
    last_check_at: float = 0.0
    last_check_revision: int = 0
    last_check_differed: int = 0
    repaired: int = 0
    last_repair_at: float = 0.0
    last_repaired: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    def set_problem(self, problem: str) -> bool:
        """The zone's problem is now ``problem`` ("" for none); True if it changed."""
        if problem == self.problem:
            return False
        self.problem = problem
        self.problem_at = time.time() if problem else 0.0
        return True

    @property
    def connected(self) -> bool:
        return self.session.connected

    @property
    def ready(self) -> bool:
        """Ready once connected and caught up with global at least once since this process
        started; it stays ready while global is away (the zone serves its last state)."""
        return self.session.ready

    @property
    def global_instance_id(self) -> str:
        return self.session.global_instance_id

    @property
    def global_store_id(self) -> str:
        return self.session.global_store_id

    @property
    def global_head(self) -> int:
        """Global's revision as last heard."""
        return self.session.global_head

    @property
    def applied_revision(self) -> int:
        return self.session.applied_revision

    @property
    def connections(self) -> int:
        """Streams welcomed since start."""
        return self.session.connections

    @property
    def sync_mode(self) -> str:
        """How global answered the last hello: "resume" (only the changes after
        sync_from_revision) or "snapshot" (everything again); "" before the first welcome."""
        return self.session.sync_mode

    @property
    def sync_from_revision(self) -> int:
        return self.session.sync_from_revision

    @property
    def resumes(self) -> int:
        return self.session.resumes

    @property
    def snapshots(self) -> int:
        return self.session.snapshots

    @property
    def batches_applied(self) -> int:
        return self.session.batches_applied

    @property
    def applied(self) -> Counter[str]:
        """Resource changes applied, by type."""
        return self.session.applied

    @property
    def rejected(self) -> Counter[str]:
        return self.session.rejected


DISK_FULL = "disk full:"  # how a problem a full disk caused begins


def store_problem(exc: BaseException) -> str:
    """The problem a store failure is reported as: its cause first, then the store's own
    message (which names the store and the fix, never a value)."""
    if isinstance(exc, StoreFull):
        return f"{DISK_FULL} {exc}"
    if isinstance(exc, StoreDamaged):
        return f"store damaged: {exc}"
    if isinstance(exc, StoreError):
        return f"store error: {exc}"
    return f"cannot apply a batch: {type(exc).__name__}"
