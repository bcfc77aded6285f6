"""What ``kdsctl apply -f`` reads, as kumactl reads it: files, directories, stdin, variables.

- ``-f FILE``, ``-f -`` (stdin), or ``-f DIR``: every ``.yaml``, ``.yml`` and ``.json`` file
  directly in DIR, in name order (subdirectories are not entered), as kumactl does.
- ``-v KEY=VALUE`` (repeatable, or ``-v a=1,b=2``): each ``{{ KEY }}`` in the input is
  replaced by VALUE before it is parsed (kumactl's variables; a dotted KEY such as
  ``mesh.name`` works too). A variable the input uses but no ``-v`` gives is an error here,
  where kumactl would put an empty string. With no ``-v`` at all nothing is replaced, as in
  kumactl (Kuma's own examples hold ``{{site.mesh_product_name}}`` in comments); kdsctl
  apply warns of a ``{{ KEY }}`` left in a value (``unfilled_in``).

Only the standard library: this runs on every apply, before anything heavy is imported.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from kdsctl.render import fail, safe_text

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Input",
    "parse_vars",
    "read_inputs",
    "render",
    "unfilled_hint",
    "unfilled_in",
]

SUPPORTED_SUFFIXES = (".yaml", ".yml", ".json")
# {{ name }} or {{{ name }}} (mustache's unescaped form), the name letters, digits, _ - and .
_VAR_RE = re.compile(r"\{\{\{?\s*([A-Za-z0-9_.-]+)\s*\}?\}\}")


@dataclass(frozen=True)
class Input:
    name: str  # as messages show it: "stdin" or the file's path
    text: str


def parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    """``-v`` values as a mapping, split as kumactl's flag library (pflag's StringToString)
    splits them: a value with one ``=`` is one pair, commas and all (``-v hosts=a,b``, outer
    double quotes dropped); with more, it is a CSV line of pairs (``-v '"a=x,y",b=2'``), each
    split at its first ``=`` (``-v data=dGVzdAo=``)."""
    import csv

    out: dict[str, str] = {}
    for value in values:
        if value.count("=") == 1:
            pairs = [value.strip('"')]
        else:
            try:
                pairs = next(csv.reader([value], strict=True), [])
            except csv.Error:
                pairs = [value]  # reported below as not KEY=VALUE
        for pair in pairs:
            key, sep, val = pair.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(
                    f"{pair!r}: expected KEY=VALUE (e.g. -v mesh=default)", param_hint="'-v'"
                )
            out[key.strip()] = val
    return out


def unfilled_hint(item: Input) -> str:
    """For an input that did not parse: a hint naming the ``{{ KEY }}`` it still holds (no
    ``-v`` was given, so, as in kumactl, nothing was replaced), else nothing."""
    used = sorted({m.group(1) for m in _VAR_RE.finditer(item.text)})
    if not used:
        return ""
    return f" (it uses the variable(s) {', '.join(used)}: give each with -v {used[0]}=VALUE)"


def unfilled_in(doc: object) -> list[str]:
    """The variables a parsed document still holds in a key or value (``{{ KEY }}`` left as
    written, no ``-v`` having been given; one in a YAML comment is not there any more)."""
    found: set[str] = set()
    todo = [doc]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            if "{{" in v:
                found.update(m.group(1) for m in _VAR_RE.finditer(v))
        elif isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return sorted(found)


def render(item: Input, variables: dict[str, str]) -> Input:
    """``item`` with each ``{{ KEY }}`` replaced; fails naming a variable it lacks."""
    missing = sorted({m.group(1) for m in _VAR_RE.finditer(item.text)} - variables.keys())
    if missing:
        fail(
            f"{item.name}: uses the variable(s) {', '.join(missing)}, which no -v gives "
            f"(e.g. -v {missing[0]}=VALUE)"
        )
    return Input(item.name, _VAR_RE.sub(lambda m: variables[m.group(1)], item.text))


def read_inputs(paths: tuple[str, ...]) -> list[Input]:
    """The inputs ``-f`` names, a directory standing for its YAML and JSON files."""
    out: list[Input] = []
    for path in paths:
        if path == "-":
            out.append(Input("stdin", sys.stdin.read()))
            continue
        if path.startswith(("http://", "https://")):
            fail(f"{path}: kdsctl reads files, not URLs (unlike kumactl): download it first")
        p = Path(path)
        try:
            if p.is_dir():
                files = sorted(
                    f for f in p.iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES and f.is_file()
                )
            else:
                files = [p]
        except OSError as e:
            fail(f"error while reading {_shown(e.filename or path)}: {e.strerror}")
        out += [_read(f) for f in files]
    return out


def _shown(path: object) -> str:
    """A file name as messages print it: a name in a directory can hold terminal escapes."""
    return safe_text(str(path), 1024)


def _read(file: Path) -> Input:
    name = _shown(file)
    try:
        return Input(name, file.read_text(encoding="utf-8"))
    except OSError as e:
        fail(f"error while reading {name}: {e.strerror}")
    except UnicodeDecodeError:
        fail(f"error while reading {name}: not UTF-8 text")
