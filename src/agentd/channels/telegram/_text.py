"""Long text cut into Telegram-sized messages, and attachment file names made safe."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_MESSAGE", "safe_file_name", "split_message"]

#: Telegram's limit on a message's text, in characters (UTF-16 code units, strictly;
#: :func:`split_message` counts those).
MAX_MESSAGE = 4096


def _units(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts."""
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, limit: int) -> int:
    """The largest prefix length (in characters) of ``text`` within ``limit`` units."""
    if _units(text) <= limit:
        return len(text)
    lo, hi = 0, min(len(text), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _units(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """``text`` in pieces of at most ``limit`` UTF-16 units, cut at the last paragraph
    break, else line break, else space, in the second half of a piece (a hard cut
    when there is none); nothing is lost but the whitespace at a cut."""
    pieces: list[str] = []
    rest = text
    while _units(rest) > limit:
        end = _fit(rest, limit)
        cut = -1
        for sep in ("\n\n", "\n", " "):
            at = rest.rfind(sep, 0, end)
            if at >= end // 2:
                cut = at
                break
        if cut <= 0:
            cut = end
            if 0 < cut < len(rest) and "\udc00" <= rest[cut] <= "\udfff":
                cut -= 1  # (never between a surrogate pair's halves)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if piece:
            pieces.append(piece)
    if rest.strip() or not pieces:
        pieces.append(rest)
    return pieces


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str | None, default: str) -> str:
    """A file name that stays one name in one folder: the last path part of ``name``
    (either slash), reduced to letters, digits, ``.``, ``_`` and ``-``, no leading dot,
    at most 100 characters; ``default`` when nothing is left."""
    raw = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    raw = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", raw).strip("._-")
    cleaned = cleaned[-100:].lstrip("._-")
    return cleaned or default
