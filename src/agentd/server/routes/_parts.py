"""A message with images or files, as the native route takes it: JSON parts, or a
``multipart/form-data`` upload (the fields of :class:`MessageIn` as form fields, each
file a part of its own)."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from agentd.errors import InvalidInput, PayloadTooLarge
from agentd.media import IMAGE_TYPES, RawPart
from agentd.server.schemas import MediaPartIn, TextPartIn

__all__ = ["form_message", "raw_parts"]

#: Form fields that are not files (``content``, ``mode``...), at most.
_MAX_FIELDS = 16
_FLAGS = {"true": True, "false": False}


def raw_parts(parts: list[TextPartIn | MediaPartIn]) -> list[RawPart]:
    """JSON parts as the media service takes them."""
    out: list[RawPart] = []
    for part in parts:
        if isinstance(part, TextPartIn):
            out.append(RawPart(kind="text", text=part.text))
        else:
            out.append(RawPart(kind=part.type, base64=part.data, url=part.url,
                               blob=part.blob, media_type=part.media_type,
                               name=part.name))
    return out


async def form_message(request: Request, max_files: int, max_file_bytes: int
                       ) -> tuple[dict[str, Any], list[RawPart]]:
    """A ``multipart/form-data`` message: its fields (a JSON body's, ``content`` the
    text, ``stream`` and ``wait`` as ``true``/``false``) and its parts (the text, then
    each file in order: an image type is an image part, anything else a file part,
    what it is checked from its bytes)."""
    try:
        form = await request.form(max_files=max_files, max_fields=_MAX_FIELDS,
                                  max_part_size=1 << 20)
    except MultiPartException as exc:
        raise InvalidInput(f"multipart body: {exc.message}", field="body") from None
    fields: dict[str, Any] = {}
    parts: list[RawPart] = []
    files: list[RawPart] = []
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append(await _file(key, value, max_file_bytes))
            elif key == "content":
                parts.append(RawPart(kind="text", text=value))
            elif key in ("stream", "wait"):
                if value not in _FLAGS:
                    raise InvalidInput(f"{key} must be true or false", field=f"body.{key}")
                fields[key] = _FLAGS[value]
            elif key in ("mode", "priority"):
                fields[key] = value
            else:
                raise InvalidInput(f"unknown form field {key!r}: a message takes content, "
                                   "stream, wait, mode, priority and files",
                                   field=f"body.{key}")
    finally:
        await form.close()
    if not files and not any(p.text for p in parts):
        raise InvalidInput("a message needs content or a file", field="body.content")
    return fields, [*parts, *files]


async def _file(key: str, upload: UploadFile, limit: int) -> RawPart:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"file {upload.filename or key!r}: over the limit of "
                              f"{limit} bytes per image or file")
    media_type = upload.content_type
    image = (media_type or "").split(";")[0].strip().lower() in IMAGE_TYPES
    return RawPart(kind="image" if image else "file", data=data, media_type=media_type,
                   name=upload.filename or None)
