"""kds.plain_yaml reads the plainest YAML without a parser: what it reads, it reads as PyYAML's
safe loader does, and whatever it cannot read exactly it leaves to the parser (None)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kds import plain_yaml
from kds.safe_yaml import load_all


def _reference(text: str) -> list[Any]:
    # PyYAML's own safe loader, not kds.safe_yaml's: that one resolves scalars through
    # kds.plain_yaml.plain_tag, the code under test.
    return list(yaml.load_all(text, Loader=yaml.SafeLoader))


FLAT = "".join(
    f"---\ntype: Secret\nmesh: default\nname: s{i}\ndata: c2VjcmV0LXtpfQ+/a=\n" for i in range(50)
)
KUBERNETES = """\
apiVersion: v1
kind: Secret
metadata:
  name: sample-secret
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
    team: payments
data:
  value: dGVzdAo=
type: system.kuma.io/secret
---
type: Mesh
name: other
"""


@pytest.mark.parametrize(
    "text",
    [
        FLAT,
        FLAT[4:],  # no separator before the first document
        FLAT.rstrip("\n"),  # no line break at the end
        KUBERNETES,
        "a:\n    b:\n      c: d\n    e: f\ng: h\n",  # indents of any width, closed in turn
        "labels:\n  kuma.io/zone: east\n  app/v: 1.2.3-rc.1+build=7\nname: _x\n",
        "k: a\n\nl: b\n",  # an empty line
    ],
)
def test_the_plain_form_is_read_without_the_parser_to_the_same_values(text: str) -> None:
    got = plain_yaml.documents(text)
    assert got is not None
    assert got == _reference(text)
    assert list(load_all(text)) == got


def test_a_large_generated_file_is_read_without_the_parser() -> None:
    text = "".join(
        f"---\ntype: Secret\nmesh: m{i % 7}\nname: secret-{i}\ndata: {'QUJD' * 16}\n"
        for i in range(10_000)
    )
    got = plain_yaml.documents(text)
    assert got is not None and len(got) == 10_000
    assert got == _reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "---\n",
        "a: b\n---\n---\nc: d\n",  # an empty document
        "a: b\n---\n",  # an empty last document
        "a: true\n",  # not strings: booleans, numbers, null, dates, the value key
        "a: 10\n",
        "a: 1.5\n",
        "a: .inf\n",
        "a: 0x1f\n",
        "a: 1_000\n",
        "a: null\n",
        "a: 2024-01-01\n",
        "a: =\n",
        "yes: b\n",
        "1: b\n",
        "a:\n",  # an empty value is null
        "a:\nb: c\n",
        "a: b\na: c\n",  # a repeated key: the parser says where
        "m:\n  a: b\n  a: c\n",
        "a: b # comment\n",
        "# comment\na: b\n",
        "a: 'b'\n",
        'a: "b"\n',
        "a: [b]\n",
        "a: {b: c}\n",
        "- a\n",
        "a:\n- b\n",
        "a: &x b\n",
        "a: *x\n",
        "a: !!str b\n",
        "a: b c\n",
        "a:  b\n",
        "a: b \n",
        "a:\tb\n",
        "a: b\r\n",
        "a: é\n",
        "a: b\n  c\n",  # a continuation of b's plain scalar
        "m:\n  a: b\n    c: d\n",
        "m:\n    a: b\n  c: d\n",  # lines up with no open mapping
        "  a: b\n",  # an indented first line
        "a: b\n  \n",  # a line of spaces
        "--- a: b\n",
        "a: b\n...\n",
        "%YAML 1.1\n---\na: b\n",
        "\ufeffa: b\n",
        "a:b\n",
        "".join(f"{' ' * d}k{d}:\n" for d in range(40)) + " " * 40 + "x: y\n",  # too deep
    ],
)
def test_anything_else_is_left_to_the_parser(text: str) -> None:
    assert plain_yaml.documents(text) is None


def test_nesting_up_to_the_depth_limit_is_read() -> None:
    depth = 31
    text = "".join(f"{' ' * d}k{d}:\n" for d in range(depth)) + " " * depth + "x: y\n"
    got = plain_yaml.documents(text)
    assert got is not None and got == _reference(text)


# Texts from pieces on both sides of the line the plain form draws: words that are and are
# not strings, indicators, spaces and tabs, separators, comments and continuations.
_WORDS_LIST = [
        "a", "b", "k", "name", "kuma.io/mesh", "x_y", "v1.2", "+a", "/p", ".x", "=a", "QUJD+/=",
        "true", "No", "on", "~", "null", "1", "-1", "+1", "0b1", "1:2", "1.5", ".inf", ".NaN",
        "2024-01-01", "=", "<<", "...", "---", "-", "-a", "a-", "é", "a b", "a#b", "a #b",
        "'a'", '"a"', "&a", "*a", "!a", "[a]", "{a}", "?", ":", "a:", "%a", "@a", "`a", "|", ">",
    ]  # fmt: skip
_WORDS = st.sampled_from(_WORDS_LIST)
_INDENTS = st.sampled_from(["", "", "", " ", "  ", "   ", "    ", "\t"])
_LINES = st.one_of(
    st.tuples(_INDENTS, _WORDS, st.one_of(st.none(), _WORDS)).map(
        lambda t: f"{t[0]}{t[1]}:" + ("" if t[2] is None else f" {t[2]}")
    ),
    st.sampled_from(["---", "", "# c", "  ", "- x", "...", "--- x", "a:b", "a:  b", "a: b "]),
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_LINES, min_size=1, max_size=8), st.booleans())
@example(["m:", "  a: b", "  c: d", "e: f"], True)
@example(["m:", "  a: b", "    c: d"], True)
def test_whatever_it_reads_the_parser_reads_the_same(lines: list[str], newline: bool) -> None:
    _same_as_the_parser("\n".join(lines) + ("\n" if newline else ""))


def _same_as_the_parser(text: str) -> bool:
    got = plain_yaml.documents(text)
    if got is None:
        return False
    want = _reference(text)  # raises if the plain reader took what the parser refuses
    assert got == want
    assert [type(d) for d in got] == [type(d) for d in want]
    return True


_STRING_WORDS_LIST = ["a", "b", "name", "kuma.io/mesh", "x_y", "v1.2", "QUJD+/=", "1a"]
_STRING_WORDS = st.sampled_from(_STRING_WORDS_LIST)
_trees = st.recursive(
    _STRING_WORDS,
    lambda inner: st.dictionaries(_STRING_WORDS, inner, min_size=1, max_size=3),
    max_leaves=8,
)


def _render(tree: dict[str, Any], widths: list[int], depth: int = 0) -> list[str]:
    pad = " " * sum(widths[:depth])
    lines = []
    for k, v in tree.items():
        if isinstance(v, dict):
            lines += [f"{pad}{k}:", *_render(v, widths, depth + 1)]
        else:
            lines.append(f"{pad}{k}: {v}")
    return lines


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(
        st.dictionaries(_STRING_WORDS, _trees, min_size=1, max_size=3), min_size=1, max_size=3
    ),
    st.lists(st.integers(1, 4), min_size=8, max_size=8),
    st.lists(st.tuples(st.integers(0, 40), st.one_of(_LINES, _WORDS)), max_size=2),
)
def test_plain_texts_and_near_misses_read_as_the_parser_reads_them(
    docs: list[dict[str, Any]], widths: list[int], changes: list[tuple[int, str]]
) -> None:
    """Plain texts with up to two changes: a line replaced by another (any indent, any
    words, separators, comments), or one line's value replaced by any word."""
    lines: list[str] = []
    for doc in docs:
        lines += ["---", *_render(doc, widths)]
    for at, change in changes:
        i = at % len(lines)
        if change in _WORDS_LIST and lines[i].endswith(tuple(_STRING_WORDS_LIST)):
            lines[i] = lines[i].rpartition(" ")[0] + " " + change
        else:
            lines[i] = change
    read = _same_as_the_parser("\n".join(lines) + "\n")
    if not changes:
        assert read  # a plain text is read without the parser


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9./_-]{0,8}", fullmatch=True),
            st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_./+=-]{0,12}", fullmatch=True),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_plain_words_dumped_by_pyyaml_read_back(docs: list[dict[str, str]]) -> None:
    """What PyYAML writes for plain words is read here exactly when every word is a string
    to PyYAML (it quotes the others, which the plain form does not take)."""
    text = yaml.safe_dump_all(docs, default_flow_style=False)
    got = plain_yaml.documents(text)
    if got is not None:
        assert got == docs
    assert list(load_all(text)) == docs
