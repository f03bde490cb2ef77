"""A message's images and files, as the client sends them: ``image(...)`` and
``file(...)`` parts (from bytes or a path), in a list with the message's text."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Part", "content_of", "file", "image"]

#: A part of a message: text, or what :func:`image` and :func:`file` make.
Part = str | dict[str, Any]


def _read(source: bytes | str | os.PathLike[str]) -> tuple[bytes, str | None]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), None
    path = Path(source)
    return path.read_bytes(), path.name


def image(source: bytes | str | os.PathLike[str], media_type: str | None = None
          ) -> dict[str, Any]:
    """An image part (PNG, JPEG, GIF, WebP) from its bytes or a file's path; its type
    is read from the bytes when not given (the daemon checks it either way)."""
    data, _ = _read(source)
    part: dict[str, Any] = {"type": "image", "data": base64.b64encode(data).decode()}
    if media_type:
        part["media_type"] = media_type
    return part


def file(source: bytes | str | os.PathLike[str], media_type: str | None = None,
         name: str | None = None) -> dict[str, Any]:
    """A file part (PDF, UTF-8 text) from its bytes or a file's path (whose name it
    takes unless ``name`` is given)."""
    data, found = _read(source)
    part: dict[str, Any] = {"type": "file", "data": base64.b64encode(data).decode()}
    if media_type:
        part["media_type"] = media_type
    if name or found:
        part["name"] = name or found
    return part


def content_of(content: str | Sequence[Part]) -> str | list[dict[str, Any]]:
    """A message's ``content`` as the API takes it: text, or its parts (a string in
    the list is a text part)."""
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": p} if isinstance(p, str) else dict(p) for p in content]
