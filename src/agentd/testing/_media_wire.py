"""The stub LLM server's checks of images and files in requests, as the real APIs make
them, with the providers' own SDK types: each part or block is validated against the
``openai`` / ``anthropic`` SDK's TypedDict for its type (pydantic reads them), then
its bytes are decoded and their type read from them, as the APIs do (an image that is
not what its media type says is refused). And what the stub's echo says it saw:
``[image image/png 12x34]``, ``[file application/pdf]``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
from typing import Any

from pydantic import TypeAdapter, ValidationError

__all__ = ["anthropic_block_problem", "openai_part_problem", "seen_anthropic", "seen_openai"]

_SNIFF = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF8", "image/gif"), (b"%PDF-", "application/pdf"))


def _sniff(data: bytes) -> str | None:
    for magic, kind in _SNIFF:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@functools.cache
def _adapter(name: str) -> TypeAdapter[Any]:
    from anthropic.types import DocumentBlockParam, ImageBlockParam, TextBlockParam
    from openai.types.chat import (
        ChatCompletionContentPartImageParam,
        ChatCompletionContentPartTextParam,
    )
    from openai.types.chat.chat_completion_content_part_param import File

    types: dict[str, Any] = {
        "openai:text": ChatCompletionContentPartTextParam,
        "openai:image_url": ChatCompletionContentPartImageParam, "openai:file": File,
        "anthropic:image": ImageBlockParam, "anthropic:document": DocumentBlockParam,
        "anthropic:text": TextBlockParam}
    return TypeAdapter(types[name])


def _typed(name: str, value: Any, where: str) -> str | None:
    try:
        _adapter(name).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{where}{'.' + loc if loc else ''}: {first['msg']}"
    return None


def _decoded(text: str, where: str) -> bytes | str:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return f"{where}: invalid base64 data"


def _data_url(url: str, where: str) -> tuple[str, bytes] | str:
    head, sep, body = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64") or not sep:
        return f"{where}: Invalid image URL: expected a base64 data URL or an http(s) URL"
    data = _decoded(body, where)
    if isinstance(data, str):
        return data
    return head[5:-7], data


def openai_part_problem(part: Any, where: str, role: str) -> str | None:
    """What Chat Completions says of one content part of a ``role`` message."""
    kind = part.get("type") if isinstance(part, dict) else None
    if role != "user" and kind != "text":
        return (f"Invalid '{where}.type': content of a {role} message must be text; "
                f"{kind!r} is only supported for user messages")
    if kind not in ("text", "image_url", "file"):
        return f"Invalid value for '{where}.type': {kind!r}"
    problem = _typed(f"openai:{kind}", part, where)
    if problem is not None or kind == "text":
        return problem
    url = part["image_url"]["url"] if kind == "image_url" else part["file"].get("file_data")
    if kind == "image_url" and url.startswith(("http://", "https://")):
        return None
    if not isinstance(url, str):
        return f"{where}.file: file_data is required (file_id is not supported here)"
    decoded = _data_url(url, where)
    if isinstance(decoded, str):
        return decoded
    media_type, data = decoded
    found = _sniff(data)
    if kind == "image_url" and (found is None or not found.startswith("image/")):
        return f"{where}: You uploaded an unsupported image. Please make sure your image is valid."
    if kind == "file" and found != "application/pdf":
        return f"{where}: Invalid file data: only PDF files are supported"
    if found != media_type:
        return f"{where}: the data URL says {media_type}, the data is {found}"
    return None


def anthropic_block_problem(block: Any, where: str) -> str | None:
    """What the Messages API says of an image or document block."""
    kind = block.get("type") if isinstance(block, dict) else None
    problem = _typed(f"anthropic:{kind}", block, where)
    if problem is not None:
        return problem
    source = block["source"]
    if source.get("type") != "base64":
        return None  # (text documents: text; URLs and file ids: not checked here)
    data = _decoded(source["data"], f"{where}.source.data")
    if isinstance(data, str):
        return data
    found = _sniff(data)
    if found != source["media_type"]:
        return (f"{where}.source: Image does not match the provided media type "
                f"{source['media_type']}" if kind == "image" else
                f"{where}.source: The PDF specified was not valid.")
    return None


def _label(media_type: str, data: bytes) -> str:
    if media_type.startswith("image/"):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Exception:  # (checked already: a stub's echo never fails)
            return f"[image {media_type}]"
        return f"[image {media_type} {width}x{height}]"
    return f"[file {media_type}]"


def seen_openai(part: dict[str, Any]) -> str:
    """What the stub's echo says of one user content part."""
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text", ""))
    url = (part.get("image_url") or {}).get("url") if kind == "image_url" else (
        (part.get("file") or {}).get("file_data"))
    decoded = _data_url(str(url or ""), "")
    if isinstance(decoded, str):
        return f"[{kind} {url}]"
    return _label(*decoded)


def seen_anthropic(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    source = block.get("source") or {}
    if source.get("type") == "text":
        return f"[file text/plain {block.get('title') or ''}]".replace(" ]", "]")
    data = _decoded(str(source.get("data", "")), "")
    return _label(str(source.get("media_type")), data if isinstance(data, bytes) else b"")
