"""Real images, PDFs and hostile files made for the tests (Pillow and pypdf write them)."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

from PIL import Image
from pypdf import PdfWriter

__all__ = ["b64", "bomb_png", "gif", "jpeg", "noise_png", "pdf", "png", "webp"]


def png(width: int = 12, height: int = 34, color: tuple[int, int, int] = (255, 0, 0)
        ) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def noise_png(width: int, height: int) -> bytes:
    """A PNG of random pixels: it does not compress (its size is about 3 x pixels)."""
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 20, height: int = 10) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 128, 255)).save(out, "JPEG")
    return out.getvalue()


def webp(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, "WEBP")
    return out.getvalue()


def gif(frames: int = 1, width: int = 4, height: int = 4) -> bytes:
    out = io.BytesIO()
    # (Distinct frames: Pillow merges frames that are the same.)
    images = [Image.new("RGB", (width, height), (i % 256, (i // 256) % 256, 7))
              for i in range(frames)]
    images[0].save(out, "GIF", save_all=frames > 1, append_images=images[1:], loop=0)
    return out.getvalue()


def pdf(pages: int = 2) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with one compressed
    row of zeros: a few hundred bytes that would decode to gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    rows = zlib.compress(b"\x00" * (width + 1), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
