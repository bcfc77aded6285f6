"""The documents of a YAML text written in its plainest form, read without a YAML parser. Pure.

A file of thousands of generated resources is nearly always written the same way: block
mappings, one ``key: value`` per line, nested mappings indented under a ``key:`` line, and
every key and value a short plain word (a name, a mesh, base64 data). Reading such a file
through libyaml costs about 13 us per document, most of it in building a node for each scalar
and resolving its tag. This module reads it line by line for a fraction of that.

It reads only what it can read exactly as PyYAML's safe loader would; anything else makes it
answer None and the caller parses the whole text with the real parser (which also reports
the errors, with their positions). Accepted, and nothing else:

- lines separated by ``\\n``; a document separator is the line ``---``; empty lines;
- ``key: value`` and ``key:`` lines, indented with spaces;
- each key and each value made of ASCII letters, digits and ``_ . / + = -``, starting with a
  letter, digit, ``_``, ``.``, ``/``, ``+`` or ``=`` (never an indicator character), and
  resolving to a string as PyYAML's resolver has it: ``true``, ``null``, ``10``, ``1.5`` or
  ``2024-01-01`` are not strings there, so a text holding one as a key or a value is left
  to the parser;
- a ``key:`` line opens a mapping whose keys are on the lines just after it, indented
  further, all by the same amount; a line indented less closes it, and must line up with a
  mapping still open.

So no comments, no quotes, no flow collections, no sequences, no empty values, no empty
documents, no repeated keys, no anchors or tags, no tabs, no carriage returns, no text
past ASCII. Whatever is refused is refused for the whole text, so documents never come from
two readers.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

__all__ = ["documents", "plain_tag"]

_STR_TAG = "tag:yaml.org,2002:str"
_WORD = r"[A-Za-z0-9_./+=][A-Za-z0-9_./+=-]*"
_LINE = re.compile(rf"( *)({_WORD}):(?: ({_WORD}))?")
_resolver = Resolver()
# The tag PyYAML resolves a plain scalar to, remembered for texts up to _SHORT characters (keys
# and most values repeat from document to document), _TAGS_MAX of them in the process.
_tags: dict[str, str] = {}
_SHORT = 64
_TAGS_MAX = 16384
# Deeper than this is left to the parser, so that what comes out nests no deeper than what
# the parser's own path would hand on.
_DEPTH_MAX = 32


def plain_tag(text: str) -> str:
    """The tag PyYAML's safe loader gives a plain (unquoted, untagged) scalar of ``text``.
    It depends on the text alone: the safe loader has no path resolvers, the other input
    of PyYAML's resolve. kds.safe_yaml's loader asks here too, so a text is resolved once."""
    tag = _tags.get(text)
    if tag is None:
        tag = _resolver.resolve(ScalarNode, text, (True, False))
        if len(text) <= _SHORT and len(_tags) < _TAGS_MAX:
            _tags[text] = tag
    return tag


def documents(text: str) -> list[Any] | None:
    """Every document of ``text`` as ``yaml.load_all`` with a safe loader gives them, when
    the whole text is in the plain form this module reads; None when it is not."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0] == "---":
        del lines[0]
    if not lines:
        return None
    docs: list[Any] = []
    root: dict[str, Any] = {}
    # The mappings open, innermost last, each with its keys' indent; ``pending`` is a
    # "key:" line's key and mapping, waiting for the indented lines of its value.
    stack: list[tuple[int, dict[str, Any]]] = [(0, root)]
    pending: tuple[str, dict[str, Any]] | None = None
    match = _LINE.fullmatch
    for line in lines:
        if not line:
            continue
        if line == "---":
            if pending is not None or not root:
                return None
            docs.append(root)
            root = {}
            stack = [(0, root)]
            continue
        m = match(line)
        if m is None:
            return None
        spaces, key, value = m.groups()
        indent = len(spaces)
        if pending is not None:
            parent_key, parent = pending
            if indent <= stack[-1][0]:
                return None  # "key:" with nothing under it is null: the parser's to say
            if len(stack) >= _DEPTH_MAX:
                return None
            mapping: dict[str, Any] = {}
            parent[parent_key] = mapping
            stack.append((indent, mapping))
            pending = None
        else:
            while indent < stack[-1][0]:
                stack.pop()
            if indent != stack[-1][0]:
                return None
        mapping = stack[-1][1]
        if key in mapping or plain_tag(key) != _STR_TAG:
            return None
        if value is None:
            mapping[key] = None  # holds the key's place; its mapping replaces it
            pending = (key, mapping)
        elif plain_tag(value) == _STR_TAG:
            mapping[key] = value
        else:
            return None
    if pending is not None or not root:
        return None
    docs.append(root)
    return docs
