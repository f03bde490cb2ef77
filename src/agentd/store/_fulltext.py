"""Full-text search of memory entries: BM25 with the namespaces' own statistics, bounded.

Both stores take the same steps with the same numbers (terms, statistics and BM25 from
:mod:`agentd.store._text`), so the same entries rank the same way on SQLite and on
PostgreSQL; only the SQL that reads an entry's term counts differs (SQLite's
``memory_postings``, PostgreSQL's ``text_terms`` ``tsvector``: :mod:`._pg_fulltext`).

The statistics say exactly how many entries of the searched namespaces hold each
term, before anything is read:

- **Every match ranked** when the query's terms are held by at most :data:`BUDGET`
  entries together (most searches: every search of a namespace of a few thousand
  entries): exact BM25 over every entry holding any of them.
- **Otherwise** the terms are taken rarest first while their entries add up to no
  more than the budget (a common term adds little to BM25: its IDF is low); the
  entries holding those are ranked by them, and the best :data:`RESCORED` get the
  other terms' share added (exact BM25 over every term for those). When that finds
  too few (every term common, or filters leaving too few), the newest
  :data:`NEWEST` entries of the namespaces holding any term are ranked by every
  term too, and the two lists merged by score. Only when even that leaves fewer than
  asked for (filters that keep very little) is every match ranked.

Filters choose which entries may be returned; they are applied to what is ranked
and never change the statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentd.store import _text
from agentd.store._text import K1, B, Stats
from agentd.store.engine import Tx

__all__ = ["BUDGET", "NEWEST", "RESCORED", "SQLITE", "Query", "Side", "best", "bm25", "score_sql",
           "search"]

#: The most term matches one search ranks in full.
BUDGET = 5000
#: Entries ranked by the rarest terms that get every other term's share added.
RESCORED = 200
#: The newest entries holding any term, ranked when the rarest terms find too few.
NEWEST = 2000


def bm25(idf: float, tf: int, length: int, avgdl: float) -> float:
    """One term's share of an entry's score (what the SQL of both stores computes)."""
    return idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avgdl))


def search(tx: Tx, names: Sequence[str], terms: Sequence[str], where: str,
           params: Sequence[Any], filtered: bool, limit: int, dialect: str
           ) -> list[tuple[int, float]]:
    """``(n, BM25)`` of the best entries of ``names`` holding any of ``terms``
    (distinct, from :func:`agentd.store._text.query_terms`), best first.

    ``where`` and ``params``: SQL conditions on ``memory_entries e`` (the namespaces
    and any filters); ``filtered``: whether there are filters beyond the namespaces.
    """
    from agentd.store import _pg_fulltext

    side: Side = _pg_fulltext.POSTGRES if dialect == "postgresql" else SQLITE
    stats = _text.read_stats(tx, names, terms)
    present = [t for t in terms if stats.df.get(t)]
    if not present:
        return []
    idf = {t: stats.idf(t) for t in present}
    query = Query(stats, names, idf, where, params, filtered)
    if sum(stats.df[t] for t in present) <= BUDGET:
        return [(n, s) for n, s, _ in side.ranked(tx, query, present, limit)]
    chosen: list[str] = []
    total = 0
    for term in sorted(present, key=lambda t: (stats.df[t], t)):
        if total + stats.df[term] > BUDGET:
            break
        chosen.append(term)
        total += stats.df[term]
    found: dict[int, float] = {}
    if chosen:
        top = side.ranked(tx, query, chosen, max(RESCORED, limit))
        others = [t for t in present if t not in chosen]
        counts = side.counts(tx, query, [n for n, _, _ in top], others) if others else {}
        for n, score, length in top:
            found[n] = score + sum(bm25(idf[t], tf, length, stats.avgdl)
                                   for t, tf in counts.get(n, {}).items())
        if len(found) >= limit:
            return best(found, limit)
    # Terms too common to rank all their matches: the newest matches are ranked.
    for n, score in side.newest(tx, query, present, NEWEST, limit):
        found.setdefault(n, score)
    if len(found) >= limit:
        return best(found, limit)
    # Too few passed the filters among what was ranked: every match.
    return [(n, s) for n, s, _ in side.ranked(tx, query, present, limit)]


def best(scores: Mapping[int, float], limit: int) -> list[tuple[int, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], -kv[0]))[:limit]


class Query:
    """What a dialect's SQL needs of one search."""

    __slots__ = ("filtered", "idf", "names", "params", "stats", "where")

    def __init__(self, stats: Stats, names: Sequence[str], idf: Mapping[str, float],
                 where: str, params: Sequence[Any], filtered: bool) -> None:
        self.stats, self.names, self.idf = stats, names, idf
        self.where, self.params, self.filtered = where, params, filtered

    def weights(self, terms: Sequence[str]) -> list[Any]:
        """``term, idf`` pairs, flattened."""
        return [x for t in terms for x in (t, self.idf[t])]


class Side:
    """The dialect's reads: each entry's term counts and length, scored in SQL."""

    def ranked(self, tx: Tx, q: Query, terms: Sequence[str], limit: int
               ) -> list[tuple[int, float, int]]:
        """``(n, BM25 over terms, length)`` of the best ``limit`` entries passing the
        conditions that hold any of ``terms``, best first (ties: newest first)."""
        raise NotImplementedError

    def counts(self, tx: Tx, q: Query, keys: Sequence[int], terms: Sequence[str]
               ) -> dict[int, dict[str, int]]:
        """How often each of ``terms`` occurs in each entry of ``keys``."""
        raise NotImplementedError

    def newest(self, tx: Tx, q: Query, terms: Sequence[str], window: int, limit: int
               ) -> list[tuple[int, float]]:
        """Of the newest ``window`` entries of the namespaces holding any of
        ``terms``, the best ``limit`` passing the conditions, by BM25 over
        ``terms``."""
        raise NotImplementedError


def score_sql(tf: str, length: str, cast: str = "") -> str:
    """The SQL of :func:`bm25` (``w.idf`` times the term's share; the average length
    is a parameter)."""
    return f"w.idf * {tf} * {K1 + 1} / ({tf} + {K1} * ({1 - B} + {B} * {length} / ?{cast}))"


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _weights(terms: Sequence[str]) -> str:
    return "w(term, idf) AS (VALUES " + ", ".join("(?, ?)" for _ in terms) + ")"


class _SQLite(Side):
    """SQLite: ``memory_postings`` (namespace, term, entry) holds each term's count in
    each entry and the entry's length; a search reads the postings of its terms in
    its namespaces, found by the primary key."""

    def ranked(self, tx: Tx, q: Query, terms: Sequence[str], limit: int
               ) -> list[tuple[int, float, int]]:
        ids = q.stats.ids
        join = (f" JOIN memory_entries e ON e.n = p.n WHERE {q.where}" if q.filtered
                else "")
        sql = (f"WITH {_weights(terms)} SELECT p.n, SUM({score_sql('p.tf', 'p.len')}) AS score, "
               f"MAX(p.len) FROM w JOIN memory_postings p ON p.ns IN ({_marks(ids)}) "
               f"AND p.term = w.term{join} GROUP BY p.n ORDER BY score DESC, p.n DESC "
               "LIMIT ?")
        rows = tx.all(sql, (*q.weights(terms), q.stats.avgdl, *ids,
                            *(q.params if q.filtered else ()), limit))
        return [(int(r[0]), float(r[1]), int(r[2])) for r in rows]

    def counts(self, tx: Tx, q: Query, keys: Sequence[int], terms: Sequence[str]
               ) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        if not keys:
            return out
        ids = q.stats.ids
        for n, term, tf in tx.all(
                f"SELECT n, term, tf FROM memory_postings WHERE ns IN ({_marks(ids)}) "
                f"AND term IN ({_marks(terms)}) AND n IN ({_marks(keys)})",
                (*ids, *terms, *keys)):
            out.setdefault(int(n), {})[str(term)] = int(tf)
        return out

    def newest(self, tx: Tx, q: Query, terms: Sequence[str], window: int, limit: int
               ) -> list[tuple[int, float]]:
        # The newest ``window`` entries holding any term are among the union of each
        # (namespace, term)'s newest ``window``, and each of them has a row there for
        # every term it holds: so that union, cut to the newest ``window`` entries, is
        # all that is read.
        pairs = [(ns, t) for ns in q.stats.ids for t in terms]
        rows: list[tuple[int, str, int, int]] = []
        one = ("SELECT * FROM (SELECT n, term, tf, len FROM memory_postings "
               "WHERE ns = ? AND term = ? ORDER BY n DESC LIMIT ?)")
        for start in range(0, len(pairs), 100):  # SQLite joins at most 500 SELECTs
            part = pairs[start:start + 100]
            rows.extend((int(n), str(t), int(tf), int(ln)) for n, t, tf, ln in tx.all(
                " UNION ALL ".join(one for _ in part),
                [x for ns, t in part for x in (ns, t, window)]))
        keep = set(sorted({r[0] for r in rows}, reverse=True)[:window])
        if q.filtered and keep:
            passing: set[int] = set()
            ordered = sorted(keep)
            for start in range(0, len(ordered), 500):
                chunk = ordered[start:start + 500]
                passing.update(int(r[0]) for r in tx.all(
                    f"SELECT e.n FROM memory_entries e WHERE e.n IN ({_marks(chunk)}) "
                    f"AND {q.where}", (*chunk, *q.params)))
            keep = passing
        scores: dict[int, float] = {}
        avgdl = q.stats.avgdl
        for n, term, tf, length in sorted(rows, key=lambda r: (r[0], r[1])):
            if n in keep:
                scores[n] = scores.get(n, 0.0) + bm25(q.idf[term], tf, length, avgdl)
        return best(scores, limit)


SQLITE = _SQLite()
