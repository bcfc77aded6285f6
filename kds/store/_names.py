"""Secrets by name across meshes, for the Kubernetes form's rule (kds.kubernetes_names):
there a Secret's or GlobalSecret's name is one object, whatever its mesh.

``secrets_named`` is the API's read before an apply (ResourceStore.secrets_named);
``check_kubernetes_names`` runs inside the write's transaction, after its resources are
written and before it commits. Every write transaction holds the store's write lock (SQLite's
one writer, PostgreSQL's advisory lock), so what it reads there is the final state no other
write can change before the commit: two applies racing cannot each take one name in two
meshes, whatever the API's earlier read saw.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from kds.errors import FieldViolation, NameTaken
from kds.kubernetes_names import SECRET_KINDS, name_problems
from kds.model import Key, Kind, Resource
from kds.store._rows import Conn
from kds.store.results import WriteResult

__all__ = ["check_kubernetes_names", "secrets_named"]


def _named(conn: Conn, origin: str, names: Collection[str]) -> list[Key]:
    """One statement over the key columns; no index leads with the name, so the names are
    matched here rather than in SQL."""
    wanted = set(names)
    if not wanted:
        return []
    cur = conn.execute(
        "SELECT kind, mesh, name FROM resources "
        "WHERE kind IN ('Secret', 'GlobalSecret') AND origin=? ORDER BY kind, mesh, name",
        (origin,),
    )
    return [Key(Kind(k), m, n) for k, m, n in cur if n in wanted]


def secrets_named(engine: Any, names: Collection[str]) -> list[Key]:
    """ResourceStore.secrets_named on ``engine`` (kds.store._engine.ResourceEngine)."""
    with engine.db.read() as conn:
        return _named(conn, engine.origin, names)


def check_kubernetes_names(
    conn: Conn,
    origin: str,
    resources: Sequence[Resource],
    results: Sequence[WriteResult],
    kubernetes: Collection[int],
) -> None:
    """Raise NameTaken (by position in ``resources``) when a Secret or GlobalSecret written
    in the Kubernetes form (its position in ``kubernetes``) is named as another of this
    origin's, in the transaction's state after ``resources`` were written (``results``,
    theirs in order)."""
    names = {resources[i].name for i in kubernetes if resources[i].kind in SECRET_KINDS}
    if not names:
        return
    created = {res.key for res, r in zip(resources, results, strict=False) if r.created}
    # What existed before this write: the final state less what it created.
    stored = [k for k in _named(conn, origin, names) if k not in created]
    problems = name_problems(resources, kubernetes, stored)
    if problems:
        by_index: dict[int, list[FieldViolation]] = {}
        for i, err in problems:
            by_index.setdefault(i, []).append(err)
        e = NameTaken(by_index)
        e.item_index = next(iter(e.by_index))
        raise e
