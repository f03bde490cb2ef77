"""``hash:<dim>``: feature hashing, no weights. A low-quality fallback and a test double.

Words, word pairs and the character trigrams of each word are hashed (CRC-32, stable
across processes, unlike Python's salted ``hash``) into ``dim`` signed buckets. Texts
sharing words or word parts come out similar; texts saying the same thing in other
words do not (0.34 recall@10 against MiniLM's 0.77 on the project's set, about what
BM25 gets: docs/design-notes.md). Use it to test the layers above without loading a
model, or where no model can run; never as the default.
"""

from __future__ import annotations

import itertools
import re
import zlib

import numpy as np
import numpy.typing as npt

from agentd.memory.embed._base import LocalEmbedder

__all__ = ["MAX_DIM", "MIN_DIM", "HashingEmbedder"]

MIN_DIM = 8
MAX_DIM = 65_536
_WORD = re.compile(r"\w+")
# Weights per feature kind: whole words carry most of the meaning; trigrams let
# "walks" meet "walking", and pairs keep a little of the word order.
_WORD_WEIGHT = 1.0
_PAIR_WEIGHT = 0.5
_GRAM_WEIGHT = 0.35


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.lower())
    out = [("w:" + word, _WORD_WEIGHT) for word in words]
    out += [(f"p:{a} {b}", _PAIR_WEIGHT) for a, b in itertools.pairwise(words)]
    for word in words:
        marked = f"<{word}>"
        out += [("g:" + marked[i:i + 3], _GRAM_WEIGHT) for i in range(len(marked) - 2)]
    return out


class HashingEmbedder(LocalEmbedder):
    """Signed feature hashing into ``dim`` buckets; deterministic everywhere."""

    max_batch = 1024

    def __init__(self, dim: int) -> None:
        if not MIN_DIM <= dim <= MAX_DIM:
            raise ValueError(f"dim must be from {MIN_DIM} to {MAX_DIM}")
        self.dim = dim
        self.name = f"hash:{dim}"
        super().__init__()

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        for row, text in enumerate(texts):
            for feature, weight in _features(text):
                code = zlib.crc32(feature.encode())
                rows.append(row)
                cols.append(code % self.dim)
                # The top bit picks the sign, so colliding features cancel out on
                # average instead of piling up in one direction.
                values.append(weight if code & 0x8000_0000 else -weight)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, (np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)),
                  np.array(values, dtype=np.float32))
        return out
