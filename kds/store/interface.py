"""What the control planes need from a store: one typed, async interface per role.

Callers depend on these Protocols only, never on a backend: ``GlobalStore`` is everything
globalcp uses, ``ZoneStore`` everything zonecp uses, and ``ResourceStore`` what both share
(the HTTP API serves either). A backend implements them with whatever concurrency it needs
(the SQLite backend hands each call to a writer or a reader thread); callers just await.
The conformance suite in tests/unit/test_store_conformance.py runs against every backend.

Rules every backend keeps:
- Rows are keyed by (kind, mesh, name, origin). Origin ``global``: on global, every resource;
  on a zone, a copy synced from global. Origin ``zone``: a zone-local resource, which sync
  never writes or deletes. On a zone a key may hold both rows (a name conflict): the local
  row is served, the synced one is kept aside and takes its place when the local row goes.
- A write the store acknowledged is durable (except a zone's applied batch, which global
  can send again: see ``ZoneStore.apply_batch``).
- ``put_many`` is one transaction: every resource or none. A failure raises the error of
  the first failing resource with its position in ``KdsError.item_index``.
- Global: every changed resource gets the next revision; its change-log entry, the new head
  and the history chain commit with it. ``log_floor <= r <= head`` can resume from r.
- ``on_commit`` (given to the backend at construction) is called once per committed API
  write transaction (put, put_many, delete) that changed something, with its changed
  results in revision order, before the next write starts. It runs on the backend's own
  thread: an event-loop caller hands the results over with ``call_soon_threadsafe``. A
  failing hook is logged and never fails the committed write.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from kds.model import Key, Kind, Resource
from kds.store.results import (
    ChangeRecord,
    LeafChanges,
    Row,
    Selection,
    Snapshot,
    SyncLeaves,
    SyncState,
    WriteResult,
    ZoneApplyResult,
    ZoneEvent,
)

if TYPE_CHECKING:
    from kds.protocol.applier import DecodedBatch

__all__ = ["GlobalStore", "OnCommit", "ResourceStore", "ZoneStore"]

# Called after each committed API write transaction with its changed results (see above).
OnCommit = Callable[[Sequence[WriteResult]], object]


class ResourceStore(Protocol):
    """Resources as the API serves and writes them, on either role."""

    @property
    def backend(self) -> str:
        """The backend's name, e.g. ``sqlite`` (reported to global in the zone's hello)."""
        ...

    @property
    def location(self) -> str:
        """Where the data lives, for logs (a file path; never a password)."""
        ...

    @property
    def store_id(self) -> str:
        """A random id made when the store was created: a new store is a new history."""
        ...

    # Reads: the effective view (a zone-local row hides the synced copy of its key).
    async def get(self, key: Key) -> Row | None: ...
    async def page(
        self,
        kind: Kind,
        mesh: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        select: Selection | None = None,
    ) -> tuple[int, list[Row]]:
        """(total, rows) ordered by mesh and name; ``limit`` None: all from ``offset``;
        ``select``: only the rows it selects (counted in ``total``), selected in the
        database."""
        ...

    async def list_rows(self, kind: Kind, mesh: str | None = None) -> list[Row]: ...
    async def secrets_named(self, names: Collection[str]) -> list[Key]:
        """The keys of this control plane's own Secrets and GlobalSecrets (any mesh) named
        one of ``names``: in the Kubernetes form each name is one Kubernetes Secret."""
        ...

    async def conflicts(self) -> list[Key]:
        """Keys that hold both a zone-local and a synced row (zones only; [] on global)."""
        ...

    async def counts(self) -> dict[str, dict[str, int]]:
        """Rows by kind and origin: ``{"Secret": {"global": n, "zone": m}, ...}``."""
        ...

    # API writes. Global: each change gets a revision. Zone: zone-local rows only; a key
    # that only global's copy holds is read-only (ReadOnlySynced), though a put identical to
    # that copy is unchanged.
    async def put(self, resource: Resource, now: str) -> WriteResult:
        """Write one resource; builtin CA secrets made for a Mesh come in ``also``."""
        ...

    async def put_many(
        self, resources: Sequence[Resource], now: str, kubernetes: Collection[int] = ()
    ) -> list[WriteResult]:
        """All in one transaction; generated CA secrets follow the given resources' results.
        ``kubernetes``: the positions of the resources in the Kubernetes form, whose Secret
        and GlobalSecret names are checked in the transaction (NameTaken: one name, one
        object, kds.kubernetes_names)."""
        ...

    async def delete(self, key: Key) -> WriteResult:
        """Delete one resource (NotFound if absent); ``previous`` is what was deleted and
        ``also`` holds a Mesh's builtin CA secrets deleted with it."""
        ...

    def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...


class GlobalStore(ResourceStore, Protocol):
    """Global's store: resources, the change log, and global's own tables."""

    async def versions_page(self, kind: Kind, limit: int) -> tuple[int, list[tuple[Key, int]]]:
        """(total, the first ``limit`` keys of ``kind`` with their versions), ordered by mesh
        and name: a page's names without reading (or unsealing) any data."""
        ...

    # The change log.
    async def head(self) -> int: ...
    async def log_floor(self) -> int: ...
    async def changes_after(self, revision: int, upto: int) -> list[ChangeRecord]:
        """The records (revision, upto] still in the log, in revision order."""
        ...

    async def chain_at(self, revision: int) -> bytes | None:
        """The history chain at ``revision``; None once the log no longer knows it."""
        ...

    async def snapshot(self) -> Snapshot:
        """Every resource as one put each, in sync order, at one consistent revision."""
        ...

    async def snapshot_units(self, take: Callable[[list[ChangeRecord]], None]) -> tuple[int, bytes]:
        """The snapshot handed to ``take`` one sync unit at a time (kds.protocol.records:
        each Mesh with the backend Secrets it names, then every other resource alone), read
        row by row, so no record per resource is held at once; ``take`` runs on the store's
        reader thread and must not block. The revision and the history chain it is at."""
        ...

    async def commit_time(self, revision: int) -> float | None:
        """When ``revision`` committed (wall-clock seconds); for a pruned one, the oldest
        time still known; None when nothing at or after it is known."""
        ...

    async def sync_leaves(self) -> SyncLeaves:
        """Every resource's key and leaf digest (kds.protocol.digest_tree.leaf_digest) at the
        head, read in one consistent read; a row that fails its digest check is left out."""
        ...

    async def sync_leaves_into(self, take: Callable[[Key, bytes], None]) -> int:
        """``sync_leaves`` handed to ``take`` leaf by leaf as the rows are read, so no list
        of every leaf is held (``take`` runs on the store's reader thread and must not
        block); the head revision they are at."""
        ...

    async def sync_leaves_since(self, revision: int, most: int) -> LeafChanges | None:
        """The leaves changed after ``revision`` up to the head, each with its digest now
        (None: no leaf any more), so a tree held at ``revision`` is brought to the head
        without reading every row; None when more than ``most`` changes came since or the
        change log no longer reaches back to it."""
        ...

    # Zone status, saved by globalcp.zones (JSON text by zone name). A backend several
    # instances share keeps a stored status whose ``connected_at`` is later than the one
    # saved (a newer stream of the zone, held by another instance), and keeps a claim's
    # ``lease_until`` on a clock they share: it is saved and read in the clock the store was
    # opened with, whatever the other instances' clocks say.
    async def zone_statuses(self) -> dict[str, str]: ...
    async def save_zone_statuses(self, statuses: dict[str, str]) -> None: ...

    # Zone status history, written by globalcp.history.
    async def add_zone_events(self, events: Sequence[ZoneEvent], keep: int) -> None:
        """Append ``events`` in one transaction, then keep only the newest ``keep`` of each
        (zone, kind) they added to (newest: last added)."""
        ...

    async def prune_zone_events(self, seen_since: float, total: int) -> int:
        """Drop the history of every zone with no entry at or after ``seen_since``, then the
        oldest entries beyond ``total``, in one transaction; the entries dropped."""
        ...

    async def zone_events(
        self, zone: str, kind: str, since: float = 0.0, limit: int = 1000
    ) -> list[ZoneEvent]:
        """The newest ``limit`` events of ``zone`` and ``kind`` whose time is at least
        ``since``, oldest first (in the order they were added)."""
        ...

    # Global's own secrets (CA key, token signing keys): never synced, never served.
    async def internal_secrets(self, prefix: str = "") -> dict[str, bytes]: ...
    async def put_internal_secret(self, name: str, data: bytes, now: str) -> None: ...
    async def delete_internal_secret(self, name: str) -> bool: ...
    async def add_internal_secrets(self, secrets: dict[str, bytes], now: str) -> dict[str, bytes]:
        """Store all of ``secrets`` in one transaction, unless one of their names is stored
        already (then none); return what is stored under those names afterwards. Instances
        sharing a store that make a CA at once thus agree on one (the first to commit)."""
        ...

    # Zone tokens issued (their ids and facts, never the tokens themselves).
    async def add_zone_token(
        self, token_id: str, zone: str, key_name: str, issued: str, expires: str
    ) -> None: ...
    async def revoke_zone_token(self, token_id: str, now: str) -> dict[str, str] | None: ...
    async def zone_tokens(self) -> list[dict[str, str]]: ...


class ZoneStore(ResourceStore, Protocol):
    """A zone's store: its own resources, global's copies, and where its sync stands."""

    async def sync_state(self) -> SyncState:
        """The global store and revision this zone last applied completely."""
        ...

    async def bind_zone(self, zone: str) -> str:
        """The zone this store serves: ``zone``, recorded if the store names none yet, else
        the one it recorded (another zone's store is not to be served as this one's)."""
        ...

    async def apply_batch(
        self, batch: DecodedBatch, global_store_id: str, now: str
    ) -> ZoneApplyResult:
        """Plan (kds.protocol.applier) and apply one batch in one transaction, recording
        its revision when it is a final part. May skip the fsync: a crash loses at most the
        last batches, with their revision, and global sends them again."""
        ...

    async def sync_leaves(self) -> SyncLeaves:
        """Every synced row's key and leaf digest (kds.protocol.digest_tree.leaf_digest), the
        copies kept aside by name conflicts included, never a zone-local row, at the applied
        revision, in one consistent read; a row that fails its digest check is left out (its
        range then differs from global's and anti-entropy repairs it)."""
        ...

    async def sync_leaves_into(self, take: Callable[[Key, bytes], None]) -> int:
        """``sync_leaves`` handed to ``take`` leaf by leaf as the rows are read, so no list
        of every leaf is held (``take`` runs on the store's reader thread and must not
        block); the applied revision they are at."""
        ...
