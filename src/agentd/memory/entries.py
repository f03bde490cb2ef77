"""Long-term memory entries: stored verbatim, found by words and by meaning.

An entry is a piece of text an agent (its tools) or a client (the API) asked to keep,
with tags, metadata and where it came from. It lives in a namespace: the agent's own
(``agent:<id>``), or a shared one (``ns:<name>``) that every agent listing it in
``settings.memory.namespaces`` may read and write. Writes are one transaction with no
model call: an exact duplicate (same normalised content in the namespace) is not
stored again, the answer names the entry that has it.

Search is hybrid: the store's full text (BM25 with the searched namespaces' own
statistics, the same on both stores: :mod:`agentd.store._text`) and the vector side
(:mod:`agentd.memory.vectors`), fused by weights of min-max normalised scores
(``vector_weight``) and lifted by neighbouring entries (``neighbour_weight``), both
measured on LoCoMo in docs/benchmarks.md. Filters (tags, metadata, time) apply to
both sides in the store.

Injection safety: an entry written by a tainted session is tainted (and stays so
until a client clears it); a search result says so; a run that recalls a tainted
entry taints its session, so text injected into one session cannot reach a clean
one through memory.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agentd.errors import Forbidden, InvalidInput, NotFound
from agentd.settings.memory import NAMESPACE_PATTERN, MemoryConfig, MemorySettings
from agentd.store.entries import EntryChange, EntryFilter, EntryRecord, NewEntry

if TYPE_CHECKING:
    from agentd.memory.embed import Embedder
    from agentd.memory.vectors import Vectors
    from agentd.runtime.agents import Agents
    from agentd.store import Store

__all__ = ["MAX_BATCH", "EntryIn", "Hit", "MemoryEntries", "Scope", "check_filter",
           "entry_dict", "own_namespace"]

#: Entries one request may write.
MAX_BATCH = 1000
MAX_TAGS = 32
TAG = re.compile(r"^[^\x00-\x1f]{1,64}\Z")
MAX_METADATA_BYTES = 16_384
#: How deep each side of a hybrid search looks before fusing.
DEPTH = 100
MAX_LIMIT = 100
MAX_QUERY = 10_000

_NAMESPACE = re.compile(NAMESPACE_PATTERN)


def own_namespace(agent_id: str) -> str:
    return f"agent:{agent_id}"


@dataclass(frozen=True, kw_only=True, slots=True)
class EntryIn:
    """One entry to write, as the API or a tool gives it."""

    content: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: A shared namespace's name (None: the agent's own).
    namespace: str | None = None
    #: Why the entry is untrusted (a client may mark an import so); None: clean.
    tainted: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Scope:
    """Which agent acts, the namespaces it may use, and the session it acts from."""

    agent_id: str
    settings: MemorySettings
    #: The acting session's key (what clients name it by), its run and seq.
    session: str | None = None
    run_id: str | None = None
    seq: int | None = None
    #: The acting session is tainted (why): what it writes is tainted.
    tainted: str | None = None
    #: The agent's tenant (its quota on memory entries counts what it writes).
    tenant: str = "default"

    @property
    def own(self) -> str:
        return own_namespace(self.agent_id)

    def namespace(self, name: str | None, field: str = "body.namespace") -> str:
        """The store's name of namespace ``name`` (None: the agent's own), if allowed."""
        if name is None or name == "":
            return self.own
        if not _NAMESPACE.match(name):
            raise InvalidInput(f"a namespace is 1 to 64 letters, digits, '_', '.', ':' or "
                               f"'-' (got {name[:80]!r})", field=field)
        if name not in self.settings.namespaces:
            raise Forbidden(f"namespace {name!r} is not in this agent's "
                            f"settings.memory.namespaces", code="namespace_not_allowed")
        return f"ns:{name}"

    def readable(self, names: Sequence[str | None] | None) -> list[str]:
        """The namespaces a search covers: the given ones, or the agent's own and all
        its shared ones."""
        if names is None:
            return [self.own, *(f"ns:{n}" for n in self.settings.namespaces)]
        return list(dict.fromkeys(self.namespace(n, "body.namespaces") for n in names))


@dataclass(frozen=True, slots=True)
class Hit:
    entry: EntryRecord
    score: float
    #: Each side's own score (``text``: BM25, ``vector``: cosine), if found
    #: by it.
    text: float | None = None
    vector: float | None = None


def check_content(content: str, max_chars: int, field: str) -> str:
    if not content.strip():
        raise InvalidInput("content must not be empty", field=field)
    if len(content) > max_chars:
        raise InvalidInput(f"content has {len(content)} characters; the most is "
                           f"{max_chars}", field=field)
    if "\x00" in content:
        raise InvalidInput("content must not contain NUL characters", field=field)
    return content


def check_tags(tags: Sequence[str], field: str) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags", field=field)
    for tag in tags:
        if not isinstance(tag, str) or not TAG.match(tag):
            raise InvalidInput(f"a tag is 1 to 64 printable characters (got {tag!r:.80})",
                               field=field)
    return tuple(dict.fromkeys(tags))


def _finite(value: Any, field: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput("numbers must be finite", field=field)
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{field}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{field}[{i}]")


def check_metadata(metadata: Mapping[str, Any], field: str) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be an object", field=field)
    _finite(dict(metadata), field)
    try:
        size = len(orjson.dumps(dict(metadata)))
    except TypeError as exc:
        raise InvalidInput(f"metadata must be JSON: {exc}", field=field) from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {size} bytes as JSON; the most is "
                           f"{MAX_METADATA_BYTES}", field=field)
    return dict(metadata)


def check_filter(flt: EntryFilter, field: str = "body") -> EntryFilter:
    check_tags(flt.tags_all, f"{field}.tags")
    check_tags(flt.tags_any, f"{field}.tags_any")
    for key, value in flt.metadata.items():
        if isinstance(value, (dict, list)):
            raise InvalidInput("a metadata filter compares with a string, number, "
                               "boolean or null", field=f"{field}.metadata.{key}")
        _finite(value, f"{field}.metadata.{key}")
    return flt


def entry_dict(e: EntryRecord) -> dict[str, Any]:
    """An entry as the API and the export show it."""
    from agentd.store.records import iso

    return {"id": e.id,
            "namespace": e.namespace[3:] if e.namespace.startswith("ns:") else None,
            "content": e.content, "tags": list(e.tags), "metadata": e.metadata,
            "source": {"session": e.source_session, "run": e.source_run,
                       "seq": e.source_seq},
            "tainted": e.tainted is not None, "tainted_reason": e.tainted,
            "created_at": iso(e.created_at), "updated_at": iso(e.updated_at),
            "version": e.version}


def _spread(ranking: Sequence[tuple[int, float]]) -> dict[int, float]:
    """A side's scores scaled to [0, 1] over its own candidates (min-max): its best 1,
    its last 0 (all 1 when they tie)."""
    if not ranking:
        return {}
    values = [s for _, s in ranking]
    hi, lo = max(values), min(values)
    if hi <= lo:
        return {k: 1.0 for k, _ in ranking}
    return {k: (s - lo) / (hi - lo) for k, s in ranking}


def fuse(text: Sequence[tuple[int, float]], vector: Sequence[tuple[int, float]],
         weight: float) -> dict[int, float]:
    """Weighted fusion of min-max normalised scores (each side's own, over its top
    candidates); ``weight`` goes to the vector side, an entry absent from a side gets 0
    there. Unlike rank-based fusion it keeps how far apart the candidates are: a clear
    BM25 winner stays ahead of vectors that barely differ (docs/design-notes.md, "Memory
    on LoCoMo")."""
    score: dict[int, float] = {}
    for side, w in ((_spread(text), 1.0 - weight), (_spread(vector), weight)):
        if w <= 0.0:
            continue
        for key, s in side.items():
            score[key] = score.get(key, 0.0) + w * s
    return score


def with_neighbours(score: Mapping[int, float],
                    neighbours: Mapping[int, tuple[int | None, int | None]],
                    weight: float) -> list[tuple[int, float]]:
    """Each candidate's score plus ``weight`` times the best score of the candidates
    written just before and after it (``neighbours``: each candidate's previous and
    next entry), divided by ``1 + weight`` to stay within [0, 1]; best first, ties by
    key. A turn that answers a question is often the reply to the turn that matched it
    (or the one a reply points back to): this lifts it. Only candidates (found by words
    or by meaning) are ranked, so every result still matches one side."""
    out: dict[int, float] = {}
    for key, s in score.items():
        best = max((score.get(other, 0.0) for other in neighbours.get(key, ())
                    if other is not None), default=0.0)
        out[key] = (s + weight * best) / (1.0 + weight)
    return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))


class MemoryEntries:
    """The agents' long-term memory entries: writes, reads and hybrid search."""

    def __init__(self, store: Store, *, agents: Agents, config: MemoryConfig, home: Path,
                 exclusive: bool, embedder: Embedder | None = None,
                 pgvector: bool = True) -> None:
        """``embedder``: None resolves ``config.embedder`` at start (``none``: full text
        only). ``pgvector``: search vectors in PostgreSQL where the extension can be
        created (the daemon's ``pgvector`` setting)."""
        self.store = store
        self.pgvector = pgvector
        self.agents = agents
        self.config = config
        self.home = home
        self.exclusive = exclusive
        self._embedder = embedder
        self.vectors: Vectors | None = None

    async def start(self) -> None:
        from agentd.memory.embed import resolve_embedder
        from agentd.memory.vectors import Vectors

        embedder = self._embedder or resolve_embedder(self.config.embedder)
        if embedder is not None:
            self.vectors = Vectors(self.store, embedder, home=self.home,
                                   ann_threshold=self.config.ann_threshold,
                                   exclusive=self.exclusive, pgvector=self.pgvector)
            await self.vectors.start()

    async def close(self) -> None:
        if self.vectors is not None:
            await self.vectors.close()

    def forget_agent(self, agent_id: str) -> None:
        """The agent was deleted with its entries: drop its namespace's index and file."""
        if self.vectors is not None:
            self.vectors.forget(own_namespace(agent_id))

    async def save_indexes(self) -> int:
        """Save the vector indexes changed since their last save (a housekeeping job;
        they are saved at shutdown too): how many."""
        return 0 if self.vectors is None else await self.vectors.save()

    # -- who acts ---------------------------------------------------------------------

    async def scope(self, agent: str) -> Scope:
        """The scope of a client acting on agent ``agent`` (by name)."""
        record = await self.agents.get(agent)
        settings = self.agents.plan(record).settings
        return Scope(agent_id=record.id, settings=settings.memory, tenant=settings.tenant)

    # -- writes -----------------------------------------------------------------------

    async def add(self, scope: Scope, items: Sequence[EntryIn], *,
                  where: Sequence[str] | None = None, batch_limit: int | None = MAX_BATCH,
                  created_at: Sequence[float | None] | None = None,
                  ) -> list[tuple[EntryRecord, bool]]:
        """Write ``items`` in one transaction: each (entry, created); a duplicate names
        the entry that has its content (created False). All checked before any is
        written. ``where``: each item's field in errors (default ``body`` or
        ``body.entries[i]``); ``created_at``: kept times (an import)."""
        if not items:
            raise InvalidInput("no entries to write", field="body.entries")
        if batch_limit is not None and len(items) > batch_limit:
            raise InvalidInput(f"at most {batch_limit} entries at once (got {len(items)})",
                               field="body.entries")
        fields = list(where) if where is not None else (
            [f"body.entries[{i}]" for i in range(len(items))] if len(items) > 1
            else ["body"])
        new: list[NewEntry] = []
        for i, item in enumerate(items):
            where_i = fields[i]
            tainted = scope.tainted or item.tainted
            new.append(NewEntry(
                namespace=scope.namespace(item.namespace, f"{where_i}.namespace"),
                content=check_content(item.content, self.config.max_entry_chars,
                                      f"{where_i}.content"),
                tags=check_tags(item.tags, f"{where_i}.tags"),
                metadata=check_metadata(item.metadata, f"{where_i}.metadata"),
                source_session=scope.session, source_run=scope.run_id,
                source_seq=scope.seq, agent_id=scope.agent_id, tainted=tainted,
                created_at=created_at[i] if created_at is not None else None))
        # The entries' vectors are computed before they are written and committed with
        # them: an acknowledged entry is found by meaning at once, and a search never
        # depends on how far background embedding got (an import larger than a batch
        # is embedded in the background instead, and found by its words until then).
        vectors: tuple[str, list[bytes]] | None = None
        if self.vectors is not None and len(new) <= MAX_BATCH:
            embedded = await self.vectors.embed_now([e.content for e in new])
            if embedded is not None:
                vectors = (self.vectors.name, embedded)
        written = await self.store.insert_entries(
            new, quota=self.agents.guard.quotas.quota(scope.tenant, "memory_entries"),
            vectors=vectors)
        self.written({e.namespace for e in new})
        return written

    async def update(self, scope: Scope, entry_id: str, change: EntryChange, *,
                     expect_version: int | None = None) -> EntryRecord:
        if change.content is not None:
            check_content(change.content, self.config.max_entry_chars, "body.content")
            if scope.tainted and change.tainted is None:
                change = EntryChange(content=change.content, tags=change.tags,
                                     metadata=change.metadata, tainted=scope.tainted)
        if change.tags is not None:
            check_tags(change.tags, "body.tags")
        if change.metadata is not None:
            check_metadata(change.metadata, "body.metadata")
        vector: tuple[str, bytes] | None = None
        if change.content is not None and self.vectors is not None:
            embedded = await self.vectors.embed_now([change.content])
            if embedded is not None:
                vector = (self.vectors.name, embedded[0])
        record = await self.store.update_entry(scope.readable(None), entry_id, change,
                                               expect_version=expect_version, vector=vector)
        self.written([record.namespace])
        return record

    async def delete(self, scope: Scope, entry_id: str) -> EntryRecord:
        record = await self.store.delete_entry(scope.readable(None), entry_id)
        self.written([record.namespace])
        return record

    def written(self, namespaces: Sequence[str] | set[str]) -> None:
        """Entries of ``namespaces`` were written (here, or by a consolidation's
        transaction): embed them."""
        if self.vectors is not None:
            self.vectors.written(list(namespaces))

    # -- reads --------------------------------------------------------------------------

    async def get(self, scope: Scope, entry_id: str) -> EntryRecord:
        found = await self.store.get_entry(scope.readable(None), entry_id)
        if found is None:
            raise NotFound(f"no memory entry {entry_id!r}", code="entry_not_found")
        return found

    async def page(self, scope: Scope, *, namespaces: Sequence[str | None] | None = None,
                   filters: EntryFilter | None = None, limit: int = 50,
                   before: str | None = None) -> list[EntryRecord]:
        return await self.store.list_entries(scope.readable(namespaces),
                                             filters or EntryFilter(), limit, before)

    async def search(self, scope: Scope, query: str, *, limit: int = 10,
                     namespaces: Sequence[str | None] | None = None,
                     filters: EntryFilter | None = None,
                     vector_weight: float | None = None) -> list[Hit]:
        """The entries best matching ``query``, best first, each with its score.

        Never waits for background work: an entry written through :meth:`add` has its
        vector from the moment it is acknowledged, so the same query over the same
        entries ranks the same way at once, later and after a restart."""
        if not query.strip():
            raise InvalidInput("query must not be empty", field="body.query")
        if len(query) > MAX_QUERY:
            raise InvalidInput(f"query has {len(query)} characters; the most is {MAX_QUERY}",
                               field="body.query")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}",
                               field="body.limit")
        flt = check_filter(filters or EntryFilter())
        spaces = scope.readable(namespaces)
        weight = scope.settings.vector_weight if vector_weight is None else vector_weight
        depth = max(DEPTH, limit)
        if self.vectors is None:
            weight = 0.0

        async def by_words() -> list[tuple[int, float]]:
            if weight >= 1.0:
                return []
            return await self.store.fulltext_entries(spaces, query, flt, depth)

        async def by_meaning() -> list[tuple[int, float]]:
            if self.vectors is None or weight <= 0.0:
                return []
            q = await self.vectors.query(query)
            return await self.vectors.search(spaces, q, depth, flt)

        # The two sides wait on different threads (the store's, the embedder's and
        # the index's): side by side, a search costs the slower of them.
        text, vector = await asyncio.gather(by_words(), by_meaning())
        score = fuse(text, vector, weight)
        # Neighbours lift a hybrid search; one side alone ranks by that side alone.
        lift = scope.settings.neighbour_weight if 0.0 < weight < 1.0 else 0.0
        # The neighbours and the best entries are read in one transaction.
        fused, records = await self.store.ranked_entries(
            spaces, list(score), flt,
            lambda around: with_neighbours(score, around, lift)[:limit],
            neighbours=lift > 0.0)
        text_of, vector_of = dict(text), dict(vector)
        return [Hit(records[k], round(s, 6), text_of.get(k), vector_of.get(k))
                for k, s in fused if k in records]
