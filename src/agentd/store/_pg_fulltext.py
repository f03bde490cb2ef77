"""Full-text search of memory entries on PostgreSQL in large namespaces, with bounded work.

Namespaces of up to :data:`agentd.store._fulltext.SMALL` entries are ranked exactly
(BM25 over every match, ``entries._pg_bm25``). In a larger one a question's common
words match most entries (86% of a 100,000-entry namespace for the bench's
questions), and ranking every match (``ts_rank_cd``, before) took 70-180 ms. So, as
on SQLite (:mod:`agentd.store._fulltext`), at most :data:`BUDGET` matches are
ranked: the query's lexemes are taken rarest first while their estimated matches add
up to no more than the budget, and the entries holding any of those are ranked by
BM25 with every lexeme of the query; when that finds too few, the newest
:data:`NEWEST` entries holding all the lexemes are ranked, then those holding any.
Whatever the estimates say, one query ranks at most its newest ``BUDGET`` matches.

SQLite counts each word's matches (FTS5 stops at the LIMIT); on PostgreSQL counting
one common word's matches took 20-35 ms, so the frequencies are PostgreSQL's own:
``ANALYZE`` keeps the most common lexemes of ``content_tsv`` and the share of
entries holding each (``pg_stats.most_common_elems``, up to 1,000 of them); a lexeme
not among them is rarer than the rarest listed. They are read once a minute
(:class:`Stats`, one per store), so a search pays nothing for them. The same
figures give BM25 its document frequencies (the whole table's, as FTS5's on SQLite).
A table never analyzed (the server's autovacuum off) has none, and the planner then
misjudges every query of a large namespace; so the daemon analyzes the table itself
when it is large and its statistics are missing or stale (:func:`analyze_if_stale`,
checked at most once a minute after a write or a search). Until then the
frequencies are those among the table's newest :data:`SAMPLE` entries (one bounded
query, about 5 ms at 1,000).

Every lexeme is a parameter (cast to ``tsquery`` with ``quote_literal``): no text a
user types is read as query syntax.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentd.store import _fulltext
from agentd.store.engine import Tx

__all__ = ["BUDGET", "NEWEST", "RESCORED", "SAMPLE", "TTL", "Stats", "Table",
           "analyze_if_stale", "search"]

log = logging.getLogger(__name__)

#: The most matches one search ranks in a large namespace (SQLite's budget).
BUDGET = 5000
#: The newest matches ranked when the rarest lexemes found too few: 2,000 rather
#: than the budget lost 0.2% of exact BM25's score on the bench's questions at 100k,
#: and their slowest searches (p99) took 26-27 ms instead of 27-39.
NEWEST = 2000
#: Matches ranked again with their lexemes' positions (see :func:`_ranked`).
RESCORED = 200
#: Entries read for the frequencies when the table has no statistics.
SAMPLE = 1000
#: Seconds the table's statistics are kept before they are read again.
TTL = 60.0
#: BM25's parameters: FTS5's (SQLite), as in ``entries._pg_bm25``.
_K1, _B = 1.2, 0.75

_STATS_SQL = """
SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs,
       GREATEST(c.reltuples, 0)::float8, COALESCE(t.n_live_tup, 0)::float8,
       COALESCE(t.n_mod_since_analyze, 0)::float8, s.attname IS NOT NULL,
       p.most_common_vals::text::text[], p.most_common_freqs
FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
LEFT JOIN pg_stats s ON s.schemaname = ns.nspname AND s.tablename = c.relname
     AND s.attname = 'content_tsv'
LEFT JOIN pg_stats p ON p.schemaname = ns.nspname AND p.tablename = c.relname
     AND p.attname = 'namespace'
LEFT JOIN pg_stat_user_tables t ON t.relid = c.oid
WHERE c.oid = 'memory_entries'::regclass"""


@dataclass(frozen=True, kw_only=True)
class Table:
    """What PostgreSQL knows of ``memory_entries``: ``freqs`` the share of entries
    holding each common lexeme (empty: no lexeme common enough, or ``analyzed``
    false: no statistics), ``floor`` the share below which a lexeme is not listed,
    ``rows`` the entries, ``modified`` the entries changed since the statistics."""

    freqs: dict[str, float]
    floor: float
    rows: float
    analyzed: bool
    modified: float
    #: The share of entries in each of the most common namespaces.
    namespaces: dict[str, float]

    def large(self, names: Sequence[str]) -> bool:
        """Whether the namespaces hold, by the statistics, twice :data:`SMALL
        <agentd.store._fulltext.SMALL>` entries or more: so many that an error in
        the estimate cannot make them small (what is not that clearly large is
        counted)."""
        share = sum(self.namespaces.get(n, 0.0) for n in names)
        return share * self.rows >= 2 * _fulltext.SMALL


def _read_table(tx: Tx) -> Table:
    row = tx.one(_STATS_SQL)
    assert row is not None
    elems, freqs, reltuples, live, modified, analyzed, values, shares = row
    listed: dict[str, float] = {}
    floor = 0.0
    if elems and freqs:
        # For a tsvector, the frequencies are followed by their minimum and maximum.
        listed = {str(e): float(f) for e, f in zip(elems, freqs, strict=False)}
        floor = float(freqs[len(elems)]) if len(freqs) > len(elems) else min(freqs)
    return Table(freqs=listed, floor=floor, rows=max(float(live), float(reltuples)),
                 analyzed=bool(analyzed), modified=float(modified),
                 namespaces={str(v): float(f) for v, f in zip(values or (), shares or (),
                                                              strict=False)})


class Stats:
    """The table's statistics as last read, kept :data:`TTL` seconds (one per store;
    searches on several threads share it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._table: Table | None = None
        self._read_at = -math.inf
        self._checked_at = -math.inf

    def table(self, tx: Tx) -> Table:
        now = self._clock()
        with self._lock:
            if self._table is not None and now - self._read_at < TTL:
                return self._table
        table = _read_table(tx)
        with self._lock:
            self._table, self._read_at = table, now
        return table

    def forget(self) -> None:
        with self._lock:
            self._table, self._read_at = None, -math.inf

    def due(self) -> bool:
        """Whether :func:`analyze_if_stale` should look at the table again (once a
        :data:`TTL`)."""
        now = self._clock()
        with self._lock:
            if now - self._checked_at < TTL:
                return False
            self._checked_at = now
            return True


def analyze_if_stale(tx: Tx, stats: Stats) -> bool:
    """``ANALYZE memory_entries`` when the table is large enough to have namespaces
    searched by estimate (over :data:`SMALL <agentd.store._fulltext.SMALL>` entries)
    and has no statistics, or a fifth of it changed since they were taken (what
    autovacuum would do, for servers where it is off); the same for ``memory_pgvec``,
    pgvector's copy of the vectors. Without statistics the planner took a large
    namespace's vector search for a small one and compared the query with every
    vector instead of walking the HNSW index: 188 ms instead of 5 ms at 35,000
    entries. Returns whether either was analyzed."""
    table = _read_table(tx)
    rows = table.rows
    if not table.analyzed:
        # The server's counts lag its writes by up to seconds: count, up to the size.
        rows = max(rows, _counted(tx, "memory_entries"))
    analyzed = False
    if rows > _fulltext.SMALL and (not table.analyzed or table.modified > rows / 5):
        # Its own snapshot and a lock only another ANALYZE or VACUUM waits for; about
        # 0.1-0.3 s at 100,000 entries (it samples 30,000 rows at any size).
        tx.execute("ANALYZE memory_entries")
        stats.forget()
        analyzed = True
    return _analyze_vectors_if_stale(tx) or analyzed


#: ``memory_pgvec``'s size, changes since its statistics, and whether it was ever
#: analyzed (its ``reltuples`` alone does not say: building its index sets them); no
#: row: pgvector is not set up.
_VECTORS_STATE = """
SELECT GREATEST(c.reltuples, 0)::float8, COALESCE(t.n_live_tup, 0)::float8,
       COALESCE(t.n_mod_since_analyze, 0)::float8,
       COALESCE(t.last_analyze, t.last_autoanalyze) IS NOT NULL
FROM pg_class c LEFT JOIN pg_stat_user_tables t ON t.relid = c.oid
WHERE c.oid = to_regclass('memory_pgvec')"""


def _analyze_vectors_if_stale(tx: Tx) -> bool:
    row = tx.one(_VECTORS_STATE)
    if row is None:
        return False
    reltuples, live, modified, analyzed = row
    rows = max(float(reltuples), float(live))
    if not analyzed:
        rows = max(rows, _counted(tx, "memory_pgvec"))
    if rows <= _fulltext.SMALL or (analyzed and float(modified) <= rows / 5):
        return False
    tx.execute("ANALYZE memory_pgvec")
    return True


def _counted(tx: Tx, table: str) -> float:
    """The rows of ``table``, counted up to just over :data:`SMALL
    <agentd.store._fulltext.SMALL>`."""
    row = tx.one(f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT ?) t",
                 (_fulltext.SMALL + 1,))
    return float(row[0]) if row else 0.0


def _sampled(tx: Tx, lexemes: Sequence[str]) -> tuple[dict[str, float], float]:
    """The share of the table's newest :data:`SAMPLE` entries holding each lexeme,
    and the share assumed for a lexeme none of them holds. The table's, not the
    namespaces': the newest entries are read by key whatever the planner knows (with
    no statistics it took the namespace's index and read the whole namespace)."""
    counts = ", ".join("COUNT(*) FILTER (WHERE s.v @@ quote_literal(?)::tsquery)"
                       for _ in lexemes)
    row = tx.one(f"SELECT COUNT(*), {counts} FROM (SELECT e.content_tsv AS v FROM "
                 f"memory_entries e ORDER BY e.n DESC LIMIT {SAMPLE}) s", tuple(lexemes))
    assert row is not None
    size = max(int(row[0]), 1)
    return ({x: int(c) / size for x, c in zip(lexemes, row[1:], strict=True) if c},
            0.5 / size)


def _frequencies(tx: Tx, stats: Stats, lexemes: Sequence[str]
                 ) -> tuple[dict[str, float], float]:
    """Each lexeme's estimated share of entries holding it, and the entries."""
    table = stats.table(tx)
    if table.analyzed:
        # An unlisted lexeme: half the floor, as PostgreSQL's planner estimates it.
        return {x: table.freqs.get(x, table.floor / 2) for x in lexemes}, table.rows
    found, rest = _sampled(tx, lexemes)
    return {x: found.get(x, rest) for x in lexemes}, max(table.rows, _fulltext.SMALL + 1)


def search(tx: Tx, stats: Stats, lexemes: Sequence[str], where: str,
           params: Sequence[Any], limit: int) -> list[tuple[int, float]]:
    """``(n, BM25)`` of the best entries matching ``lexemes`` (``english`` lexemes,
    distinct) in a large namespace, best first, ranking at most about :data:`BUDGET`
    matches. ``where`` and ``params``: SQL conditions on ``memory_entries e``."""
    freqs, rows = _frequencies(tx, stats, lexemes)
    idf = [math.log(1 + (rows - freqs[x] * rows + 0.5) / (freqs[x] * rows + 0.5))
           for x in lexemes]
    chosen: list[str] = []
    total = 0.0
    for lexeme in sorted(lexemes, key=lambda x: freqs[x]):
        # A listed lexeme's share is an estimate; an unlisted one is below the floor.
        if total + freqs[lexeme] * rows > BUDGET:
            break
        chosen.append(lexeme)
        total += freqs[lexeme] * rows
    found: list[tuple[int, float]] = []
    if chosen:
        found = _ranked(tx, chosen, " || ", lexemes, idf, where, params, limit, BUDGET)
        if len(found) >= limit:
            return found
    # Lexemes too common to rank all their matches: the newest matches are ranked.
    seen = {n for n, _ in found}
    for op in ((" && ", " || ") if len(lexemes) > 1 else (" || ",)):
        for n, score in _ranked(tx, lexemes, op, lexemes, idf, where, params, limit,
                                NEWEST):
            if n not in seen:
                seen.add(n)
                found.append((n, score))
        if len(found) >= limit:
            break
    return found[:limit]


def _ranked(tx: Tx, match: Sequence[str], op: str, lexemes: Sequence[str],
            idf: Sequence[float], where: str, params: Sequence[Any], limit: int,
            newest: int) -> list[tuple[int, float]]:
    """The best ``limit`` by BM25 (``lexemes`` weighed by ``idf``) of the ``newest``
    entries matching ``match`` joined by ``op`` (``||`` any, ``&&``
    all); the newest, so that a wrong estimate cannot make a search rank every entry.

    In two passes: every match is scored with each lexeme counted once (``@@``, a
    binary search in its ``tsvector``), and the best :data:`RESCORED` (or ``limit``)
    again with each lexeme's positions, unnested as ``_pg_bm25`` does: unnesting every
    match took 25 ms for 3,500 of them, and with every lexeme counted once the top 10
    held 72% of exact BM25's where the positions make it 96%. ``st`` is MATERIALIZED,
    or the average length is computed again per match."""
    tsquery = op.join("quote_literal(?)::tsquery" for _ in match)
    once = " + ".join("CASE WHEN m.v @@ quote_literal(?)::tsquery THEN ?::float8 ELSE 0 END"
                      for _ in lexemes)
    f = "COALESCE(array_length(u.positions, 1), 1)"
    sql = f"""
WITH m AS MATERIALIZED (SELECT e.n, e.content_tsv AS v FROM memory_entries e
      WHERE e.content_tsv @@ ({tsquery}) AND {where} ORDER BY e.n DESC LIMIT {int(newest)}),
st AS MATERIALIZED (SELECT GREATEST(AVG(length(m.v)), 1)::float8 AS avgdl FROM m),
p AS MATERIALIZED (SELECT m.n, m.v FROM m CROSS JOIN st
      ORDER BY ({once}) / (1 + {_K1} * ({1 - _B} + {_B} * length(m.v) / st.avgdl)) DESC,
      m.n DESC LIMIT {max(RESCORED, limit)})
SELECT p.n, SUM(w.idf * {f} * {_K1 + 1}
                / ({f} + {_K1} * ({1 - _B} + {_B} * length(p.v) / st.avgdl))) AS score
FROM p CROSS JOIN st, unnest(p.v) u
JOIN unnest(?::text[], ?::float8[]) AS w(lexeme, idf) ON w.lexeme = u.lexeme
GROUP BY p.n ORDER BY score DESC, p.n DESC LIMIT ?"""
    pairs = [x for pair in zip(lexemes, idf, strict=True) for x in pair]
    rows = tx.all(sql, (*match, *params, *pairs, list(lexemes), list(idf), limit))
    return [(int(r[0]), float(r[1])) for r in rows]
