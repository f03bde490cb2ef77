"""How a message's images and files are put to a model, whatever its provider.

Each provider maps :class:`~agentd.llm.messages.MediaPart` s to its own blocks; what
they share is here: an image or PDF as base64 (or a ``data:`` URL), a text file as
text with its name, and the note a model gets instead of bytes that are not there
(a blob gone, a model that takes no images).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import TypeVar

from agentd.llm.messages import MediaPart, TextPart

__all__ = ["b64", "data_url", "file_text", "is_pdf", "missing", "render", "tool_images_note"]

T = TypeVar("T")


def b64(part: MediaPart) -> str:
    return base64.b64encode(part.data or b"").decode("ascii")


def data_url(part: MediaPart) -> str:
    return f"data:{part.media_type};base64,{b64(part)}"


def is_pdf(part: MediaPart) -> bool:
    return part.media_type == "application/pdf"


def missing(part: MediaPart) -> str | None:
    """The note a model reads instead of a part whose bytes are not there, or None."""
    if part.data:
        return None
    return f"[{part.label()}: its content is no longer available]"


def file_text(part: MediaPart) -> str:
    """A text file as the model reads it: its name and media type, then its text."""
    name = ' name="{}"'.format(part.name.replace('"', "'")) if part.name else ""
    text = (part.data or b"").decode("utf-8", errors="replace")
    return f'<file{name} media_type="{part.media_type}">\n{text}\n</file>'


def tool_images_note(name: str, call_id: str, count: int) -> str:
    """What precedes, in a user turn, images a tool returned (a format whose tool
    results hold text only: OpenAI Chat Completions)."""
    what = "image" if count == 1 else f"{count} images"
    return f"[the {what} the {name} call {call_id} returned]"


def render(parts: Sequence[TextPart | MediaPart], *, text: Callable[[str], T],
           image: Callable[[MediaPart], T], pdf: Callable[[MediaPart], T],
           text_file: Callable[[MediaPart], T]) -> list[T]:
    """A message's parts in a provider's blocks, in order: each text (empty ones left
    out: the APIs refuse them), image, PDF and text file by its function; a part whose
    bytes are gone as the text of its note."""
    out: list[T] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                out.append(text(part.text))
            continue
        note = missing(part)
        if note is not None:
            out.append(text(note))
        elif part.kind == "image":
            out.append(image(part))
        else:
            out.append(pdf(part) if is_pdf(part) else text_file(part))
    return out
