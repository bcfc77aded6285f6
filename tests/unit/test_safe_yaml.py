"""kds.safe_yaml.load_all gives what yaml.load_all with NoAliasLoader gives, faster, and
refuses aliases and merge keys wherever they are."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kds.safe_yaml import AliasRefused, DuplicateKey, NoAliasLoader, load_all


def _reference(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=NoAliasLoader))


SAMPLES = [
    "",
    "---\n",
    "type: Secret\nmesh: default\nname: s1\ndata: QUJD\n---\ntype: Mesh\nname: m\n",
    "a: 1\nb: 2.5\nc: true\nd: null\ne: ~\nf: 2001-12-14t21:59:43.10-05:00\ng: 2002-12-14\n",
    "h: 0x1f\ni: .inf\nj: -.NaN\nk: 1_000\nl: '1'\nm: \"yes\"\nn: yes\no: 0o17\n",
    "bin: !!binary aGVsbG8=\nset: !!set {a, b}\nomap: !!omap [{a: 1}, {b: 2}]\n",
    "nested: {labels: {a: b, c: [1, {d: e}]}, list: [[], {}, '', x]}\n",
    "1: one\n2.5: two\nfalse: three\nnull: four\n",
    "= : value-key\nother: 1\n",
    "- a\n- b: c\n- [d, e]\n",
    "plain string\n",
    "!!str 42\n",
    "spec: !!map {x: !!seq [1, 2]}\n",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_same_values_as_pyyaml(text: str) -> None:
    got, want = list(load_all(text)), _reference(text)
    assert got == want
    assert [type(v) for v in got] == [type(v) for v in want]


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, min_size=1, max_size=3), st.booleans())
def test_same_values_as_pyyaml_for_any_dumped_document(docs: list[Any], flow: bool) -> None:
    text = yaml.safe_dump_all(docs, default_flow_style=flow)
    assert list(load_all(text)) == _reference(text) == docs


@pytest.mark.parametrize(
    "text",
    [
        "a: &x hello\nb: *x\n",  # a string
        "&k a: 1\n*k : 2\n",  # a string key
        "a: &x 1\nb: *x\n",  # a number (built by PyYAML)
        "a: &x {k: v}\nb: [*x]\n",
        "a: &x [1]\nb: !!set {? *x }\n",  # into a node PyYAML builds
        "a: !!omap [&x {k: 1}]\nb: *x\n",  # out of a node PyYAML built
        "base: &b {type: Mesh}\n<<: *b\n",
        "x: !!set {<<: {}}\n",  # a merge key inside a node PyYAML builds
        "&x [*x]\n",  # a cycle
    ],
)
def test_aliases_and_merge_keys_are_refused(text: str) -> None:
    with pytest.raises(AliasRefused):
        list(load_all(text))


def test_a_text_seen_before_resolves_as_it_did_plain_or_quoted() -> None:
    """The loader remembers the tag of short plain scalars: a text met again, plain or
    quoted, in the same document or a later one, gets the value PyYAML gives it."""
    text = "".join(
        f"---\na: 1\nb: '1'\nc: yes\nd: \"yes\"\ne: null\nf: s{i}\ng: 'null'\nh: 1\n"
        for i in range(3)
    )
    assert list(load_all(text)) == _reference(text)
    assert next(load_all(text)) == {
        "a": 1,
        "b": "1",
        "c": True,
        "d": "yes",
        "e": None,
        "f": "s0",
        "g": "null",
        "h": 1,
    }


def test_more_texts_than_remembered_still_resolve() -> None:
    """Past the number of texts the loader remembers, scalars resolve as PyYAML's do."""
    text = "".join(f"k{i}: {i}\nt{i}: true\nx{i}: x{i}\n" for i in range(3000))
    assert list(load_all(text)) == _reference(text)


def test_unhashable_key_and_invalid_yaml_raise_yaml_errors() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="unhashable key"):
        list(load_all("? [a, b]\n: c\n"))
    with pytest.raises(yaml.MarkedYAMLError):
        list(load_all("a: [unclosed\n"))
    # documents before the invalid one were read
    it = load_all("a: 1\n---\nb: [\n")
    assert next(it) == {"a": 1}
    with pytest.raises(yaml.YAMLError):
        next(it)


@pytest.mark.parametrize(
    ("text", "key", "line", "column"),
    [
        ("dup: 1\ndup: 2\n", "dup", 2, 1),
        ("a: {k: 1, k: 2}\n", "k", 1, 11),
        ("- x\n- {z: 1, y: 2, z: 3}\n", "z", 2, 16),
        ("1: one\n1: two\n", "1", 2, 1),
        ("yes: a\ntrue: b\n", "True", 2, 1),
        ("ok: 1\n---\ns: !!set {a, a}\n", "a", 3, 14),
    ],
)
def test_a_repeated_key_is_refused_where_it_repeats(
    text: str, key: str, line: int, column: int
) -> None:
    for load in (lambda t: list(load_all(t)), lambda t: list(yaml.load_all(t, NoAliasLoader))):
        with pytest.raises(DuplicateKey) as e:
            load(text)
        assert e.value.problem == f'found duplicate key "{key}"'
        mark = e.value.problem_mark
        assert mark is not None
        assert (mark.line + 1, mark.column + 1) == (line, column)
