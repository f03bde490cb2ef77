"""Text from a model or a tool, made safe to print on a terminal.

Whatever a run produced is attacker-controlled: an escape sequence in a tool's output
could set the operator's clipboard (OSC 52), retitle the window, move the cursor to
hide a line, or ``\\r`` could overwrite what a line showed; a bidi override
(``\\u202e``) could make ``rm -rf /`` read as something else, and a zero-width
character make two different strings look the same. Before the CLI prints such text,
every such character is shown as a visible escape (``\\x1b``, ``\\u202e``,
``\\U000e0041``) instead: nothing is hidden, and nothing reaches the terminal as a
command.

The characters (:data:`INVISIBLE`): the controls but newline and tab (C0, DEL, C1);
Unicode's format characters (category Cf: bidi marks, embeddings, overrides and
isolates, zero-width space, joiners, word joiner, BOM, soft hyphen, the tag
characters, ...) and line and paragraph separators, as of Unicode 15; the invisible
fillers (U+034F, U+115F, U+1160, U+17B4, U+17B5, U+3164, U+FFA0); the variation
selectors, but U+FE0E and U+FE0F right after a character that has a text and an emoji
form (anything past ASCII, and the digits, ``#`` and ``*`` of keycaps: a warning sign
stays as it is). The web console shows the same characters the same way (``visible``
in ``web/assets/ui.js``: tests/web/test_console_invisible.py holds the two to every
code point).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

__all__ = ["INVISIBLE", "SafeConsole", "dumps", "terminal_safe"]

_VARIATION = "\ufe00-\ufe0f\U000e0100-\U000e01ef"
#: What is never printed as it is (see the module's docstring).
INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"
    # Cf, Zl, Zp (Unicode 15)
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
    # invisible fillers; variation selectors but the presentation ones
    "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0"
    "\u180b-\u180d\u180f\ufe00-\ufe0d\U000e0100-\U000e01ef]"
    # U+FE0E / U+FE0F with no character of their own to present: first, after another
    # selector, or after ASCII that has no emoji form (all but digits, '#' and '*')
    f"|(?:^|(?<=[{_VARIATION}\x00-\x22\x24-\x29\x2b-\x2f\x3a-\x7f]))[\ufe0e\ufe0f]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON writes a character past the BMP as a surrogate pair
    return f"\\u{0xd800 + (code >> 10):04x}\\u{0xdc00 + (code & 0x3ff):04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every character that could command a terminal or hide itself
    made visible (``\\r\\n`` is kept as a line end)."""
    return INVISIBLE.sub(_visible, text.replace("\r\n", "\n"))


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON for a terminal: like ``json.dumps`` (non-ASCII text kept readable), with
    the characters JSON would pass through as they are escaped as well (the same
    JSON, read back)."""
    return INVISIBLE.sub(_json_escape, json.dumps(value, indent=indent, ensure_ascii=False))


class SafeConsole(Console):
    """A rich console whose output carries no control character but its own styling:
    strings are made terminal-safe before layout, and every text segment again just
    before it is written (``Text`` objects and tables skip ``render_str``). Markup in
    the CLI's own strings still styles; run content is ``escape``d where printed."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(terminal_safe(text), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment if segment.control else
            Segment(terminal_safe(segment.text), segment.style, segment.control)
            for segment in buffer)
