"""Token text a reader can see: the rules both views (the PNG figure and the HTML report) follow.

GPT-2 tokens are full of characters that print as nothing (a leading space, a newline, a
zero-width space). `display_token` turns each into something visible. It knows nothing about
fonts: a view that cannot draw every character (matplotlib, with one font list) passes a
`drawable` test, and characters it cannot draw become `U+XXXX`. A browser falls back to other
fonts by itself, so the report passes none. No matplotlib here.
"""

from __future__ import annotations

import unicodedata
from typing import Callable

__all__ = ["display_token", "SHOWN"]

# Each whitespace character's preferred symbol, then a fallback for fonts without it.
SHOWN = {" ": ("␣", "·"), "\n": ("⏎", "\\n"), "\t": ("⇥", "\\t"), "\r": ("␍", "\\r")}


def display_token(text: str, drawable: Callable[[str], bool] | None = None) -> str:
    """A token's text made visible: spaces as "␣", newlines as "⏎", tabs as "⇥", other control,
    format and space characters as Python escapes (`\\x07`, `\\u200b`), and, when `drawable` is
    given, characters it says cannot be drawn as `U+4E2D`. Byte fragments, which `LensResult`
    already spells `\\xe2\\x80`, stay as they are.

    >>> display_token(" the\\n")
    '␣the⏎'
    """
    return "".join(_display_char(ch, drawable) for ch in text)


def _display_char(ch: str, drawable: Callable[[str], bool] | None) -> str:
    if ch in SHOWN:
        symbol, fallback = SHOWN[ch]
        return symbol if drawable is None or drawable(symbol) else fallback
    if unicodedata.category(ch)[0] in "CZ":  # control, format, private use, unassigned; odd spaces
        return ch.encode("unicode_escape").decode("ascii")
    if drawable is not None and not drawable(ch):  # e.g. CJK or emoji in a font without them: an empty box otherwise
        return f"U+{ord(ch):04X}"
    return ch
