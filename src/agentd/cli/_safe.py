"""Text from a model or a tool, made safe to print on a terminal.

Whatever a run produced is attacker-controlled: an escape sequence in a tool's output
could set the operator's clipboard (OSC 52), retitle the window, move the cursor to
hide a line, or ``\\r`` could overwrite what a line showed. Before the CLI prints
such text, every control character but newline and tab (C0, DEL, C1) and the Unicode
bidirectional overrides are shown as visible escapes (``\\x1b``) instead: nothing is
hidden, and nothing reaches the terminal as a command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

__all__ = ["SafeConsole", "dumps", "terminal_safe"]

# C0 but \t and \n, DEL, C1, and the bidi embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every character that could command a terminal made visible
    (``\\r\\n`` is kept as a line end)."""
    return _UNSAFE.sub(_visible, text.replace("\r\n", "\n"))


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON for a terminal: like ``json.dumps`` (non-ASCII text kept readable), with
    the C1 controls and bidi overrides JSON would pass through escaped as well."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}",
                       json.dumps(value, indent=indent, ensure_ascii=False))


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
