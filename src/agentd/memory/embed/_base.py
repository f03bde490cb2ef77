"""The :class:`Embedder` interface, and the base of the embedders that compute locally.

Local embedding is CPU work measured in milliseconds to seconds. It runs in one
dedicated thread per embedder (and one more for search queries) rather than the event
loop (a turn or an HTTP request would stall behind it) or the loop's shared default
executor (several embedders or calls would then run at once and oversubscribe a small
machine's cores; with one thread, concurrent calls queue). A call submits its batches
one at a time; a search's query goes to its own thread and never waits behind a bulk
write's batches.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "Vectors", "check_texts", "normalise"]

#: What :meth:`Embedder.embed` returns: float32, shape ``(len(texts), dim)``.
Vectors = npt.NDArray[np.float32]


class Embedder(abc.ABC):
    """Turns texts into unit vectors, so that cosine similarity is a dot product.

    Attributes:
        name: The ``provider:model`` spec it was resolved from.
        dim: The vectors' length. ``0`` only for a remote model this version does not
            know, until its first answer tells.
        max_batch: The most texts sent to the model at once; :meth:`embed` takes any
            number and splits them.
    """

    name: str
    dim: int
    max_batch: int
    closed: bool = False

    @abc.abstractmethod
    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` without blocking the event loop.

        Returns:
            float32 array of shape ``(len(texts), dim)``, one L2-normalised row per
            text in order; shape ``(0, dim)`` for no texts.

        Raises:
            TypeError: ``texts`` is a single string or holds a non-string.
            agentd.errors.ModelError: A remote embedder failed.
        """

    async def embed_query(self, text: str) -> Vectors:
        """Embed one search query: shape ``(1, dim)``. Local embedders run it on a
        thread of its own, so that it never queues behind a bulk write's batches."""
        return await self.embed([text])

    async def warm(self) -> None:  # noqa: B027 (optional: remote embedders load nothing)
        """Load what the first :meth:`embed` would (weights, sessions), so that a daemon
        pays for it at start-up rather than in a user's first search."""

    async def aclose(self) -> None:
        """Release threads and connections; a later :func:`resolve_embedder` of the
        same spec builds a new instance."""
        self.closed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim}>"


def check_texts(texts: Sequence[str]) -> list[str]:
    # A lone string is a Sequence[str] too; embedding it letter by letter is never meant.
    if isinstance(texts, str | bytes):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"embed() texts must be strings; item {i} is "
                            f"{type(text).__name__}")
    return out


def normalise(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Rows scaled to unit length, as float32; an all-zero row stays zero (it has no
    direction: its cosine with anything is 0)."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


#: The bulk embedding thread's nice value (searches and turns run at the process's).
BULK_NICE = 10


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: nice is per thread); best effort."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)


class LocalEmbedder(Embedder):
    """An embedder computed in this process, in its own worker thread.

    Subclasses implement :meth:`_load` (called once, in the worker thread) and
    :meth:`_embed_batch` (at most ``max_batch`` texts, in the worker thread).
    """

    def __init__(self) -> None:
        # ThreadPoolExecutor starts its thread on the first submit, not here. The
        # bulk thread runs at a lower CPU priority (and so do the threads it starts,
        # such as onnxruntime's): a write's embedding takes the cores searches and
        # turns leave idle, not theirs.
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=f"embed-{self.name}",
                                            initializer=_lower_priority)
        # Queries get a thread of their own: one query is milliseconds of work, and
        # waiting behind a batch of a bulk write (a fifth of a second on 2 busy cores)
        # would be most of a search's time.
        self._query_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"embed-query-{self.name}")
        self._loaded = False
        self._query_loaded = False
        self._load_lock = threading.RLock()

    def _load(self) -> None:
        """Load weights; runs in the worker thread on first use."""

    def _load_query(self) -> None:
        """Load what queries need (runs in the query thread; default: :meth:`_load`)."""
        self._ensure_loaded()

    def _embed_query_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        """Vectors of queries (default: :meth:`_embed_batch`), in the query thread."""
        return self._embed_batch(texts)

    @abc.abstractmethod
    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        """Unnormalised (or normalised) vectors for at most ``max_batch`` texts."""

    def _ensure_loaded(self) -> None:
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def _run_batch(self, texts: list[str]) -> Vectors:
        self._ensure_loaded()
        return normalise(self._embed_batch(texts))

    def _run_query(self, texts: list[str]) -> Vectors:
        with self._load_lock:
            if not self._query_loaded:
                self._load_query()
                self._query_loaded = True
        return normalise(self._embed_query_batch(texts))

    async def warm(self) -> None:
        self._check_open()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_loaded)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        self._check_open()
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Longest first, batched by length: a batch is padded to its longest text, so
        # mixing a long entry with short ones would make every short one cost as much.
        order = sorted(range(len(items)), key=lambda i: len(items[i]), reverse=True)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        for start in range(0, len(order), self.max_batch):
            chunk = order[start:start + self.max_batch]
            self._check_open()  # closed meanwhile: say so, not "cannot schedule futures"
            vectors = await loop.run_in_executor(self._executor, self._run_batch,
                                                 [items[i] for i in chunk])
            out[chunk] = vectors
        return out

    async def embed_query(self, text: str) -> Vectors:
        (item,) = check_texts([text])
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(
            self._query_executor, self._run_query, [item])

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"embedder {self.name} is closed")

    async def aclose(self) -> None:
        await super().aclose()
        # Not waiting in the loop: a batch already queued finishes in the thread (its
        # caller gets its answer; cancelling it would look like a task cancellation).
        self._executor.shutdown(wait=False)
        self._query_executor.shutdown(wait=False)
