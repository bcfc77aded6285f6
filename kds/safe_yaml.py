"""YAML from users without anchors, aliases or merge keys. Pure.

An alias repeats a node without repeating its text, so a few hundred bytes of nested aliases
(a "billion laughs" file) stand for gigabytes of data once anything walks or prints them.
Resources and config files never need them, so the loader here refuses every alias (and
merge key, which works through aliases) the moment it meets one, before anything is
expanded. It is PyYAML's safe loader otherwise (libyaml's when PyYAML was built with it).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["AliasRefused", "NoAliasLoader"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AliasRefused(yaml.YAMLError):
    """The input uses an alias (``*name``) or a merge key (``<<``)."""

    def __init__(self) -> None:
        super().__init__("YAML anchors and aliases are not accepted")


class NoAliasLoader(_Base):
    """A safe loader that raises AliasRefused at the first alias or merge key."""

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
