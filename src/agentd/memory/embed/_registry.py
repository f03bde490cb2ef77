"""``provider:model`` embedder specs resolved to shared, lazily loaded instances."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from agentd.errors import InvalidInput
from agentd.memory.embed._base import Embedder

__all__ = ["EMBEDDERS", "clear_cache", "resolve_embedder"]

#: Every embedder spec this version knows (``<...>`` is a placeholder), with what it is.
EMBEDDERS: dict[str, str] = {
    "onnx:all-minilm-l6-v2-int8": (
        "the default: all-MiniLM-L6-v2 (384 dims) on onnxruntime, int8, offline; its "
        "weights install with agentd"),
    "openai:<model>": (
        "an OpenAI embeddings model, e.g. openai:text-embedding-3-small (OPENAI_API_KEY; "
        "AGENTD_OPENAI_BASE_URL optional)"),
    "openai-compatible:<model>": (
        "any server with an OpenAI-style /embeddings endpoint (base URL from "
        "AGENTD_OPENAI_COMPATIBLE_BASE_URL or settings.base_url)"),
    "hash:<dim>": (
        "feature hashing of words and word parts into <dim> buckets (8-65536), no "
        "weights: fast and deterministic, but matches words, not meaning (for tests "
        "and as a last resort)"),
    "none": "no embedder: memory search uses full text only",
}

_FIELD = "memory.embedder"
_lock = threading.Lock()
_cache: dict[tuple[Any, ...], Embedder] = {}


def _unknown(spec: str, why: str) -> InvalidInput:
    known = ", ".join(EMBEDDERS)
    return InvalidInput(f"{why} in embedder {spec!r}; known embedders: {known}",
                        field=_FIELD)


def resolve_embedder(spec: str, *, settings: Mapping[str, Any] | None = None
                     ) -> Embedder | None:
    """The embedder named by ``spec``, or None for ``"none"``.

    The same spec (and settings) returns the same instance, so that the daemon loads a
    model once however many namespaces or agents use it. Loading itself waits for the
    first :meth:`Embedder.embed` (or :meth:`Embedder.warm`), in the embedder's thread:
    this function does no heavy work and may be called from the event loop.

    Args:
        spec: ``provider:model``, as listed in :data:`EMBEDDERS`.
        settings: Remote providers only: ``base_url``, ``api_key_env``, ``timeout_s``,
            ``max_retries`` (as for models) and ``dimensions`` (asked of models that
            can shorten their vectors).

    Raises:
        agentd.errors.InvalidInput: An unknown provider or model, a bad ``hash`` size,
            a missing package (field ``memory.embedder``); ``InvalidModel`` (a subclass)
            for a missing base URL or key.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInput("embedder must be a non-empty 'provider:model' string; known "
                           f"embedders: {', '.join(EMBEDDERS)}", field=_FIELD)
    spec = spec.strip()
    if spec == "none":
        return None
    own = dict(settings or {})
    provider, sep, model = spec.partition(":")
    model = model.strip()
    if not sep or not model:
        raise _unknown(spec, "no model named")
    if provider in ("openai", "openai-compatible"):
        return _remote(spec, provider, model, own)
    if own:
        raise InvalidInput(f"embedder {spec!r} takes no settings (got {sorted(own)})",
                           field=_FIELD)
    if provider == "onnx":
        if spec != "onnx:all-minilm-l6-v2-int8":
            raise _unknown(spec, f"unknown onnx model {model!r}")
        return _cached((spec,), _minilm)
    if provider == "hash":
        from agentd.memory.embed._hash import MAX_DIM, MIN_DIM, HashingEmbedder

        if not (model.isdigit() and MIN_DIM <= int(model) <= MAX_DIM):
            raise InvalidInput(f"embedder {spec!r}: the size after 'hash:' must be a whole "
                               f"number from {MIN_DIM} to {MAX_DIM}, e.g. 'hash:256'",
                               field=_FIELD)
        dim = int(model)
        return _cached((f"hash:{dim}",), lambda: HashingEmbedder(dim))
    raise _unknown(spec, f"unknown embedder provider {provider!r}")


def _minilm() -> Embedder:
    from agentd.memory.embed._onnx import MiniLMEmbedder

    return MiniLMEmbedder()


def _remote(spec: str, provider: str, model: str, own: dict[str, Any]) -> Embedder:
    from agentd.llm.providers import settings as _settings
    from agentd.llm.registry import PROVIDERS
    from agentd.memory.embed._openai import create

    dimensions = own.pop("dimensions", None)
    if dimensions is not None and (type(dimensions) is not int
                                   or not 1 <= dimensions <= 65_536):
        raise InvalidInput("settings.dimensions must be a whole number from 1 to 65536",
                           field=f"{_FIELD}.dimensions")
    info = PROVIDERS[provider]
    checked = _settings.model_settings(own)
    # Keyed by what reaches the server, so a changed variable gives a new client.
    key = (spec, dimensions, checked.model_dump_json(), _settings.base_url(info, checked),
           _settings.api_key(info, checked))
    return _cached(key, lambda: create(provider=info, model=model, settings=own,
                                       dimensions=dimensions))


def _cached(key: tuple[Any, ...], build: Any) -> Embedder:
    with _lock:
        found = _cache.get(key)
        if found is not None and not found.closed:
            return found
        instance: Embedder = build()
        _cache[key] = instance
        return instance


def clear_cache() -> None:
    """Forget every cached instance (without closing them): for tests that change
    the environment an instance was built from."""
    with _lock:
        _cache.clear()
