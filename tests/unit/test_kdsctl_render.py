"""kdsctl.render.quoted: kumactl's %q of what a server sent, made safe for a terminal; its
fast path for plain text gives exactly what the general one does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdsctl.render import SHOWN_CHARS, quoted, safe_text


def _general(value: object) -> str:
    return json.dumps(safe_text(value), ensure_ascii=False)


@pytest.mark.parametrize(
    "value",
    [
        "default",
        "",
        " spaced out ",
        'a"b',
        "a\\b",
        "é ü 漢字",
        "\x1b[31mred",
        "tab\there",
        "\u2028",
        "\u202e",
        "x" * SHOWN_CHARS,
        "x" * (SHOWN_CHARS + 1),
        5,
        None,
    ],
)
def test_quoted_is_json_of_the_safe_text(value: object) -> None:
    assert quoted(value) == _general(value)


def test_quoted_escapes_what_a_terminal_would_act_on() -> None:
    assert quoted("\x1b[2J") == '"\\\\x1b[2J"'
    assert quoted('say "hi"') == '"say \\"hi\\""'


@given(st.text(max_size=40))
def test_quoted_matches_the_general_form_for_any_text(value: str) -> None:
    assert quoted(value) == _general(value)
