"""Text a peer sent, made safe to show: escaped and bounded. Pure.

Zones send global strings (instance ids, versions, conflict names, rejection reasons) that
end up in logs, the API's JSON, kdsctl's tables and the status page. None of them may carry
terminal escapes or line breaks into a log or a terminal, nor grow without bound.

``escape`` replaces every control or otherwise non-printable character (C0 and C1 controls,
DEL, line and paragraph separators, format characters such as bidirectional overrides,
surrogates, private-use and unassigned code points) with a visible escape (``\\x1b``,
``\\u202e``) and leaves printable text, spaces included, as it is. ``bound`` cuts a text to a
number of characters and says how many it dropped. ``safe_text`` does both.
"""

from __future__ import annotations

import unicodedata

__all__ = ["DEFAULT_LIMIT", "bound", "escape", "safe_text"]

DEFAULT_LIMIT = 256

# Unicode categories that never print as themselves: controls, format characters (bidi
# overrides, zero-width joiners), line/paragraph separators, surrogates, private use, unassigned.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every non-printable character replaced by a visible escape."""
    if text.isprintable():  # the common case: nothing to do (a space is printable)
        return text
    return "".join(_escaped(ch) if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


def bound(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, ending with how many were left out."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}...[{dropped} more characters]"


def safe_text(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` (made a string if it is not one) bounded, then escaped: safe to log or print.
    Bounding first keeps the work proportional to ``limit``, not to what the peer sent."""
    return escape(bound(text if isinstance(text, str) else str(text), limit))
