"""Named secrets' values taken out of what a run writes: ``[secret:NAME]`` instead.

A run's redactor knows the value of every secret its agent could use (loaded when the
run starts, and any resolved while it runs), in the forms a tool most often prints
them in:

- the value itself;
- its base64 (standard and URL-safe alphabets): the characters that encode the value's
  whole 3-byte groups, which are the same whatever follows the value (``echo $V |
  base64`` adds a newline: only the last one to three characters differ);
- its URL-encoded forms (``quote``, ``quote_plus``, ``%XX`` for every byte but
  letters and digits, in either case of hex digit).

What it does not catch, and docs/security.md says so: a value cut into pieces, or
encoded otherwise (hex, base64 starting mid-group, compressed, reversed). It is the
last line, not the first: the first is that a value is resolved only where a setting
uses it and never handed to the model.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["LiveRedaction", "SecretRedactor", "encoded_forms"]


def _pct(value: str, upper: bool) -> str:
    digits = "%02X" if upper else "%02x"
    return "".join(c if c.isascii() and c.isalnum() else
                   "".join(digits % b for b in c.encode()) for c in value)


def encoded_forms(value: str) -> set[str]:
    """``value`` and the encoded forms of it a redactor replaces (the base64 ones cut
    to the value's whole 3-byte groups)."""
    raw = value.encode()
    whole = 4 * (len(raw) // 3)
    forms = {value, quote(value, safe=""), quote(value), quote_plus(value),
             _pct(value, True), _pct(value, False)}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.add(encoded[:whole])
    # (A form shorter than the value's own length would hide common words.)
    return {f for f in forms if len(f) >= min(8, len(value))}


class SecretRedactor:
    """Replaces known secret values (and their encoded forms) in text and event data.

    Empty (no value known) it changes nothing and costs one check."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._names: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._hints: tuple[str, ...] = ()
        self._longest = 0
        if values:
            self.add(values)

    def __bool__(self) -> bool:
        return self._pattern is not None

    @property
    def values(self) -> set[str]:
        """Every string it replaces."""
        return set(self._names)

    @property
    def longest(self) -> int:
        """The length of the longest string it replaces (0: none)."""
        return self._longest

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where in ``text`` the strings it replaces are (start, end), in order."""
        if self._pattern is None:
            return []
        return [m.span() for m in self._pattern.finditer(text)]

    def add(self, values: Mapping[str, str]) -> None:
        """Redact these values too (``{name: value}``)."""
        changed = False
        for name, value in values.items():
            for form in encoded_forms(value):
                if self._names.get(form) != name:
                    self._names[form] = name
                    changed = True
        if changed:
            known = sorted(self._names, key=len, reverse=True)  # a longer form wins
            self._pattern = re.compile("|".join(map(re.escape, known)))
            # A cheap test first: a base64 form's first 4 characters, a value's first 8.
            self._hints = tuple(sorted({k[:8] for k in known}))
            self._longest = len(known[0])

    def text(self, text: str) -> str:
        """``text`` with every known value replaced by ``[secret:NAME]``."""
        if self._pattern is None or not any(map(text.__contains__, self._hints)):
            return text
        return self._pattern.sub(lambda m: f"[secret:{self._names[m.group(0)]}]", text)

    def data(self, value: Any) -> Any:
        """``value`` (JSON-like data: dicts, lists, strings...) with every string in it
        redacted, keys too; the same object when nothing changed."""
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            items = [(self._walk(k), self._walk(v)) for k, v in value.items()]
            if all(a is k and b is v for (a, b), (k, v) in zip(items, value.items(),
                                                                 strict=True)):
                return value
            return dict(items)
        if isinstance(value, list | tuple):
            walked = [self._walk(v) for v in value]
            if all(a is b for a, b in zip(walked, value, strict=True)):
                return value
            return type(value)(walked) if isinstance(value, tuple) else walked
        return value


class LiveRedaction:
    """Text that streams out in pieces (a reply's live deltas), redacted as a whole.

    Redacting each piece alone misses a value cut across two pieces, and a model
    streams a few characters a piece: whoever joins the pieces would read the value.
    So the last ``longest - 1`` characters are held back until more text comes (a
    value starting before them is then whole, and replaced); :meth:`flush` gives what
    is held when the stream ends, :meth:`reset` drops it when the stream starts over.
    With no value known it holds nothing back."""

    def __init__(self, redactor: SecretRedactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, text: str) -> str:
        """What of the stream so far may be shown now (redacted), ``text`` added."""
        if not self._held and not self._redactor:
            return text  # (no value known: nothing to hold back or replace)
        held = self._held + text
        keep = self._redactor.longest - 1
        cut = len(held) - keep if keep > 0 else len(held)
        if cut <= 0:
            self._held = held
            return ""
        for start, end in self._redactor.spans(held):
            if start >= cut:
                break
            cut = max(cut, end)  # (a value starting before the cut goes out whole)
        self._held = held[cut:]
        return self._redactor.text(held[:cut])

    def flush(self) -> str:
        """The rest of the stream (redacted); nothing is held after."""
        held, self._held = self._held, ""
        return self._redactor.text(held)

    def reset(self) -> None:
        """The stream starts over: what is held is dropped."""
        self._held = ""
