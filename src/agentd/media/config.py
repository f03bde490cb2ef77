"""The operator's ``[attachments]``: what images and files the daemon takes, and from where."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentd.media.check import IMAGE_TYPES, TEXT_TYPES, MediaLimits

__all__ = ["AttachmentsConfig"]

#: Pillow's own limit on an image's pixels (past it Pillow warns, at twice it refuses).
_PILLOW_MAX_PIXELS = 89_478_485


class AttachmentsConfig(BaseModel):
    """Images and files in messages and tool results (docs/configuration.md,
    ``[attachments]``)."""

    model_config = ConfigDict(extra="forbid")

    #: Bytes of one image or file.
    max_part_mb: float = Field(default=10.0, gt=0, le=512)
    #: Images and files in one message.
    max_parts: int = Field(default=16, ge=1, le=256)
    #: Bytes of all the images and files of one message, and the request body of the
    #: routes that take them (a message, an OpenAI, A2A or multipart request).
    max_message_mb: float = Field(default=32.0, gt=0, le=4096)
    #: An image's width x height, checked before it is decoded.
    max_pixels: int = Field(default=40_000_000, ge=1, le=_PILLOW_MAX_PIXELS)
    #: Frames of an animated GIF or WebP.
    max_frames: int = Field(default=100, ge=1, le=100_000)
    #: Pages of a PDF.
    max_pdf_pages: int = Field(default=100, ge=1, le=100_000)
    #: The image types taken (of PNG, JPEG, GIF and WebP).
    image_types: list[str] = Field(default_factory=lambda: list(IMAGE_TYPES))
    #: The file types taken (of PDF and UTF-8 text: plain, Markdown, CSV).
    file_types: list[str] = Field(
        default_factory=lambda: ["application/pdf", *TEXT_TYPES])
    #: Whether the daemon fetches an image or file a client gives by URL.
    fetch_urls: bool = True
    #: The hosts it fetches them from (patterns, as ``settings.policy.network``); empty:
    #: any public host. Never a private, loopback or metadata address unless
    #: ``[sandbox] private_endpoints`` lists that endpoint.
    fetch_hosts: list[str] = Field(default_factory=list, max_length=1000)
    #: How long one fetch may take, redirects included.
    fetch_timeout_s: float = Field(default=20.0, gt=0, le=300)

    @model_validator(mode="after")
    def _known_types(self) -> AttachmentsConfig:
        files = ("application/pdf", *TEXT_TYPES)
        for name, given, known in (("image_types", self.image_types, IMAGE_TYPES),
                                   ("file_types", self.file_types, files)):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise ValueError(f"{name}: unknown types {unknown}; known: "
                                 f"{', '.join(known)}")
        return self

    def limits(self) -> MediaLimits:
        return MediaLimits(
            max_part_bytes=int(self.max_part_mb * (1 << 20)), max_parts=self.max_parts,
            max_pixels=self.max_pixels, max_frames=self.max_frames,
            max_pdf_pages=self.max_pdf_pages,
            image_types=tuple(self.image_types), file_types=tuple(self.file_types))

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * (1 << 20))
