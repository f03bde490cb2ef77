"""``openai:<model>`` and ``openai-compatible:<model>``: an embeddings endpoint.

The official ``openai`` SDK does the HTTP (``client.embeddings.create``); base URL and
key are found as for the LLM providers (``agentd.llm.providers``): ``settings.base_url``,
then ``AGENTD_<PROVIDER>_BASE_URL`` (``AGENTD_OPENAI_COMPATIBLE_BASE_URL`` is required
for ``openai-compatible``); the key from the variable named by ``settings.api_key_env``,
else ``OPENAI_API_KEY`` for ``openai``. Errors are the LLM layer's
:class:`~agentd.errors.ModelError` codes (``model_auth``, ``model_rate_limited``, ...).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
import openai

from agentd.errors import ModelError
from agentd.llm.providers import settings as _settings
from agentd.llm.providers.openai import map_error
from agentd.llm.registry import ProviderInfo
from agentd.memory.embed._base import Embedder, Vectors, check_texts, normalise

__all__ = ["KNOWN_DIMS", "OpenAIEmbedder", "create"]

logger = logging.getLogger(__name__)

#: Models whose vector length is known before the first call.
KNOWN_DIMS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_PLACEHOLDER_KEY = "not-needed"
# OpenAI takes up to 2,048 inputs and 300,000 tokens a request; 256 entries of the
# longest size memory accepts could still pass the token limit, but typical ones do not.
_MAX_BATCH = 256
_DEFAULT_TIMEOUT_S = 60.0
# No kernel retries embeddings (it retries model calls), so the SDK's own do, with its
# backoff and Retry-After handling.
_DEFAULT_RETRIES = 2


class OpenAIEmbedder(Embedder):
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint.

    Args:
        client: The SDK client, owned (closed by :meth:`aclose`).
        provider: ``openai`` or ``openai-compatible``, for names and messages.
        model: The model sent to the server.
        dimensions: Asked of models that can shorten their vectors (the
            ``text-embedding-3`` family); None: the model's own length.
        secret: The API key, kept only to scrub it from error messages.
    """

    def __init__(self, *, client: openai.AsyncOpenAI, provider: str, model: str,
                 dimensions: int | None = None, max_batch: int = _MAX_BATCH,
                 secret: str | None = None) -> None:
        self._client = client
        self.provider = provider
        self.model = model
        self.name = f"{provider}:{model}"
        self.dimensions = dimensions
        self.dim = dimensions or KNOWN_DIMS.get(model, 0)
        self.max_batch = max_batch
        self._secret = secret

    async def embed(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if self.closed:
            raise RuntimeError(f"embedder {self.name} is closed")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [await self._request(items[start:start + self.max_batch])
                 for start in range(0, len(items), self.max_batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _request(self, texts: list[str]) -> Vectors:
        try:
            response = await self._client.embeddings.create(
                model=self.model,
                # OpenAI refuses an empty string; a space embeds as "nothing said".
                input=[text if text else " " for text in texts],
                dimensions=openai.omit if self.dimensions is None else self.dimensions,
                # Asked for explicitly, so the SDK hands the base64 over undecoded (it
                # would otherwise turn it into Python floats); servers that ignore the
                # format and send floats are handled too.
                encoding_format="base64",
            )
        except (openai.OpenAIError, ValueError) as exc:
            self._raise(map_error(exc, provider=self.provider, secret=self._secret))
        rows = sorted(response.data, key=lambda item: item.index)
        if [row.index for row in rows] != list(range(len(texts))):
            self._bad_output(f"returned {len(rows)} embeddings for {len(texts)} texts")
        vectors = [self._decode(row.embedding) for row in rows]
        lengths = {len(vector) for vector in vectors}
        if len(lengths) != 1 or 0 in lengths:
            self._bad_output(f"returned embeddings of lengths {sorted(lengths)}")
        (length,) = lengths
        if self.dim and length != self.dim:
            self._bad_output(f"returned {length}-dimensional embeddings, expected {self.dim}")
        self.dim = length
        return normalise(np.stack(vectors))

    def _decode(self, embedding: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        if isinstance(embedding, str):
            try:
                raw = base64.b64decode(embedding, validate=True)
            except (binascii.Error, ValueError):
                self._bad_output("returned an embedding that is not valid base64")
            if len(raw) % 4:
                self._bad_output("returned a base64 embedding that is not float32")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32)
        try:
            vector = np.asarray(embedding, dtype=np.float32)
        except (TypeError, ValueError):
            self._bad_output("returned an embedding that is not a list of numbers")
        if vector.ndim != 1:
            self._bad_output("returned an embedding that is not a list of numbers")
        return vector

    def _bad_output(self, what: str) -> NoReturn:
        self._raise(ModelError(f"{self.name} {what}", code="model_bad_output",
                               retryable=False, details={"provider": self.provider}))

    def _raise(self, error: ModelError) -> NoReturn:
        logger.warning("embedding call to %s failed: %s", self.provider, error.code)
        raise error

    async def aclose(self) -> None:
        await super().aclose()
        await self._client.close()


def create(*, provider: ProviderInfo, model: str, settings: Mapping[str, Any],
           dimensions: int | None = None) -> OpenAIEmbedder:
    """Build the embedder; raise :class:`~agentd.errors.InvalidModel` when the base URL
    or a required key is missing."""
    own = _settings.model_settings(settings)
    base_url = _settings.base_url(provider, own)
    api_key = _settings.api_key(provider, own)
    client = openai.AsyncOpenAI(
        api_key=api_key or _PLACEHOLDER_KEY,
        base_url=base_url,
        timeout=own.timeout_s or _DEFAULT_TIMEOUT_S,
        max_retries=_DEFAULT_RETRIES if own.max_retries is None else own.max_retries,
    )
    return OpenAIEmbedder(client=client, provider=provider.name, model=model,
                          dimensions=dimensions, secret=api_key)
