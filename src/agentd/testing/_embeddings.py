"""The stub server's OpenAI embeddings answers: deterministic vectors in the real format.

Kept out of ``stub_llm.py`` (which owns the HTTP side) to keep that module readable.
"""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any

import numpy as np

__all__ = ["embeddings_problem", "embeddings_response", "stub_vector"]

#: OpenAI's own lengths, so a provider that knows them is not surprised by the stub.
_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
         "text-embedding-ada-002": 1536}
_DEFAULT_DIM = 64
_WORD = re.compile(r"\w+")


def embeddings_problem(body: dict[str, Any]) -> str | None:
    """What OpenAI would refuse in an embeddings request, or None."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required"
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or len(texts) > 2048:
        return "'input' must be a string or a list of 1 to 2048 strings"
    # OpenAI refuses empty strings too ("'$.input' is invalid").
    if not all(isinstance(text, str) and text for text in texts):
        return "'input' items must be non-empty strings"
    dim = body.get("dimensions")
    if dim is not None and (type(dim) is not int or not 1 <= dim <= 65_536):
        return "'dimensions' must be an integer from 1 to 65536"
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "'encoding_format' must be 'float' or 'base64'"
    return None


def stub_vector(text: str, dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A hashed bag of words, normalised: texts sharing words point the same way."""
    vector = np.zeros(dim, dtype="<f4")
    for word in _WORD.findall(text.lower()):
        code = zlib.crc32(word.encode())
        vector[code % dim] += 1.0 if code & 0x8000_0000 else -1.0
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        vector[0] = 1.0  # a text without words still gets a unit vector
        return vector
    return (vector / np.float32(norm)).astype("<f4")


def embeddings_response(body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a valid request (see :func:`embeddings_problem`)."""
    texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
    dim = body.get("dimensions") or _DIMS.get(body["model"], _DEFAULT_DIM)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector = stub_vector(text, dim)
        embedding: Any = (base64.b64encode(vector.tobytes()).decode() if as_base64
                          else vector.tolist())
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(len(_WORD.findall(text)) for text in texts)
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
