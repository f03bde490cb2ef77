"""The vector side of memory search: embedding new entries, and the indexes that find them.

The store keeps every entry and every vector; what lives here is derived and may be
thrown away at any time:

- **Embedding** happens after an entry is acknowledged, never on the write path (an
  insert of 1,000 entries is one transaction). A background task embeds whatever the
  store reports as pending, in batches, on the embedder's own thread; a search first
  has the entries of its namespaces that are still pending embedded (``drain``), so an
  acknowledged entry is found by meaning at once.
- **Indexes**, one per namespace, are loaded from their file under the home, brought up
  to date from the store's stamped change feed (vectors written and tombstones since
  the index's watermark), and checked against the store's count; a file that is
  missing, corrupt or does not add up is rebuilt from the store. They are saved on
  close and by the housekeeping job.
- **pgvector**: on PostgreSQL with the extension the database searches its own HNSW
  index and no local index is kept.

Nothing here runs on the event loop but the waiting: embedding runs on the embedder's
thread, index work on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agentd.memory.index import VectorIndex

if TYPE_CHECKING:
    from agentd.memory.embed import Embedder
    from agentd.store import Store
    from agentd.store.entries import EntryFilter

__all__ = ["Vectors"]

log = logging.getLogger(__name__)

#: Entries embedded per batch by the background task (and by a search's drain). Small
#: enough that a query's embedding, queued behind a batch on the embedder's thread,
#: waits a fraction of a second at most.
BATCH = 64
#: pgvector: namespaces of at most this many vectors (and at most ``ann_threshold``)
#: are searched exactly. PostgreSQL compares about 2.5 microseconds a vector here (12 ms
#: for 5,000), against the HNSW walk's few milliseconds at any size.
PG_EXACT_MAX = 5_000
#: How long a search waits for its namespaces' pending entries to be embedded before
#: it goes on with what is indexed (full text still finds the rest).
DRAIN_S = 10.0


class Vectors:
    """Embeds pending entries and answers nearest-neighbour queries per namespace."""

    def __init__(self, store: Store, embedder: Embedder, *, home: Path,
                 ann_threshold: int, exclusive: bool, pgvector: bool = True) -> None:
        self.store = store
        #: Whether to let PostgreSQL search vectors (pgvector) where it can.
        self.pgvector = pgvector
        self.embedder = embedder
        self.ann_threshold = ann_threshold
        #: This daemon is the store's only writer: an index it brought up to date stays
        #: so until it writes (else every search asks the store for newer stamps).
        self.exclusive = exclusive
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.name)
        self.dir = home / "memory" / "index" / safe
        self._indexes: dict[str, VectorIndex] = {}
        self._fresh: set[str] = set()
        #: Indexes changed since they were last saved.
        self._dirty: set[str] = set()
        self._index_locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._passed = asyncio.Condition()
        self._embed_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: Whether the database searches vectors itself (pgvector).
        self.in_database = False
        self.embedded = 0

    @property
    def name(self) -> str:
        return self.embedder.name

    async def start(self) -> None:
        if self.store.engine.dialect == "postgresql" and self.pgvector:
            self.in_database = await self.store.ensure_pgvector(self.embedder.name,
                                                                self.embedder.dim)
        self._task = asyncio.create_task(self._run(), name="memory-embedder")
        self._wake.set()  # entries left pending by the last run

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.save()

    # -- embedding ---------------------------------------------------------------------

    def written(self, namespaces: Sequence[str]) -> None:
        """Entries were added or changed in ``namespaces``: embed them soon."""
        self._fresh.difference_update(namespaces)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._embed_some(None):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                # An embedder that fails (an endpoint down) must not kill the task: the
                # entries stay pending and full text still finds them. Try again later.
                log.exception("embedding memory entries failed; retrying in 30 s")
                await asyncio.sleep(30)
                self._wake.set()

    async def _embed_some(self, namespaces: Sequence[str] | None) -> int:
        """Embed one batch of pending entries (of ``namespaces``, or any); how many."""
        async with self._embed_lock:
            rows = await self.store.pending_embeddings(self.embedder.name, BATCH,
                                                       namespaces=namespaces)
            if not rows:
                async with self._passed:
                    self._passed.notify_all()
                return 0
            vectors = await self.embedder.embed([r.content for r in rows])
            await self.store.put_vectors(
                self.embedder.name,
                [(r.n, vectors[i].astype("<f4").tobytes(), r.version)
                 for i, r in enumerate(rows)])
            self.embedded += len(rows)
            self._fresh.difference_update({r.namespace for r in rows})
            return len(rows)

    async def embed_now(self, texts: Sequence[str]) -> list[bytes] | None:
        """The vectors of ``texts`` (float32 bytes) for a write to store with its
        entries; None if the embedder failed (the entries are then embedded in the
        background, and found by their words until then)."""
        try:
            vectors = await self.embedder.embed(list(texts))
        except Exception as exc:  # a remote embedder down: the write must not fail
            log.warning("embedding %d new memory entries failed (%s); they wait for the "
                        "background embedder", len(texts), exc)
            return None
        return [np.asarray(v, dtype="<f4").tobytes() for v in vectors]

    async def drain(self, namespaces: Sequence[str] | None,
                    seconds: float = DRAIN_S) -> bool:
        """Embed what is pending in ``namespaces`` (None: in any) now; False if that
        took longer than ``seconds`` (the search goes on with what is indexed)."""
        try:
            async with asyncio.timeout(seconds):
                while await self._embed_some(namespaces):
                    pass
            return True
        except TimeoutError:
            return False

    # -- searching -----------------------------------------------------------------------

    async def query(self, text: str) -> np.ndarray:
        vectors = await self.embedder.embed_query(text)
        return np.asarray(vectors[0], dtype=np.float32)

    async def search(self, namespaces: Sequence[str], query: np.ndarray, k: int,
                     filters: EntryFilter | None) -> list[tuple[int, float]]:
        """The ``k`` nearest entries of ``namespaces`` (row key, cosine), best first."""
        if self.in_database:
            return await self.store.vector_search(
                namespaces, self.embedder.name, self.embedder.dim,
                query.astype("<f4").tobytes(), k, filters,
                exact_below=min(self.ann_threshold, PG_EXACT_MAX))
        hits: list[tuple[int, float]] = []
        for ns in namespaces:
            index = await self._index(ns)
            if not len(index):
                continue
            allow: np.ndarray | None = None
            if filters is not None and not filters.empty:
                keys = await self.store.allowed_entries([ns], filters)
                if not keys:
                    continue
                allow = np.asarray(keys, dtype=np.int64)
            hits.extend(await asyncio.to_thread(index.search, query, k, allow=allow))
        hits.sort(key=lambda h: -h[1])
        return hits[:k]

    async def _index(self, ns: str) -> VectorIndex:
        """The namespace's index, up to date with the store."""
        index = self._indexes.get(ns)
        if index is not None and ns in self._fresh:
            return index
        lock = self._index_locks.setdefault(ns, asyncio.Lock())
        async with lock:
            index = self._indexes.get(ns)
            loaded = index is None
            if index is None:
                index = await asyncio.to_thread(self._load, ns)
            if not await self._catch_up(ns, index, check=loaded) and loaded:
                # A file from another database, or one the store was restored under:
                # the store is the truth, so the index is built again from it.
                log.warning("memory index of %s does not match the store: rebuilding", ns)
                index = self._new(ns)
                await self._catch_up(ns, index, check=False)
            self._indexes[ns] = index
            if self.exclusive:
                self._fresh.add(ns)
            return index

    def _path(self, ns: str) -> Path:
        return self.dir / (hashlib.sha256(ns.encode()).hexdigest()[:32] + ".idx")

    def _load(self, ns: str) -> VectorIndex:
        path = self._path(ns)
        found = VectorIndex.load(path, self.embedder.dim, ann_threshold=self.ann_threshold)
        return found if found is not None else self._new(ns)

    def _new(self, ns: str) -> VectorIndex:
        return VectorIndex(self.embedder.dim, ann_threshold=self.ann_threshold,
                           path=self._path(ns))

    async def _catch_up(self, ns: str, index: VectorIndex, *, check: bool) -> bool:
        """Apply the store's changes since the index's watermark; with ``check``,
        whether the result adds up (as many vectors as the store has; counting them
        took 50 ms at 100,000, so an index this process has kept is not counted at
        every search of a store it does not write alone).

        Stamps commit in order (the store's clock row serialises them), so every stamp
        up to the clock's value read first is committed: the vectors and tombstones up
        to it are read, applied in stamp order per key, and it becomes the watermark."""
        start = index.watermark
        until = await self.store.max_stamp()
        if until <= start:
            return not check or len(index) == await self.store.count_vectors(
                ns, self.embedder.name)
        added: dict[int, int] = {}
        top = start
        while top < until:
            rows = [r for r in await self.store.vectors_since(ns, self.embedder.name, top,
                                                              5000) if r[2] <= until]
            if not rows:
                break
            keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(
                len(rows), self.embedder.dim)
            await asyncio.to_thread(index.add, keys, matrix)
            for n, _, stamp in rows:
                added[n] = stamp
            top = rows[-1][2]
        # A tombstone removes a key unless the key was written again after it (an entry
        # whose content changed: its tombstone, then its new vector).
        gone = await self.store.vector_tombstones_since(ns, start, until=until)
        if gone:
            await asyncio.to_thread(index.remove,
                                    [n for n, s in gone if added.get(n, -1) < s])
        index.watermark = until
        self._dirty.add(ns)
        return not check or len(index) == await self.store.count_vectors(
            ns, self.embedder.name)

    async def save(self) -> int:
        """Persist the loaded indexes changed since their last save (best effort: a lost
        file is only rebuilt); how many were saved."""
        saved = 0
        for ns in list(self._dirty):
            index = self._indexes.get(ns)
            self._dirty.discard(ns)
            if index is None:
                continue
            try:
                await asyncio.to_thread(self.dir.mkdir, mode=0o700, parents=True,
                                        exist_ok=True)
                await asyncio.to_thread(index.save)
                saved += 1
            except OSError as exc:
                self._dirty.add(ns)
                log.warning("could not save the memory index of %s: %s", ns, exc)
        return saved

    def forget(self, ns: str) -> None:
        """The namespace is gone: drop its index and its files (the index, and the
        HNSW graph saved beside it as ``<index>.<token>.ann``)."""
        self._indexes.pop(ns, None)
        self._fresh.discard(ns)
        self._dirty.discard(ns)
        path = self._path(ns)
        for found in (path, *path.parent.glob(f"{path.name}.*.ann")):
            with contextlib.suppress(OSError):
                found.unlink()
