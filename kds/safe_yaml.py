"""YAML from users without anchors, aliases or merge keys. Pure.

An alias repeats a node without repeating its text, so a few hundred bytes of nested aliases
(a "billion laughs" file) stand for gigabytes of data once anything walks or prints them.
Resources and config files never need them, so the loader here refuses every alias (and
merge key, which works through aliases) the moment it meets one, before anything is
expanded. It is PyYAML's safe loader otherwise (libyaml's when PyYAML was built with it).

A mapping that names a key twice is refused (DuplicateKey, naming the key and where it
repeats): YAML forbids it, and PyYAML would keep the last copy without a word.

``load_all`` reads many documents (an apply of thousands of resources) about twice as fast as
``yaml.load_all``: libyaml composes the nodes as before, and the strings, mappings and
sequences that make up nearly all of a resource are built directly instead of through
PyYAML's per-node constructor machinery; every other node (numbers, booleans, null,
timestamps, binary, sets, unknown tags) goes to PyYAML's safe constructor, so the values are
the same as ``yaml.load_all`` with ``NoAliasLoader`` gives. The tag of a plain scalar depends
on its text alone, so the loader remembers it for short texts: the keys and most values of
thousands of similar documents (``type``, ``mesh``, ``Secret``, ``default``) repeat, and
PyYAML's resolver, called by libyaml for every scalar, tries its patterns each time (the
memory is kds.plain_yaml's, shared with its reader).

A text in the plainest form (one ``key: value`` per line, nested mappings by indent, plain
words only: kds.plain_yaml) skips the parser altogether: 10,000 generated secrets in 39 ms
instead of 128. kds.plain_yaml reads only what gives the same values as the parser.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kds import plain_yaml
from kds.text import safe_text

__all__ = ["AliasRefused", "DuplicateKey", "NoAliasLoader", "load_all", "where_and_problem"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AliasRefused(yaml.YAMLError):
    """The input uses an alias (``*name``) or a merge key (``<<``)."""

    def __init__(self) -> None:
        super().__init__("YAML anchors and aliases are not accepted")


class DuplicateKey(ConstructorError):
    """A mapping names one key twice. YAML forbids it, and PyYAML would keep the last copy
    silently: a file edited by appending a field would then mean something its reader may
    not see. The problem names the key (bounded, escaped); the mark is where it repeats."""

    def __init__(self, key: object, mapping: Node, repeated: Node) -> None:
        super().__init__(
            "while constructing a mapping",
            mapping.start_mark,
            f'found duplicate key "{safe_text(key, 100)}"',
            repeated.start_mark,
        )


class NoAliasLoader(_Base):
    """A safe loader that raises AliasRefused at the first alias or merge key."""

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> Any:
        # A plain scalar's tag depends on its text only, so a text seen before (in this
        # file or another) resolves as before, without PyYAML trying its patterns again.
        if kind is ScalarNode and implicit[0] and not self.yaml_path_resolvers:
            return plain_yaml.plain_tag(value)
        return super().resolve(kind, value, implicit)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A node met a second time in one document is an alias of it (or a cycle).
        if node in self.constructed_objects or node in self.recursive_objects:
            raise AliasRefused()
        return super().construct_object(node, deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                raise AliasRefused()
        super().flatten_mapping(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        if len(mapping) != len(node.value):  # a key repeated: find the first that is
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.constructed_objects[key_node]
                if key in seen:
                    raise DuplicateKey(key, node, key_node)
                seen.add(key)
        return mapping


def load_all(text: str) -> Iterator[Any]:
    """Each document of ``text``, as ``yaml.load_all(text, Loader=NoAliasLoader)`` gives it
    (AliasRefused at the first alias or merge key; yaml.YAMLError for invalid YAML)."""
    plain = plain_yaml.documents(text)
    if plain is not None:  # the plainest form, read without the parser
        yield from plain
        return
    loader = NoAliasLoader(text)
    try:
        while loader.check_node():
            yield _Builder(loader).build(loader.get_node())
    finally:
        loader.dispose()


def where_and_problem(e: yaml.MarkedYAMLError) -> str:
    """ " at line L, column C: problem" for an error the parser or a constructor raised: its
    place and its problem only, never a snippet of the line (it could show secret data)."""
    mark = e.problem_mark
    pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{pos}: {e.problem or e.context or 'cannot parse'}"


class _Builder:
    """One document's values from its nodes; a node met twice is an alias."""

    def __init__(self, loader: NoAliasLoader):
        self.loader = loader
        self.seen: set[int] = set()  # ids of nodes built (the document holds them alive)

    def _visit(self, node: Node) -> None:
        if id(node) in self.seen:
            raise AliasRefused()
        self.seen.add(id(node))

    def build(self, node: Node) -> Any:
        self._visit(node)
        tag = node.tag
        if tag == _STR_TAG and type(node) is ScalarNode:
            return node.value
        if tag == _MAP_TAG and type(node) is MappingNode:
            out: dict[Any, Any] = {}
            seen = self.seen
            for key_node, value_node in node.value:
                key_tag = key_node.tag
                if key_tag == _STR_TAG and type(key_node) is ScalarNode:
                    # The common case inline (a string key): what build and _visit do.
                    if id(key_node) in seen:
                        raise AliasRefused()
                    seen.add(id(key_node))
                    key = key_node.value
                else:
                    if key_tag == _MERGE_TAG:
                        raise AliasRefused()
                    if key_tag == _VALUE_TAG:  # "=" as a key: a plain string, as PyYAML has it
                        key_node.tag = _STR_TAG
                    key = self.build(key_node)
                    try:
                        hash(key)
                    except TypeError:
                        raise ConstructorError(
                            "while constructing a mapping",
                            node.start_mark,
                            "found unhashable key",
                            key_node.start_mark,
                        ) from None
                if key in out:
                    raise DuplicateKey(key, node, key_node)
                if value_node.tag == _STR_TAG and type(value_node) is ScalarNode:
                    if id(value_node) in seen:
                        raise AliasRefused()
                    seen.add(id(value_node))
                    out[key] = value_node.value
                else:
                    out[key] = self.build(value_node)
            return out
        if tag == _SEQ_TAG and type(node) is SequenceNode:
            return [self.build(item) for item in node.value]
        # Anything else is PyYAML's to build, after a check of its nodes for aliases (to
        # nodes inside it or built before it).
        self._check(node, top=True)
        return self.loader.construct_document(node)

    def _check(self, node: Node, top: bool = False) -> None:
        if not top:
            self._visit(node)
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    raise AliasRefused()
                self._check(key_node)
                self._check(value_node)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                self._check(item)
