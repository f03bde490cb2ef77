"""The Store's memory entry methods: each one transaction of ``_entries`` / ``_vectors``.

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property

from agentd.clock import Clock
from agentd.errors import Conflict
from agentd.store import _pg_analyze, _vectors
from agentd.store import entries as _entries
from agentd.store import quota as _quota
from agentd.store._vectors import Pending
from agentd.store.engine import Engine, Tx
from agentd.store.entries import EntryChange, EntryFilter, EntryRecord, NewEntry
from agentd.store.quota import Quota

__all__ = ["EntryStore"]

log = logging.getLogger(__name__)


class EntryStore:
    engine: Engine
    clock: Clock
    #: Embedders for which entries embedded by another one were made pending again.
    _requeued_for: frozenset[str] = frozenset()
    #: pgvector as :meth:`ensure_pgvector` found it set up (None: not yet).
    _pgvector: _vectors.PgVector | None = None

    @cached_property
    def _text_stats(self) -> _pg_analyze.Statistics:
        """When PostgreSQL's planner statistics of the memory tables were last looked
        at (:mod:`agentd.store._pg_analyze`)."""
        return _pg_analyze.Statistics()

    async def insert_entries(self, items: Sequence[NewEntry], *, quota: Quota | None = None,
                             vectors: tuple[str, Sequence[bytes]] | None = None
                             ) -> list[tuple[EntryRecord, bool]]:
        """``(record, created)`` per item (an exact duplicate: the stored entry, False);
        all or nothing. ``quota``: the writing agent's tenant's limit on entries.
        ``vectors``: an embedder's name and each item's vector (float32 bytes), stored
        with the entries it creates in the same transaction (they are never pending)."""
        now = self.clock.time()
        dialect = self.engine.dialect
        if vectors is not None and len(vectors[1]) != len(items):
            raise ValueError("one vector per item")

        def op(tx: Tx) -> list[tuple[EntryRecord, bool]]:
            written = _entries.insert(tx, items, now)
            if any(created for _, created in written):
                _quota.check(tx, quota, dialect)
                if vectors is not None:
                    _vectors.put_vectors(tx, vectors[0], [
                        (record.n, vectors[1][i], record.version)
                        for i, (record, created) in enumerate(written) if created],
                        dialect)
            return written

        written = await self.engine.write(op)
        if (dialect == "postgresql" and any(created for _, created in written)
                and self._text_stats.due()):
            await self._analyze_entries()
        return written

    async def _analyze_entries(self) -> None:
        """Keep PostgreSQL's planner statistics of the memory tables current where the
        server's autovacuum does not; looked at once a minute, by a write or a search,
        which pays for an ANALYZE when they are stale."""
        try:
            if await self.engine.write(_pg_analyze.analyze_if_stale):
                log.info("analyzed the memory tables (their statistics were stale)")
        except Exception as exc:  # e.g. a role that does not own the table
            log.warning("could not analyze the memory tables: %s", exc)

    async def get_entry(self, namespaces: Sequence[str], entry_id: str
                        ) -> EntryRecord | None:
        return await self.engine.read(lambda tx: _entries.get(tx, namespaces, entry_id))

    async def entries_by_n(self, namespaces: Sequence[str], ns: Iterable[int]
                           ) -> dict[int, EntryRecord]:
        """Entries by key (search hits), only those in ``namespaces``."""
        keys = list(ns)
        return await self.engine.read(lambda tx: _entries.get_many_by_n(tx, namespaces, keys))

    async def update_entry(self, namespaces: Sequence[str], entry_id: str,
                           change: EntryChange, *, expect_version: int | None = None,
                           vector: tuple[str, bytes] | None = None) -> EntryRecord:
        """``vector``: an embedder's name and the vector of ``change.content``, stored
        in the same transaction when the content changes."""
        now, dialect = self.clock.time(), self.engine.dialect

        def op(tx: Tx) -> EntryRecord:
            old = _entries.get(tx, namespaces, entry_id)
            record = _entries.update(tx, namespaces, entry_id, change, expect_version, now,
                                     dialect)
            if vector is not None and old is not None and record.content != old.content:
                _vectors.put_vectors(tx, vector[0], [(record.n, vector[1], record.version)],
                                     dialect)
            return record

        try:
            return await self.engine.write(op)
        except Exception as exc:
            if self.engine.is_unique_violation(exc):  # a duplicate committed meanwhile
                raise Conflict("another memory entry already holds this content",
                               code="entry_duplicate") from None
            raise

    async def delete_entry(self, namespaces: Sequence[str], entry_id: str) -> EntryRecord:
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _entries.delete(tx, namespaces, entry_id,
                                                                  dialect))

    async def delete_namespace(self, namespace: str) -> int:
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _entries.delete_namespace(tx, namespace,
                                                                            dialect))

    async def list_entries(self, namespaces: Sequence[str], filters: EntryFilter | None = None,
                           limit: int = 50, before: str | None = None) -> list[EntryRecord]:
        """Newest first; ``before``: the id of the last entry of the previous page."""
        dialect = self.engine.dialect
        return await self.engine.read(lambda tx: _entries.list_entries(
            tx, namespaces, filters, limit, before, dialect))

    async def count_entries(self, namespace: str) -> int:
        return await self.engine.read(lambda tx: _entries.count(tx, namespace))

    async def fulltext_entries(self, namespaces: Sequence[str], query: str,
                               filters: EntryFilter | None = None, limit: int = 50
                               ) -> list[tuple[int, float]]:
        """``(n, score)`` best first; any word of ``query`` matches."""
        dialect = self.engine.dialect
        found = await self.engine.read(lambda tx: _entries.fulltext(
            tx, namespaces, query, filters, limit, dialect))
        if dialect == "postgresql" and self._text_stats.due():
            # A table filled before the daemon analyzed after writes (or by another).
            await self._analyze_entries()
        return found

    async def entry_neighbours(self, namespaces: Sequence[str], keys: Sequence[int],
                               filters: EntryFilter | None = None
                               ) -> dict[int, tuple[int | None, int | None]]:
        """Each key's previous and next entry (of ``namespaces``, passing ``filters``)."""
        dialect = self.engine.dialect
        return await self.engine.read(lambda tx: _entries.neighbours(
            tx, namespaces, keys, filters, dialect))

    async def ranked_entries(
            self, namespaces: Sequence[str], keys: Sequence[int],
            filters: EntryFilter | None,
            rank: Callable[[Mapping[int, tuple[int | None, int | None]]],
                           list[tuple[int, float]]],
            neighbours: bool = True) -> tuple[list[tuple[int, float]], dict[int, EntryRecord]]:
        """A search's last read, in one transaction: the neighbours of ``keys`` (its
        candidates: entries of ``namespaces`` passing ``filters``; none unless
        ``neighbours``), ``rank`` of them (the best, with their scores, computed in
        the store's thread), and those entries."""
        dialect = self.engine.dialect

        def op(tx: Tx) -> tuple[list[tuple[int, float]], dict[int, EntryRecord]]:
            around = (_entries.neighbours(tx, namespaces, keys, filters, dialect,
                                          candidates=True)
                      if neighbours and keys else {})
            best = rank(around)
            return best, _entries.get_many_by_n(tx, namespaces, [k for k, _ in best])

        return await self.engine.read(op)

    async def allowed_entries(self, namespaces: Sequence[str], filters: EntryFilter | None
                              ) -> list[int]:
        dialect = self.engine.dialect
        return await self.engine.read(lambda tx: _entries.allowed(tx, namespaces, filters,
                                                                  dialect))

    # -- vectors ---------------------------------------------------------------------------

    async def pending_embeddings(self, embedder: str, limit: int, *,
                                 namespaces: Sequence[str] | None = None) -> list[Pending]:
        """Entries waiting for a vector by ``embedder`` (of ``namespaces``, or any). The
        first call for an embedder makes entries embedded by another one pending."""
        if embedder not in self._requeued_for:
            await self.requeue_embeddings(embedder)
            self._requeued_for = self._requeued_for | {embedder}
        return await self.engine.read(lambda tx: _vectors.pending(tx, limit, namespaces))

    async def requeue_embeddings(self, embedder: str) -> int:
        """Entries embedded by another embedder become pending; how many."""
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _vectors.requeue(tx, embedder, dialect))

    async def put_vectors(self, embedder: str, rows: Sequence[tuple[int, bytes, int]]
                          ) -> list[int]:
        """Store ``(n, vector, version)`` rows of entries still at that version; the
        keys written."""
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _vectors.put_vectors(tx, embedder, rows,
                                                                       dialect))

    async def vectors_since(self, namespace: str, embedder: str, stamp: int,
                            limit: int = 1000) -> list[tuple[int, bytes, int]]:
        """``(n, vector, stamp)`` written after ``stamp``, in stamp order."""
        return await self.engine.read(lambda tx: _vectors.vectors_since(
            tx, namespace, embedder, stamp, limit))

    async def vector_tombstones_since(self, namespace: str, stamp: int,
                                      until: int | None = None) -> list[tuple[int, int]]:
        """``(n, stamp)`` of vectors removed after ``stamp``, in stamp order."""
        return await self.engine.read(lambda tx: _vectors.tombstones_since(
            tx, namespace, stamp, until))

    async def count_vectors(self, namespace: str, embedder: str) -> int:
        return await self.engine.read(lambda tx: _vectors.count_vectors(tx, namespace,
                                                                        embedder))

    async def max_stamp(self) -> int:
        return await self.engine.read(_vectors.max_stamp)

    async def ensure_pgvector(self, embedder: str, dim: int) -> bool:
        """Whether :meth:`vector_search` can be used (always False on SQLite)."""
        if self.engine.dialect != "postgresql":
            return False

        def op(tx: Tx) -> _vectors.PgVector | None:
            if not _vectors.ensure_pgvector(tx, embedder, dim):
                return None
            return _vectors.pgvector_setup(tx)

        setup = await self.engine.write(op)
        if setup is not None:
            # What every search would otherwise look up again (two statements).
            self._pgvector = setup
        return setup is not None

    async def vector_search(self, namespaces: Sequence[str], embedder: str, dim: int,
                            query: bytes | Sequence[float], k: int,
                            filters: EntryFilter | None = None, exact_below: int = 0
                            ) -> list[tuple[int, float]]:
        """``(n, cosine similarity)`` best first, by pgvector (exactly when the
        namespaces hold at most ``exact_below`` vectors)."""
        setup = self._pgvector
        found = await self.engine.read(lambda tx: _vectors.vector_search(
            tx, namespaces, embedder, dim, query, k, filters, exact_below, setup))
        if self._text_stats.due():
            # (searches by vector alone look at the statistics too: see above)
            await self._analyze_entries()
        return found
