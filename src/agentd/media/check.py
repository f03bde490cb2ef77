"""What an image's or file's bytes are, checked by real decoders before anything keeps them.

The bytes decide, not what their sender says: the type is read from the bytes'
magic numbers (PNG, JPEG, GIF, WebP, PDF), and a declared media type that is not the
one found is refused (a PDF sent as ``image/png``, a script as ``text/plain`` with a
PNG inside), as is a type the daemon does not take. An image is opened by Pillow
with that format only; its dimensions (read from its header, before any pixel is
decoded) must stay under ``max_pixels`` and its frames under ``max_frames``, so a
decompression bomb is refused before it is decompressed; then it is decoded whole,
so a truncated or corrupt file is refused too. A PDF is read by pypdf for its page
count (an encrypted one is refused: no model can read it). A text file must be
UTF-8. Each refusal is a clear error naming the part: 413 over the size limit, 415 a
type not taken, 422 anything else.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import Literal

from agentd.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

__all__ = ["IMAGE_TYPES", "TEXT_TYPES", "Checked", "MediaLimits", "check", "sniff"]

#: The image types models take (OpenAI's and Anthropic's lists agree).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
#: Text files: given to a model as text (any model takes them).
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv")
_PDF = "application/pdf"
#: Pillow's format name of each image type.
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
            "image/webp": "WEBP"}
#: Names a sender may use for a type taken (``image/jpg`` is common).
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg",
            "image/x-png": "image/png", "text/x-markdown": "text/markdown",
            "application/x-pdf": _PDF}
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What the daemon takes (``[attachments]`` in agentd.toml)."""

    #: Bytes of one image or file.
    max_part_bytes: int = 10 << 20
    #: Images and files in one message.
    max_parts: int = 16
    #: An image's width x height (checked before decoding).
    max_pixels: int = 40_000_000
    #: Frames of an animated GIF or WebP.
    max_frames: int = 100
    #: Pages of a PDF.
    max_pdf_pages: int = 100
    image_types: tuple[str, ...] = IMAGE_TYPES
    file_types: tuple[str, ...] = (_PDF, *TEXT_TYPES)


@dataclass(frozen=True, slots=True)
class Checked:
    """Bytes that passed: what they are."""

    kind: Literal["image", "file"]
    media_type: str
    sha256: str
    size: int
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    name: str | None = None


def normal_type(media_type: str | None) -> str | None:
    """A media type without parameters, lower case, aliases resolved."""
    if not media_type:
        return None
    base = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base) or None


def sniff(data: bytes) -> str | None:
    """The type the bytes' magic numbers say (None: none of the binary types taken)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:1024].lstrip(b"\x00\t\n\r\x0c ").startswith(b"%PDF-"):
        return _PDF
    return None


def clean_name(name: str | None) -> str | None:
    """A file name as a sender gave it, made harmless: its last path component, no
    control characters, at most 255 characters."""
    if not name:
        return None
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _NAME_BAD.sub("_", last).strip()[:255]
    return cleaned or None


# complexity: one refusal per way a part can be wrong (size, type taken, type found,
# each format's own checks), each with its own message.
def check(data: bytes, media_type: str | None, limits: MediaLimits, *,
          kind: Literal["image", "file"] | None = None, name: str | None = None,
          where: str = "part") -> Checked:
    """Check one image's or file's bytes (blocking: decodes; run it in a thread).

    ``media_type``: what the sender says it is (None: read from the bytes); ``kind``:
    what the sender says it sent (an ``image`` part must hold an image); ``where``:
    how errors name the part (``content[2]``)."""
    if len(data) > limits.max_part_bytes:
        raise PayloadTooLarge(f"{where}: {len(data)} bytes, over the limit of "
                              f"{limits.max_part_bytes} bytes per image or file")
    if not data:
        raise InvalidInput(f"{where}: empty", code="invalid_media", field=where)
    declared = normal_type(media_type)
    found = sniff(data)
    guessed = declared is None or declared == "application/octet-stream"
    if guessed:
        declared = found or ("text/plain" if kind != "image" else None)
        if declared is None:
            raise UnsupportedMedia(f"{where}: not an image of a type taken "
                                   f"({', '.join(limits.image_types)})")
    taken = (*limits.image_types, *limits.file_types)
    if declared not in taken:
        raise UnsupportedMedia(f"{where}: {declared} is not taken; the daemon takes "
                               f"{', '.join(taken)}")
    if kind == "image" and declared not in limits.image_types:
        raise UnsupportedMedia(f"{where}: an image part must be an image "
                               f"({', '.join(limits.image_types)}), not {declared}")
    if found != (declared if declared in _FORMATS or declared == _PDF else None):
        what = f"the bytes are {found}" if found else "the bytes are not one"
        raise InvalidInput(f"{where}: declared {declared}, but {what}",
                           code="invalid_media", field=where)
    digest = hashlib.sha256(data).hexdigest()
    clean = clean_name(name)
    if declared in _FORMATS:
        width, height = _image(data, declared, limits, where)
        return Checked(kind="image", media_type=declared, sha256=digest, size=len(data),
                       width=width, height=height, name=clean)
    if declared == _PDF:
        return Checked(kind="file", media_type=declared, sha256=digest, size=len(data),
                       pages=_pdf(data, limits, where), name=clean)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if guessed:
            # (No type was given and the bytes are none taken: an executable, an
            # archive. Say so, rather than that they are bad text.)
            raise UnsupportedMedia(
                f"{where}: not a type taken: the bytes are no image, PDF or UTF-8 text "
                f"(the daemon takes {', '.join(taken)})") from None
        raise InvalidInput(f"{where}: {declared} must be UTF-8 text (byte {exc.start} "
                           "is not)", code="invalid_media", field=where) from None
    return Checked(kind="file", media_type=declared, sha256=digest, size=len(data),
                   name=clean)


def _image(data: bytes, media_type: str, limits: MediaLimits, where: str
           ) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    fmt = _FORMATS[media_type]
    try:
        with warnings.catch_warnings():
            # (Our own limit comes first; Pillow's bomb warning would be noise.)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise InvalidInput(
                        f"{where}: the image is {width}x{height} pixels, over the limit "
                        f"of {limits.max_pixels} pixels", code="invalid_media", field=where)
                frames = int(getattr(image, "n_frames", 1))
                if frames > limits.max_frames:
                    raise InvalidInput(
                        f"{where}: the image has {frames} frames, over the limit of "
                        f"{limits.max_frames}", code="invalid_media", field=where)
                image.load()
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:
        # (Pillow refuses at its own limit when it reads the header: the same refusal.)
        raise InvalidInput(f"{where}: the image is over the limit of {limits.max_pixels} "
                           f"pixels ({_said(exc)})", code="invalid_media",
                           field=where) from None
    except UnidentifiedImageError:
        # (Pillow's message names its buffer object: "cannot identify image file
        # <_io.BytesIO object at 0x...>".)
        raise InvalidInput(f"{where}: not a readable {fmt} image (its bytes do not "
                           f"decode as {fmt})", code="invalid_media",
                           field=where) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise InvalidInput(f"{where}: not a readable {fmt} image ({_said(exc)})",
                           code="invalid_media", field=where) from None
    return width, height


def _pdf(data: bytes, limits: MediaLimits, where: str) -> int:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    # pypdf warns through logging about every oddity of a hostile file: not ours to log.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise InvalidInput(f"{where}: the PDF is encrypted; send it unencrypted",
                               code="invalid_media", field=where)
        pages = len(reader.pages)
    except InvalidInput:
        raise
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, RecursionError, AssertionError, ZeroDivisionError) as exc:
        raise InvalidInput(f"{where}: not a readable PDF ({_said(exc)})",
                           code="invalid_media", field=where) from None
    if pages < 1:
        raise InvalidInput(f"{where}: the PDF has no pages", code="invalid_media",
                           field=where)
    if pages > limits.max_pdf_pages:
        raise InvalidInput(f"{where}: the PDF has {pages} pages, over the limit of "
                           f"{limits.max_pdf_pages}", code="invalid_media", field=where)
    return pages


def _said(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
