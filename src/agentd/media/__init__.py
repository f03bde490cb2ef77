"""Images and files in: what a message's parts are, checked, fetched and referenced.

Doors hand :meth:`Media.prepare` the parts they received (:class:`RawPart`); it gets
their bytes (decoded or fetched under the egress rules: :mod:`agentd.media.fetch`),
checks them with real decoders (:mod:`agentd.media.check`) and answers
:class:`Attachments` (the parts by reference, the blobs to keep), which the runtime
commits with the message. Tools return images as :class:`ToolImage`.
"""

from __future__ import annotations

from agentd.media.check import IMAGE_TYPES, TEXT_TYPES, Checked, MediaLimits, check, sniff
from agentd.media.fetch import Fetched, UrlFetcher, decode_base64, decode_data_url
from agentd.media.parts import (
    SHA256,
    Attachments,
    Media,
    RawPart,
    ToolImage,
    ToolOutput,
    media_part,
    message_parts,
    part_data,
)

__all__ = [
    "IMAGE_TYPES",
    "SHA256",
    "TEXT_TYPES",
    "Attachments",
    "Checked",
    "Fetched",
    "Media",
    "MediaLimits",
    "RawPart",
    "ToolImage",
    "ToolOutput",
    "UrlFetcher",
    "check",
    "decode_base64",
    "decode_data_url",
    "media_part",
    "message_parts",
    "part_data",
    "sniff",
]
