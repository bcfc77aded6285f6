"""What ``kdsctl apply -f`` reads, as kumactl reads it: files, directories, stdin, variables.

- ``-f FILE``, ``-f -`` (stdin), or ``-f DIR``: every ``.yaml``, ``.yml`` and ``.json`` file
  directly in DIR, in name order (subdirectories are not entered), as kumactl does.
- ``-v KEY=VALUE`` (repeatable, or ``-v a=1,b=2``): each ``{{ KEY }}`` in the input is
  replaced by VALUE before it is parsed (kumactl's variables; a dotted KEY such as
  ``mesh.name`` works too). A variable the input uses but no ``-v`` gives is an error here,
  where kumactl would put an empty string.

Only the standard library: this runs on every apply, before anything heavy is imported.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from kdsctl.render import fail

__all__ = ["SUPPORTED_SUFFIXES", "Input", "parse_vars", "read_inputs", "render"]

SUPPORTED_SUFFIXES = (".yaml", ".yml", ".json")
# {{ name }} or {{{ name }}} (mustache's unescaped form), the name letters, digits, _ - and .
_VAR_RE = re.compile(r"\{\{\{?\s*([A-Za-z0-9_.-]+)\s*\}?\}\}")


@dataclass(frozen=True)
class Input:
    name: str  # as messages show it: "stdin" or the file's path
    text: str


def parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    """``-v`` values (``KEY=VALUE``, or several comma-separated) as a mapping."""
    out: dict[str, str] = {}
    for value in values:
        for pair in value.split(","):
            key, sep, val = pair.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(
                    f"{pair!r}: expected KEY=VALUE (e.g. -v mesh=default)", param_hint="'-v'"
                )
            out[key.strip()] = val
    return out


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
                out += [Input(str(f), f.read_text(encoding="utf-8")) for f in files]
            else:
                out.append(Input(path, p.read_text(encoding="utf-8")))
        except OSError as e:
            fail(f"error while reading {e.filename or path}: {e.strerror}")
        except UnicodeDecodeError:
            fail(f"error while reading {path}: not UTF-8 text")
    return out
