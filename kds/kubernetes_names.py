"""The Kubernetes form's rule for Secret and GlobalSecret names: one name, one object. Pure.

In the Kubernetes form each Secret and GlobalSecret is a Kubernetes Secret in the control
plane's namespace, so a name is one object: writing it with another ``kuma.io/mesh`` label
would move it (Kuma refuses: "cannot change mesh of the Secret"), and with another type would
change a type Kubernetes keeps. Taken as a Universal write, either made a second secret and
left the first, still synced. A secret that already exists is updated in place whatever
other secrets share its name (names shared in the Universal form stay usable).

The API checks an apply before it writes (kds.api._apply), answering before any problem the
store finds; the store checks again inside the write's transaction, on its final state
(kds.store._select), so two writes racing cannot each take one name in two meshes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from kds.errors import FieldViolation
from kds.model import Key, Kind, Resource

__all__ = ["SECRET_KINDS", "name_problems"]

SECRET_KINDS = (Kind.SECRET, Kind.GLOBAL_SECRET)


def name_problems(
    written: Sequence[Resource],
    kubernetes: Collection[int],
    stored: Iterable[Key],
    most: int | None = None,
) -> list[tuple[int, FieldViolation]]:
    """(position in ``written``, problem) for each Secret or GlobalSecret written in the
    Kubernetes form (its position in ``kubernetes``) whose name another Secret or GlobalSecret
    holds, stored or written; the field is ``mesh`` or ``type``, as the Universal form names
    it. ``stored``: the Secrets and GlobalSecrets that existed before the write (any others
    are ignored). At most ``most`` problems."""
    named = [(i, r) for i, r in enumerate(written) if i in kubernetes and r.kind in SECRET_KINDS]
    if not named:
        return []
    holders: dict[str, list[Key]] = {r.name: [] for _, r in named}
    held = set()
    for key in stored:
        if key.name in holders and key.kind in SECRET_KINDS:
            holders[key.name].append(key)
            held.add(key)
    for r in written:
        if r.kind in SECRET_KINDS and r.name in holders and r.key not in holders[r.name]:
            holders[r.name].append(r.key)
    errs: list[tuple[int, FieldViolation]] = []
    for i, r in named:
        if r.key in held:
            continue  # an update of a stored secret (names shared before this rule held)
        other = next((k for k in holders[r.name] if k != r.key), None)
        if other is None:
            continue
        if other.kind is Kind.SECRET and r.kind is Kind.SECRET:
            err = FieldViolation(
                "mesh",
                f"cannot change mesh of the Secret: Secret {r.name!r} is in mesh "
                f"{other.mesh!r}; delete the Secret first and apply it again (in the "
                "Kubernetes form a name is one Kubernetes Secret, whatever its mesh)",
            )
        else:
            where = f" in mesh {other.mesh!r}" if other.mesh else ""
            err = FieldViolation(
                "type",
                f"a {other.kind} {r.name!r}{where} exists: in the Kubernetes form a Secret "
                "and a GlobalSecret of one name are one Kubernetes Secret, whose type "
                "cannot change; delete it first and apply it again",
            )
        errs.append((i, err))
        if most is not None and len(errs) >= most:
            break
    return errs
