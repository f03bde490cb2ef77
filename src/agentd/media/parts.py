"""A message's parts as a door received them, made into what the log and the store keep.

Every door maps its own format to :class:`RawPart` s (native JSON parts, a multipart
upload, OpenAI's ``image_url`` / ``input_image`` / ``input_file``, A2A file parts,
Telegram photos and documents); :meth:`Media.prepare` gets each one's bytes (decoded,
or fetched: :mod:`agentd.media.fetch`), checks them (:mod:`agentd.media.check`) and
hands back :class:`Attachments`: the text, the parts by reference for the
``message.user`` event and the blobs to keep with it. Nothing is written here: the
runtime commits the blobs in the message's own transaction.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from agentd.errors import InvalidInput, PayloadTooLarge
from agentd.events import PartData
from agentd.llm.messages import MediaPart, TextPart
from agentd.media.check import Checked, MediaLimits, check
from agentd.media.fetch import UrlFetcher, decode_base64
from agentd.store.records import NewBlob

__all__ = ["SHA256", "Attachments", "Media", "RawPart", "ToolImage", "ToolOutput",
           "media_part", "message_parts", "part_data"]

#: A blob's name: the SHA-256 of its bytes, hex.
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(kw_only=True, slots=True)
class RawPart:
    """One part as a door got it: text, or an image or file given by its bytes
    (``data``), by base64 (``base64``), by a URL (``url``: http(s) or data) or by the
    hash of a blob the tenant holds already (``blob``)."""

    kind: Literal["text", "image", "file"]
    text: str = ""
    data: bytes | None = None
    base64: str | None = None
    url: str | None = None
    blob: str | None = None
    media_type: str | None = None
    name: str | None = None
    #: Where the part was in the door's request, for errors (``messages[0].content[1]``);
    #: None: its place in the parts given.
    where: str | None = None


@dataclass(kw_only=True, slots=True)
class Attachments:
    """A message's parts, checked: its text (the text parts joined by newlines), the
    parts for its ``message.user`` event, and the blobs to keep with it."""

    content: str
    parts: list[PartData]
    blobs: list[NewBlob] = field(default_factory=list)
    #: Parts named by a blob's hash: their media type, size and pixels are filled in
    #: from the tenant's blob by the runtime (:meth:`resolve`).
    by_hash: list[PartData] = field(default_factory=list)

    @property
    def media(self) -> list[PartData]:
        return [p for p in self.parts if p["type"] != "text"]

    def needs_vision(self) -> bool:
        """Whether a model must see images or PDFs to read these parts."""
        return any(p["type"] == "image" or p.get("media_type") == "application/pdf"
                   for p in self.parts)


def part_data(checked: Checked) -> PartData:
    """The event's reference to checked bytes."""
    data: PartData = {"type": checked.kind, "blob": checked.sha256,
                      "media_type": checked.media_type, "size": checked.size}
    if checked.width is not None and checked.height is not None:
        data["width"], data["height"] = checked.width, checked.height
    if checked.name:
        data["name"] = checked.name
    if checked.pages is not None:
        data["pages"] = checked.pages
    return data


def message_parts(parts: Sequence[PartData]) -> list[TextPart | MediaPart]:
    """A logged message's parts as the model's (bytes not loaded yet)."""
    out: list[TextPart | MediaPart] = []
    for p in parts:
        if p["type"] == "text":
            out.append(TextPart(text=p.get("text", "")))
        else:
            out.append(media_part(p))
    return out


def media_part(p: PartData) -> MediaPart:
    return MediaPart(kind="image" if p["type"] == "image" else "file",
                     blob=p.get("blob", ""), media_type=p.get("media_type", ""),
                     size=int(p.get("size", 0)), width=p.get("width"),
                     height=p.get("height"), name=p.get("name"), pages=p.get("pages"))


class Media:
    """The daemon's images and files in: limits, checks and URL fetches."""

    def __init__(self, limits: MediaLimits, fetcher: UrlFetcher, *,
                 max_total_bytes: int = 32 << 20) -> None:
        self.limits = limits
        self.fetcher = fetcher
        self.max_total_bytes = max_total_bytes

    async def prepare(self, parts: Sequence[RawPart], *, where: str = "content"
                      ) -> Attachments:
        """Check a message's parts (see the module's docstring); raise a 4xx error
        naming the first bad one."""
        media = [p for p in parts if p.kind != "text"]
        if len(media) > self.limits.max_parts:
            raise InvalidInput(f"{where}: {len(media)} images and files, over the limit "
                               f"of {self.limits.max_parts} per message",
                               code="invalid_media", field=where)
        texts: list[str] = []
        out: list[PartData] = []
        blobs: dict[str, NewBlob] = {}
        by_hash: list[PartData] = []
        total = 0
        for i, raw in enumerate(parts):
            at = raw.where or f"{where}[{i}]"
            if raw.kind == "text":
                texts.append(raw.text)
                out.append({"type": "text", "text": raw.text})
                continue
            if raw.blob is not None:
                if not SHA256.fullmatch(raw.blob):
                    raise InvalidInput(f"{at}.blob: a blob is the SHA-256 of its bytes "
                                       "(64 lower-case hex digits)", field=f"{at}.blob")
                ref: PartData = {"type": raw.kind, "blob": raw.blob}
                if raw.name:
                    ref["name"] = raw.name
                out.append(ref)
                by_hash.append(ref)
                blobs.setdefault(raw.blob, NewBlob(sha256=raw.blob, media_type="", size=0))
                continue
            checked, data = await self.checked(raw, at)
            total += checked.size
            if total > self.max_total_bytes:
                raise PayloadTooLarge(f"{where}: the images and files of one message are "
                                      f"over {self.max_total_bytes} bytes in all")
            out.append(part_data(checked))
            blobs[checked.sha256] = NewBlob(
                sha256=checked.sha256, media_type=checked.media_type, size=checked.size,
                width=checked.width, height=checked.height, data=data)
        content = "\n".join(t for t in texts if t)
        if not blobs and not content.strip():
            raise InvalidInput(f"{where}: the message has no text, image or file",
                               field=where)
        return Attachments(content=content, parts=out, blobs=list(blobs.values()),
                           by_hash=by_hash)

    async def checked(self, raw: RawPart, where: str) -> tuple[Checked, bytes]:
        """One image's or file's bytes, got and checked."""
        limit = self.limits.max_part_bytes
        media_type, name = raw.media_type, raw.name
        if raw.data is not None:
            data = raw.data
        elif raw.base64 is not None:
            data = decode_base64(raw.base64, where, limit)
        elif raw.url is not None:
            fetched = await self.fetcher.fetch(raw.url, where, limit)
            data = fetched.data
            media_type = media_type or fetched.media_type
            name = name or fetched.name if raw.kind == "file" else name
        else:
            raise InvalidInput(f"{where}: an {raw.kind} part needs data, url or blob",
                               field=where)
        kind: Literal["image"] | None = "image" if raw.kind == "image" else None
        checked = await asyncio.to_thread(check, data, media_type, self.limits, kind=kind,
                                          name=name, where=where)
        return checked, data


@dataclass(frozen=True, slots=True)
class ToolImage:
    """An image a tool returns (in :class:`ToolOutput`): its bytes, and what they are
    (None: read from the bytes). It reaches a model that takes images as an image, is
    kept once in the store like a message's, and is checked like one first."""

    data: bytes = field(repr=False)
    media_type: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool returns when it has images besides its text (a screenshot)."""

    text: str
    images: tuple[ToolImage, ...] = ()
    #: Images kept already, by reference (a replay serves a recorded result's parts:
    #: its session refers to their blobs); taken as they are.
    kept: tuple[PartData, ...] = ()
