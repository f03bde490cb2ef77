"""The Store's memory entry methods: each one transaction of ``_entries`` / ``_vectors``.

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from agentd.errors import Conflict
from agentd.store import _entries, _vectors
from agentd.store._engine import Engine
from agentd.store._entries import EntryChange, EntryFilter, EntryPage, EntryRecord, NewEntry

__all__ = ["EntryStore"]


class EntryStore:
    engine: Engine

    async def insert_entries(self, items: Sequence[NewEntry]
                             ) -> list[tuple[EntryRecord, bool]]:
        """``(record, created)`` per item (an exact duplicate: the stored entry, False);
        all or nothing."""
        now = time.time()
        return await self.engine.write(lambda tx: _entries.insert(tx, items, now))

    async def get_entry(self, namespaces: Sequence[str], entry_id: str
                        ) -> EntryRecord | None:
        return await self.engine.read(lambda tx: _entries.get(tx, namespaces, entry_id))

    async def get_entries(self, namespaces: Sequence[str], ns: Iterable[int]
                          ) -> dict[int, EntryRecord]:
        """Entries by key (search hits), only those in ``namespaces``."""
        keys = list(ns)
        return await self.engine.read(lambda tx: _entries.get_many_by_n(tx, namespaces, keys))

    async def update_entry(self, namespaces: Sequence[str], entry_id: str,
                           change: EntryChange, *, expect_version: int | None = None
                           ) -> EntryRecord:
        now, dialect = time.time(), self.engine.dialect
        try:
            return await self.engine.write(lambda tx: _entries.update(
                tx, namespaces, entry_id, change, expect_version, now, dialect))
        except Exception as exc:
            if self.engine.is_unique_violation(exc):  # a duplicate committed meanwhile
                raise Conflict("another memory entry already holds this content",
                               code="memory_entry_duplicate") from None
            raise

    async def delete_entry(self, namespaces: Sequence[str], entry_id: str) -> EntryRecord:
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _entries.delete(tx, namespaces, entry_id,
                                                                  dialect))

    async def delete_namespace(self, namespace: str) -> int:
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _entries.delete_namespace(tx, namespace,
                                                                            dialect))

    async def list_entries(self, namespaces: Sequence[str], *,
                           filters: EntryFilter | None = None, limit: int = 50,
                           cursor: str | None = None) -> EntryPage:
        dialect = self.engine.dialect
        return await self.engine.read(lambda tx: _entries.list_entries(
            tx, namespaces, filters, limit, cursor, dialect))

    async def count_entries(self, namespace: str) -> int:
        return await self.engine.read(lambda tx: _entries.count(tx, namespace))

    async def search_fulltext(self, namespaces: Sequence[str], query: str, *,
                              filters: EntryFilter | None = None, limit: int = 50
                              ) -> list[tuple[int, float]]:
        """``(n, score)`` best first; any word of ``query`` matches."""
        dialect = self.engine.dialect
        return await self.engine.read(lambda tx: _entries.fulltext(
            tx, namespaces, query, filters, limit, dialect))

    async def allowed_entries(self, namespaces: Sequence[str], filters: EntryFilter | None
                              ) -> list[int]:
        dialect = self.engine.dialect
        return await self.engine.read(lambda tx: _entries.allowed(tx, namespaces, filters,
                                                                  dialect))

    # -- vectors ---------------------------------------------------------------------------

    async def pending_embeddings(self, limit: int) -> list[tuple[int, str, str, int]]:
        """``(n, namespace, content, version)`` of entries waiting for a vector."""
        return await self.engine.read(lambda tx: _vectors.pending(tx, limit))

    async def requeue_embeddings(self, embedder: str) -> int:
        """Entries embedded by another embedder become pending (run at start)."""
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _vectors.requeue(tx, embedder, dialect))

    async def put_vectors(self, embedder: str, rows: Sequence[tuple[int, bytes]],
                          expect: Mapping[int, int]) -> list[int]:
        """Store vectors of entries still at the version ``expect`` names; the keys
        written."""
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _vectors.put_vectors(
            tx, embedder, rows, expect, dialect))

    async def vectors_since(self, namespace: str, embedder: str, stamp: int, *,
                            limit: int = 1000) -> list[tuple[int, bytes, int]]:
        return await self.engine.read(lambda tx: _vectors.vectors_since(
            tx, namespace, embedder, stamp, limit))

    async def tombstones_since(self, namespace: str, stamp: int, *,
                               until: int | None = None) -> list[tuple[int, int]]:
        return await self.engine.read(lambda tx: _vectors.tombstones_since(
            tx, namespace, stamp, until))

    async def max_stamp(self) -> int:
        return await self.engine.read(_vectors.max_stamp)

    async def ensure_pgvector(self, dim: int, embedder: str) -> bool:
        """Whether :meth:`vector_search` can be used (always False on SQLite)."""
        if self.engine.dialect != "postgresql":
            return False
        return await self.engine.write(lambda tx: _vectors.ensure_pgvector(tx, dim,
                                                                           embedder))

    async def vector_search(self, namespaces: Sequence[str], embedder: str, dim: int,
                            query: bytes | Sequence[float], k: int, *,
                            filters: EntryFilter | None = None) -> list[tuple[int, float]]:
        """``(n, cosine similarity)`` best first, by pgvector."""
        return await self.engine.read(lambda tx: _vectors.vector_search(
            tx, namespaces, embedder, dim, query, k, filters))
