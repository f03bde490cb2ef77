"""Long-term memory entries' SQL: verbatim text, deduplicated, searchable at once.

An entry lives in a namespace (opaque here; the service uses ``agent:<id>`` and
``ns:<name>``) and is stored as written. Its ``content_hash`` (of the content
normalised: NFKC, case-folded, whitespace collapsed) is unique per namespace, so an
exact duplicate is never stored twice: :func:`insert` answers with the entry already
there. Full text is indexed in the same transaction (its terms' postings and its
namespace's statistics, the same on both stores: ``agentd.store._text``), so an
acknowledged entry is searchable at once and ranked with its namespace's own
statistics.

Vectors are derived data (``agentd.store._vectors``): ``embedded_with`` is NULL until
the embedding pipeline has stored one for the entry's current content. Every write
that removes a vector leaves a tombstone stamped by the memory clock, so an index
built outside the database can catch up with any change.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import orjson

from agentd.errors import Conflict, InvalidInput, NotFound
from agentd.store import _fulltext, _text
from agentd.store.engine import Tx
from agentd.store.rows import new_id

__all__ = ["MAX_PAGE", "EntryChange", "EntryFilter", "EntryRecord", "NewEntry", "allowed",
           "content_hash", "count", "delete", "delete_namespace", "drop_vectors",
           "forget_agent", "fulltext", "get", "get_many_by_n", "insert", "list_entries",
           "neighbours", "normalise", "query_terms", "update"]

MAX_PAGE = 1000
#: Query words beyond this many are ignored (a pasted document is not a query).
_MAX_TERMS = 64
#: Bound parameters per IN (...) list: far under SQLite's limit of 32,766.
_CHUNK = 500
_COLS = ("e.n, e.id, e.namespace, e.content, e.tags, e.metadata, e.source_session, "
         "e.source_run, e.source_seq, e.agent_id, e.tainted, e.created_at, e.updated_at, "
         "e.version")


@dataclass(frozen=True, kw_only=True, slots=True)
class EntryRecord:
    id: str
    #: The integer key vector indexes name the entry by (never reused).
    n: int
    namespace: str
    content: str
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    source_session: str | None
    source_run: str | None
    source_seq: int | None
    #: The agent that wrote it (None: a client through the API).
    agent_id: str | None
    #: Why the entry is tainted (None: clean).
    tainted: str | None
    created_at: float
    updated_at: float
    version: int


@dataclass(frozen=True, kw_only=True, slots=True)
class NewEntry:
    namespace: str
    content: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source_session: str | None = None
    source_run: str | None = None
    source_seq: int | None = None
    agent_id: str | None = None
    tainted: str | None = None
    #: When it was written (an import keeps the original time); None: now.
    created_at: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class EntryChange:
    """The fields an update sets (None: unchanged). ``tainted``: why the entry is now
    tainted, or "" to mark it clean."""

    content: str | None = None
    tags: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    tainted: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class EntryFilter:
    """Conditions an entry must meet, all of them: every tag of ``tags_all``, one of
    ``tags_any``, each ``metadata`` key equal to its JSON scalar (numbers compare as
    numbers), and the time bounds (epoch seconds, exclusive)."""

    tags_all: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None

    @property
    def empty(self) -> bool:
        return not (self.tags_all or self.tags_any or self.metadata
                    or self.created_after is not None or self.created_before is not None
                    or self.updated_after is not None)


# -- normalising and checking ---------------------------------------------------------


def normalise(content: str) -> str:
    """The form duplicates are detected in: NFKC, case-folded, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", content).casefold())
    return " ".join(folded.split())


def content_hash(content: str) -> str:
    return hashlib.sha256(normalise(content).encode()).hexdigest()


def _string(value: object, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string", field=where)
    if "\x00" in value:  # PostgreSQL refuses NUL in text: refuse it everywhere
        raise InvalidInput(f"{what} must not contain NUL characters", field=where)
    return value


def _content(value: object, where: str) -> str:
    text = _string(value, "content", where)
    if not normalise(text):
        raise InvalidInput("content must not be empty", field=where)
    return text


def _tags(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput("tags must be a list of strings", field=where)
    out: dict[str, None] = {}
    for i, tag in enumerate(value):
        text = _string(tag, "a tag", f"{where}[{i}]")
        if not text.strip():
            raise InvalidInput("a tag must not be empty", field=f"{where}[{i}]")
        out[text] = None
    return tuple(out)


def _json_value(value: object, where: str, *, scalar: bool = False) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{where} must be a finite number", field=where)
    if isinstance(value, str):
        _string(value, where, where)
    elif isinstance(value, Mapping) and not scalar:
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} keys must be strings", field=where)
            _json_value(item, f"{where}.{key}")
    elif isinstance(value, list | tuple) and not scalar:
        for i, item in enumerate(value):
            _json_value(item, f"{where}[{i}]")
    elif value is not None and not isinstance(value, bool | int | float | str):
        kind = "a JSON scalar (string, number, boolean or null)" if scalar else "JSON"
        raise InvalidInput(f"{where} must be {kind}", field=where)


def _metadata(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput("metadata must be an object", field=where)
    _json_value(value, where)
    return dict(value)


def _checked(item: NewEntry, where: str) -> tuple[NewEntry, str]:
    if not isinstance(item.namespace, str) or not item.namespace:
        raise InvalidInput("namespace must not be empty", field=f"{where}.namespace")
    content = _content(item.content, f"{where}.content")
    if item.source_seq is not None and (isinstance(item.source_seq, bool)
                                        or not isinstance(item.source_seq, int)):
        raise InvalidInput("source_seq must be an integer", field=f"{where}.source_seq")
    if item.created_at is not None and (
            isinstance(item.created_at, bool) or not isinstance(item.created_at, int | float)
            or not math.isfinite(item.created_at)):
        raise InvalidInput("created_at must be a finite number (epoch seconds)",
                           field=f"{where}.created_at")
    checked = NewEntry(namespace=item.namespace, content=content,
                       tags=_tags(item.tags, f"{where}.tags"),
                       metadata=_metadata(item.metadata, f"{where}.metadata"),
                       source_session=item.source_session, source_run=item.source_run,
                       source_seq=item.source_seq, agent_id=item.agent_id,
                       tainted=item.tainted or None, created_at=item.created_at)
    return checked, content_hash(content)


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _record(row: Sequence[Any]) -> EntryRecord:
    return EntryRecord(
        n=int(row[0]), id=str(row[1]), namespace=str(row[2]), content=str(row[3]),
        tags=tuple(orjson.loads(row[4])), metadata=orjson.loads(row[5]),
        source_session=row[6], source_run=row[7],
        source_seq=None if row[8] is None else int(row[8]), agent_id=row[9],
        tainted=row[10], created_at=float(row[11]), updated_at=float(row[12]),
        version=int(row[13]))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- filters ----------------------------------------------------------------------------


def _where(namespaces: Sequence[str], filters: EntryFilter | None, dialect: str
           ) -> tuple[str, list[Any]]:
    """SQL conditions on ``memory_entries e`` for the namespaces and filters."""
    terms = [f"e.namespace IN ({_marks(namespaces)})"]
    params: list[Any] = list(namespaces)
    if filters is None or filters.empty:
        return " AND ".join(terms), params
    in_tags = f"e.n IN (SELECT t.n FROM memory_tags t WHERE t.namespace IN ({_marks(namespaces)})"
    for tag in _tags(filters.tags_all, "filters.tags_all"):
        terms.append(f"{in_tags} AND t.tag = ?)")
        params.extend((*namespaces, tag))
    any_tags = _tags(filters.tags_any, "filters.tags_any")
    if any_tags:
        terms.append(f"{in_tags} AND t.tag IN ({_marks(any_tags)}))")
        params.extend((*namespaces, *any_tags))
    if not isinstance(filters.metadata, Mapping):
        raise InvalidInput("the metadata filter must be an object", field="filters.metadata")
    for key, value in filters.metadata.items():
        where = f"filters.metadata.{key}"
        _string(key, "a metadata key", where)
        _json_value(value, where, scalar=True)
        term, values = _metadata_term(key, value, dialect)
        terms.append(term)
        params.extend(values)
    for column, op, bound, name in (
            ("created_at", ">", filters.created_after, "created_after"),
            ("created_at", "<", filters.created_before, "created_before"),
            ("updated_at", ">", filters.updated_after, "updated_after")):
        if bound is None:
            continue
        if (isinstance(bound, bool) or not isinstance(bound, int | float)
                or not math.isfinite(bound)):
            raise InvalidInput(f"{name} must be a finite number (epoch seconds)",
                               field=f"filters.{name}")
        terms.append(f"e.{column} {op} ?")
        params.append(float(bound))
    return " AND ".join(terms), params


def _metadata_term(key: str, value: Any, dialect: str) -> tuple[str, list[Any]]:
    if dialect == "postgresql":
        # jsonb equality compares numbers as numbers (1 = 1.0) and strings exactly.
        return "(e.metadata::jsonb -> ?) = ?::jsonb", [key, _dumps(value)]
    # json_each names top-level keys verbatim: no JSON path to escape.
    each = "EXISTS (SELECT 1 FROM json_each(e.metadata) j WHERE j.key = ? AND "
    if value is None:
        return each + "j.type = 'null')", [key]
    if isinstance(value, bool):
        return each + f"j.type = '{'true' if value else 'false'}')", [key]
    if isinstance(value, int | float):
        return each + "j.type IN ('integer', 'real') AND j.value = ?)", [key, value]
    return each + "j.type = 'text' AND j.value = ?)", [key, value]


def _namespaces(namespaces: Sequence[str]) -> list[str]:
    if isinstance(namespaces, str):  # a bare string would be read letter by letter
        raise TypeError("namespaces must be a sequence of strings, not a string")
    return list(dict.fromkeys(namespaces))


# -- writes -----------------------------------------------------------------------------


def insert(tx: Tx, items: Sequence[NewEntry], now: float
           ) -> list[tuple[EntryRecord, bool]]:
    """Store each entry unless its namespace holds an exact duplicate: ``(record,
    created)`` per item, in order; a duplicate (of a stored entry, or of an earlier
    item of the batch) gives the entry stored with ``created`` False. Every item is
    checked before anything is written; the batch is one transaction, which also
    counts the new entries' terms into their namespaces' statistics."""
    where = "entries[{}]" if len(items) > 1 else "entry"
    checked = [_checked(item, where.format(i)) for i, item in enumerate(items)]
    keys = [(item.namespace, digest) for item, digest in checked]
    found = _by_hash(tx, set(keys))
    fresh: dict[tuple[str, str], EntryRecord] = {}
    text: dict[tuple[str, str], _text.TextRow] = {}
    rows: list[tuple[Any, ...]] = []
    for (item, digest), key in zip(checked, keys, strict=True):
        if key in found or key in fresh:
            continue
        at = now if item.created_at is None else float(item.created_at)
        record = EntryRecord(
            id=new_id("mem"), n=0, namespace=item.namespace, content=item.content,
            tags=tuple(item.tags), metadata=dict(item.metadata),
            source_session=item.source_session, source_run=item.source_run,
            source_seq=item.source_seq, agent_id=item.agent_id, tainted=item.tainted,
            created_at=at, updated_at=at, version=1)
        fresh[key] = record
        text[key] = _text.TextRow.of(0, record.namespace, record.content)
        rows.append((record.id, record.namespace, record.content, digest,
                     _dumps(record.tags), _dumps(record.metadata), record.source_session,
                     record.source_run, record.source_seq, record.agent_id, record.tainted,
                     at, at, 1, *text[key].columns()))
    if rows:
        # DO NOTHING: a duplicate another node committed since the lookup above is
        # found again below, instead of failing the whole batch.
        tx.executemany(
            "INSERT INTO memory_entries (id, namespace, content, content_hash, tags, "
            "metadata, source_session, source_run, source_seq, agent_id, tainted, "
            "created_at, updated_at, version, text_terms, text_len) VALUES (?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (namespace, content_hash) DO NOTHING", rows)
        ns_of = _n_by_id(tx, [r.id for r in fresh.values()])
        lost = {key for key, r in fresh.items() if r.id not in ns_of}
        if lost:
            found.update(_by_hash(tx, lost))
        fresh = {key: replace(r, n=ns_of[r.id]) for key, r in fresh.items() if key not in lost}
        _text.index(tx, [replace(text[key], n=r.n) for key, r in fresh.items()])
        tx.executemany("INSERT INTO memory_tags (n, namespace, tag) VALUES (?, ?, ?)",
                       [(r.n, r.namespace, tag) for r in fresh.values() for tag in r.tags])
    out: list[tuple[EntryRecord, bool]] = []
    told: set[tuple[str, str]] = set()
    for key in keys:
        if key in fresh:  # created by this batch: the first item says so, later ones not
            out.append((fresh[key], key not in told))
            told.add(key)
        else:
            out.append((found[key], False))
    return out


def _by_hash(tx: Tx, keys: set[tuple[str, str]]) -> dict[tuple[str, str], EntryRecord]:
    by_ns: dict[str, list[str]] = {}
    for namespace, digest in keys:
        by_ns.setdefault(namespace, []).append(digest)
    out: dict[tuple[str, str], EntryRecord] = {}
    for namespace, digests in by_ns.items():
        for part in _chunks(sorted(digests)):
            for row in tx.all(f"SELECT {_COLS}, e.content_hash FROM memory_entries e "
                              f"WHERE e.namespace = ? AND e.content_hash IN ({_marks(part)})",
                              (namespace, *part)):
                out[(namespace, str(row[14]))] = _record(row)
    return out


def _n_by_id(tx: Tx, ids: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in _chunks(ids):
        out.update((str(r[1]), int(r[0])) for r in tx.all(
            f"SELECT n, id FROM memory_entries WHERE id IN ({_marks(part)})", part))
    return out


def _stamps(tx: Tx, count: int) -> range:
    """``count`` new stamps, in order. The UPDATE locks the clock's row until commit
    (PostgreSQL), so writers that take stamps commit in stamp order: a reader that
    sees stamp s committed has seen every smaller one, and an index that remembers the
    last stamp it read never skips a change committed late."""
    row = tx.one("UPDATE memory_clock SET stamp = stamp + ? WHERE id = 1 RETURNING stamp",
                 (count,))
    assert row is not None
    last = int(row[0])
    return range(last - count + 1, last + 1)


def drop_vectors(tx: Tx, ns: Sequence[int], dialect: str, *, embedder: str | None = None
                 ) -> None:
    """Remove the entries' vectors (only those of another embedder than ``embedder``
    when given), each with a tombstone: indexes that hold one remove it."""
    have: list[tuple[str, int]] = []
    for part in _chunks(sorted(set(ns))):
        extra = "" if embedder is None else " AND embedder <> ?"
        have.extend((str(r[0]), int(r[1])) for r in tx.all(
            f"SELECT namespace, n FROM memory_vectors WHERE n IN ({_marks(part)}){extra} "
            "ORDER BY n", (*part, *(() if embedder is None else (embedder,)))))
    if not have:
        return
    stamps = _stamps(tx, len(have))
    tx.executemany("INSERT INTO memory_deleted (namespace, n, stamp) VALUES (?, ?, ?)",
                   [(namespace, n, s) for (namespace, n), s in zip(have, stamps, strict=True)])
    gone = [n for _namespace, n in have]
    for part in _chunks(gone):
        tx.execute(f"DELETE FROM memory_vectors WHERE n IN ({_marks(part)})", part)
        if dialect == "postgresql" and _has_pgvec(tx):
            tx.execute(f"DELETE FROM memory_pgvec WHERE n IN ({_marks(part)})", part)


def _has_pgvec(tx: Tx) -> bool:
    row = tx.one("SELECT to_regclass('memory_pgvec') IS NOT NULL")
    return bool(row and row[0])


def update(tx: Tx, namespaces: Sequence[str], entry_id: str, change: EntryChange,
           expect_version: int | None, now: float, dialect: str) -> EntryRecord:
    """Apply ``change`` as the entry's next version (only if it is ``expect_version``
    when given). New content is re-hashed (Conflict if it duplicates another entry)
    and waits for a new vector; its old vector goes, with a tombstone."""
    old = get(tx, namespaces, entry_id)
    if old is None:
        raise NotFound(f"no memory entry {entry_id!r}", code="entry_not_found")
    if expect_version is not None and old.version != expect_version:
        raise Conflict(f"memory entry {entry_id!r} is at version {old.version}, not "
                       f"{expect_version}", code="entry_changed",
                       details={"version": old.version})
    content = old.content if change.content is None else _content(change.content,
                                                                  "change.content")
    tags = old.tags if change.tags is None else _tags(change.tags, "change.tags")
    metadata = (old.metadata if change.metadata is None
                else _metadata(change.metadata, "change.metadata"))
    tainted = old.tainted if change.tainted is None else (change.tainted or None)
    digest = content_hash(content)
    reembed = content != old.content
    # What the entry counted before (read before the row changes).
    old_text = _text.stored(tx, [old.n]) if reembed else []
    if reembed:
        row = tx.one("SELECT id FROM memory_entries WHERE namespace = ? AND content_hash = ? "
                     "AND n <> ?", (old.namespace, digest, old.n))
        if row is not None:
            raise Conflict(f"memory entry {row[0]!r} already holds this content",
                           code="entry_duplicate", details={"existing": str(row[0])})
    new_text = _text.TextRow.of(old.n, old.namespace, content) if reembed else None
    tx.execute(
        "UPDATE memory_entries SET content = ?, content_hash = ?, tags = ?, metadata = ?, "
        "tainted = ?, updated_at = ?, version = version + 1"
        + (", embedded_with = NULL, text_terms = ?, text_len = ?" if reembed else "")
        + " WHERE n = ? AND version = ?",
        (content, digest, _dumps(tags), _dumps(metadata), tainted, now,
         *(new_text.columns() if new_text is not None else ()),
         old.n, old.version))
    if tx.rowcount != 1:  # another node wrote in between (PostgreSQL, read committed)
        raise Conflict(f"memory entry {entry_id!r} changed meanwhile; try again",
                       code="entry_changed", retryable=True)
    if new_text is not None:
        _text.unindex(tx, old_text)
        _text.index(tx, [new_text])
        drop_vectors(tx, [old.n], dialect)
    if tags != old.tags:
        tx.execute("DELETE FROM memory_tags WHERE n = ?", (old.n,))
        tx.executemany("INSERT INTO memory_tags (n, namespace, tag) VALUES (?, ?, ?)",
                       [(old.n, old.namespace, tag) for tag in tags])
    return EntryRecord(
        id=old.id, n=old.n, namespace=old.namespace, content=content, tags=tags,
        metadata=metadata, source_session=old.source_session, source_run=old.source_run,
        source_seq=old.source_seq, agent_id=old.agent_id, tainted=tainted,
        created_at=old.created_at, updated_at=now, version=old.version + 1)


def delete(tx: Tx, namespaces: Sequence[str], entry_id: str, dialect: str) -> EntryRecord:
    """Delete the entry (its tags and vectors go with it; a vector leaves a tombstone).
    Its row is locked first, then its terms are taken out of the statistics, then its
    vector goes: the order every write takes (entries, statistics, the memory clock),
    so that writers on PostgreSQL wait for each other instead of deadlocking, and a
    rewrite committed meanwhile is the one uncounted."""
    old = get(tx, namespaces, entry_id)
    if old is None:
        raise NotFound(f"no memory entry {entry_id!r}", code="entry_not_found")
    _text.unindex(tx, _text.stored(tx, [old.n], lock=True))
    drop_vectors(tx, [old.n], dialect)
    tx.execute("DELETE FROM memory_entries WHERE n = ?", (old.n,))
    return old


def delete_namespace(tx: Tx, namespace: str, dialect: str) -> int:
    """Delete every entry of the namespace; how many there were. Its entries' rows are
    locked first (PostgreSQL), as every write takes them: see :func:`delete`."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    ns = [int(r[0]) for r in tx.all("SELECT n FROM memory_entries WHERE namespace = ?"
                                    + lock, (namespace,))]
    _text.drop_all(tx, namespace)
    drop_vectors(tx, ns, dialect)
    tx.execute("DELETE FROM memory_entries WHERE namespace = ?", (namespace,))
    return len(ns)


def forget_agent(tx: Tx, agent_id: str, dialect: str) -> None:
    """Before an agent is deleted: its own namespace goes with it."""
    delete_namespace(tx, f"agent:{agent_id}", dialect)


# -- reads ------------------------------------------------------------------------------


def get(tx: Tx, namespaces: Sequence[str], entry_id: str) -> EntryRecord | None:
    """The entry, if it lives in one of ``namespaces``."""
    names = _namespaces(namespaces)
    if not names:
        return None
    row = tx.one(f"SELECT {_COLS} FROM memory_entries e WHERE e.id = ? "
                 f"AND e.namespace IN ({_marks(names)})", (entry_id, *names))
    return _record(row) if row else None


def get_many_by_n(tx: Tx, namespaces: Sequence[str], ns: Iterable[int]
                  ) -> dict[int, EntryRecord]:
    """The entries of those keys that live in ``namespaces`` (others are left out)."""
    names = _namespaces(namespaces)
    keys = sorted({int(n) for n in ns})
    out: dict[int, EntryRecord] = {}
    if not names:
        return out
    # ``(e.namespace || '')``: the keys find the rows; with the bare column, SQLite
    # 3.40 walks the namespace index instead (every entry of a large namespace: 150 ms
    # at 1M for 10 hits, against 0.1 ms by key).
    for part in _chunks(keys):
        for row in tx.all(f"SELECT {_COLS} FROM memory_entries e WHERE e.n IN "
                          f"({_marks(part)}) AND (e.namespace || '') IN ({_marks(names)})",
                          (*part, *names)):
            record = _record(row)
            out[record.n] = record
    return out


def list_entries(tx: Tx, namespaces: Sequence[str], filters: EntryFilter | None,
                 limit: int, before: str | None, dialect: str) -> list[EntryRecord]:
    """Entries newest first (``created_at``, then ``n``), a page at a time: the next
    page is the one ``before`` the last entry of this one (its id)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1-{MAX_PAGE}", field="query.limit")
    names = _namespaces(namespaces)
    if not names:
        return []
    where, params = _where(names, filters, dialect)
    if before is not None:
        mark = get(tx, names, before)
        if mark is None:
            raise InvalidInput(f"before: no memory entry {before!r} (it may have been "
                               "deleted)", field="query.before")
        where += " AND (e.created_at < ? OR (e.created_at = ? AND e.n < ?))"
        params.extend((mark.created_at, mark.created_at, mark.n))
    rows = tx.all(f"SELECT {_COLS} FROM memory_entries e WHERE {where} "
                  "ORDER BY e.created_at DESC, e.n DESC LIMIT ?", (*params, limit))
    return [_record(r) for r in rows]


def count(tx: Tx, namespace: str) -> int:
    row = tx.one("SELECT COUNT(*) FROM memory_entries WHERE namespace = ?", (namespace,))
    return int(row[0]) if row else 0


def allowed(tx: Tx, namespaces: Sequence[str], filters: EntryFilter | None, dialect: str
            ) -> list[int]:
    """The keys of every entry in ``namespaces`` that passes ``filters``: what a vector
    search may return."""
    names = _namespaces(namespaces)
    if not names:
        return []
    where, params = _where(names, filters, dialect)
    return [int(r[0]) for r in tx.all(f"SELECT e.n FROM memory_entries e WHERE {where}",
                                      params)]


#: How far (in keys) a neighbour may be from an entry: entries written together sit
#: next to each other; one written much later by another writer is no neighbour.
NEIGHBOUR_WINDOW = 64


def neighbours(tx: Tx, namespaces: Sequence[str], keys: Sequence[int],
               filters: EntryFilter | None, dialect: str, *, candidates: bool = False
               ) -> dict[int, tuple[int | None, int | None]]:
    """Which of ``keys`` were written next to each other: for each key of an entry in
    ``namespaces`` passing ``filters``, the previous and the next such entry of its
    namespace, within :data:`NEIGHBOUR_WINDOW` keys, when it is among ``keys`` (None:
    none there, or one that is not among them). A search lifts its candidates by
    their neighbours' scores, and an entry it did not find scores nothing, so only
    neighbours among the candidates matter: two candidates with consecutive keys are
    neighbours without a lookup, and only the gaps between close ones are read.
    ``candidates``: the keys are a search's candidates, entries of ``namespaces`` passing
    ``filters``; with one namespace they need not be read to be grouped."""
    names = _namespaces(namespaces)
    out: dict[int, tuple[int | None, int | None]] = {}
    wanted = sorted({int(k) for k in keys})
    if not names or not wanted:
        return out
    where, params = _where(names, filters, dialect)
    # ``(e.namespace || '')``: the keys find the rows; with the bare column SQLite
    # walks the namespace's index instead (every entry of it: see get_many_by_n).
    keyed = where.replace("e.namespace IN", "(e.namespace || '') IN", 1)
    by_ns: dict[str, list[int]] = {}
    if candidates and len(names) == 1:
        by_ns[names[0]] = list(wanted)
    for part in (() if by_ns else _chunks(wanted)):
        for n, namespace in tx.all(f"SELECT e.n, e.namespace FROM memory_entries e WHERE "
                                   f"e.n IN ({_marks(part)}) AND {keyed}", (*part, *params)):
            by_ns.setdefault(str(namespace), []).append(int(n))
    pairs: list[tuple[int, int]] = []
    for found in by_ns.values():
        found.sort()
        pairs.extend((a, b) for a, b in pairwise(found)
                     if b - a <= NEIGHBOUR_WINDOW)
    # A pair with keys between them is adjacent unless one of those keys is an entry of
    # the namespace that the search may return.
    gaps = [(a, b) for a, b in pairs if b - a > 1]
    filled: set[tuple[int, int]] = set()
    one = f"EXISTS (SELECT 1 FROM memory_entries e WHERE e.n > ? AND e.n < ? AND {keyed})"
    for start in range(0, len(gaps), 50):
        part = gaps[start:start + 50]
        row = tx.one("SELECT " + ", ".join(one for _ in part),
                     tuple(x for gap in part for x in (*gap, *params)))
        assert row is not None
        filled.update(gap for gap, full in zip(part, row, strict=True) if full)
    before: dict[int, int] = {}
    after: dict[int, int] = {}
    for a, b in pairs:
        if (a, b) not in filled:
            after[a], before[b] = b, a
    for found in by_ns.values():
        for n in found:
            out[n] = (before.get(n), after.get(n))
    return out


def query_terms(query: str) -> list[str]:
    """The query's terms (:func:`agentd.store._text.terms`), each once, in order."""
    if not isinstance(query, str):
        raise InvalidInput("query must be a string", field="query")
    return _text.query_terms(query, _MAX_TERMS)


def fulltext(tx: Tx, namespaces: Sequence[str], query: str, filters: EntryFilter | None,
             limit: int, dialect: str) -> list[tuple[int, float]]:
    """``(n, score)`` of the entries holding any term of ``query``, best first (a
    higher score is better: BM25 with the namespaces' own statistics, the same on
    both stores). Every term is a parameter: no text a user types is read as query
    syntax. The work is bounded (:mod:`agentd.store._fulltext`)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1-{MAX_PAGE}", field="limit")
    names = _namespaces(namespaces)
    terms = query_terms(query)
    if not names or not terms:
        return []
    where, params = _where(names, filters, dialect)
    return _fulltext.search(tx, names, terms, where, params,
                            filters is not None and not filters.empty, limit)
