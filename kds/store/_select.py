"""A list's selection (kds.store.results.Selection) as SQL, both backends alike.

The API's ``name`` is a case-sensitive substring of the name and ``filter[labels.K]=V`` an
exact label value; both are matched in SQL, so a filtered list reads only the rows it
selects and pages them there. The user's text is never part of a pattern: a substring is
found by position (``Db.CONTAINS``: SQLite's instr, PostgreSQL's strpos), so ``%``, ``_``
and ``\\`` in it are ordinary characters, with no LIKE escaping to get wrong.

Labels are stored as the JSON text of a flat map, written only by kds.store._rows with
``json.dumps(sort_keys=True)`` and its default separators, and covered by the row digest.
In that text every entry is ``"KEY": "VALUE"``, each key and value JSON-encoded, entries
joined by ``, `` inside ``{`` and ``}``. Framing the entries as ``, `` + entries + ``, ``,
the entry K=V is there exactly when ``, "K": "V", `` occurs: a quote following ``, `` is never
inside a string (a quote inside one follows a backslash), so the match starts at an entry's
key and ends at the closing quote of its value. No JSON functions are needed, so the same
SQL runs on SQLite and PostgreSQL.

``select_key_rows`` reads the rows of many keys at once, a few hundred names a statement.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from kds.model import Key, Kind
from kds.store._rows import Conn
from kds.store.results import Clause, Selection

__all__ = ["label_entry", "select_key_rows", "selected_sql"]

# Names per ``name IN (...)`` lookup: well under SQLite's oldest limit of 999 variables.
_IN_NAMES = 500

# The stored labels' entries framed by ", " on both sides (see above).
_FRAMED = "(', ' || substr(r.labels, 2, length(r.labels) - 2) || ', ')"


def label_entry(key: str, value: str) -> str:
    """The text that occurs in the framed labels exactly when label ``key`` is ``value``."""
    return f", {json.dumps(key)}: {json.dumps(value)}, "


def _clause_sql(clause: Clause, contains: str) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []
    if clause.name is not None:
        parts.append("r.name=?")
        args.append(clause.name)
    if clause.mesh is not None:
        parts.append("r.mesh=?")
        args.append(clause.mesh)
    for key, value in sorted(clause.labels.items()):
        parts.append(contains.format(_FRAMED))
        args.append(label_entry(key, value))
    return " AND ".join(parts) or "1=1", args


def selected_sql(select: Selection, contains: str) -> tuple[str, list[Any]]:
    """A condition on ``resources r`` (and its arguments) true for the rows ``select``
    selects; ``contains``: the dialect's "column holds ?" (``Db.CONTAINS``)."""
    where: list[str] = []
    args: list[Any] = []
    if select.name_part:
        where.append(contains.format("r.name"))
        args.append(select.name_part)
    alternatives = []
    for origin, clause in sorted(select.origins.items()):
        cond, cargs = _clause_sql(clause, contains)
        alternatives.append(f"(r.origin=? AND {cond})")
        args += [origin, *cargs]
    where.append("(" + (" OR ".join(alternatives) or "1=0") + ")")
    return " AND ".join(where), args


def select_key_rows(conn: Conn, cols: str, keys: Iterable[Key]) -> Iterator[tuple[Kind, str, Any]]:
    """(kind, mesh, row) for the resources rows of ``keys`` (every origin), each row the
    columns ``cols`` names: one statement per ``_IN_NAMES`` names, the keys of each kind and
    mesh in a ``name IN (...)`` term of their own. A zone's one-change batch reads its Secret
    and that Secret's Mesh: one statement, not one per kind and mesh."""
    names: dict[tuple[str, str], list[str]] = {}
    for key in keys:
        names.setdefault((str(key.kind), key.mesh), []).append(key.name)
    terms: list[str] = []
    args: list[str] = []
    count = 0
    for (kind, mesh), group in names.items():
        for i in range(0, len(group), _IN_NAMES):
            chunk = group[i : i + _IN_NAMES]
            if count + len(chunk) > _IN_NAMES:
                yield from _select_terms(conn, cols, terms, args)
                terms, args, count = [], [], 0
            terms.append(f"(kind=? AND mesh=? AND name IN ({', '.join('?' * len(chunk))}))")
            args += (kind, mesh, *chunk)
            count += len(chunk)
    if terms:
        yield from _select_terms(conn, cols, terms, args)


def _select_terms(
    conn: Conn, cols: str, terms: list[str], args: list[str]
) -> Iterator[tuple[Kind, str, Any]]:
    cur = conn.execute(f"SELECT kind, mesh, {cols} FROM resources WHERE {' OR '.join(terms)}", args)
    for r in cur:
        yield Kind(r[0]), r[1], r[2:]
