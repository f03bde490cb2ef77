"""Full-text search of memory entries: BM25 with the namespaces' own statistics, bounded.

One implementation for both stores: the terms, statistics and postings of
:mod:`agentd.store._text`, read with the same SQL, so the same entries rank the same
way on SQLite and on PostgreSQL. The statistics say exactly how many entries of the
searched namespaces hold each term before anything is read:

- **Every match ranked** when the query's terms are held by at most :data:`BUDGET`
  entries together (most searches: every search of a namespace of a few thousand
  entries): exact BM25 over every entry holding any of them.
- **Otherwise** the terms are taken rarest first while their entries add up to no
  more than the budget; the entries holding those are ranked by BM25 over every term
  of the query (the other terms' postings in them are read by key): the exact best
  of them. An entry holding only common terms could score more (at most the common
  terms' IDFs times ``k1 + 1``), but ranking those is what the budget forbids;
  adding the newest of them when that bound was not met changed nothing measured
  (docs/design-notes.md). When that finds too few (every term common, or filters
  leaving too few), the newest :data:`NEWEST` entries of the namespaces holding any
  term are ranked too, and the two lists merged by score. Only when even that leaves
  fewer than asked for (filters that keep very little) is every match ranked.

Filters choose which entries may be returned; they are applied to what is ranked and
never change the statistics. Every term is a bound parameter: no text a user types
is read as query syntax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentd.store import _text
from agentd.store._text import K1, B
from agentd.store.engine import Tx

__all__ = ["BUDGET", "DECIMALS", "NEWEST", "bm25", "rounded", "search"]

#: The most term matches one search ranks in full.
BUDGET = 5000
#: The newest entries holding any term, ranked when the rarest terms find too few.
NEWEST = 2000


def bm25(idf: float, tf: int, length: int, avgdl: float) -> float:
    """One term's share of an entry's score (what the SQL below computes)."""
    return idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * (length / avgdl)))


#: Scores are rounded to this many decimals before they are ranked: the two
#: databases add an entry's terms in their own order, and sums equal but for the last
#: bit must not rank differently on each (ties go to the newest entry).
DECIMALS = 9
_SCALE = 1_000_000_000  # 10 ** DECIMALS


def rounded(score: float) -> float:
    return round(score * _SCALE) / _SCALE


#: :func:`bm25` in SQL, ``w.idf`` the term's IDF and the average length a parameter.
#: ``p.len / ?`` comes first so that PostgreSQL computes in float8 throughout (as
#: SQLite does), never in ``numeric``.
_SCORE = (f"w.idf * p.tf * {K1 + 1} / (p.tf + {K1} * ({1 - B} + {B} * "
          "(p.len / CAST(? AS DOUBLE PRECISION))))")


def search(tx: Tx, names: Sequence[str], terms: Sequence[str], where: str,
           params: Sequence[Any], filtered: bool, limit: int) -> list[tuple[int, float]]:
    """``(n, BM25)`` of the best entries of ``names`` holding any of ``terms``
    (distinct, from :func:`agentd.store._text.query_terms`), best first (ties: the
    newest first).

    ``where`` and ``params``: SQL conditions on ``memory_entries e`` (the namespaces
    and any filters); ``filtered``: whether there are filters beyond the namespaces.
    """
    stats = _text.read_stats(tx, names, terms)
    present = [t for t in terms if stats.df.get(t)]
    if not present:
        return []
    q = _Query(stats.ids, stats.avgdl, {t: stats.idf(t) for t in present},
               where if filtered else None, params)
    if sum(stats.df[t] for t in present) <= BUDGET:
        return _ranked(tx, q, present, present, limit)
    chosen: list[str] = []
    total = 0
    for term in sorted(present, key=lambda t: (stats.df[t], t)):
        if total + stats.df[term] > BUDGET:
            break
        chosen.append(term)
        total += stats.df[term]
    found: dict[int, float] = {}
    if chosen:
        found.update(_ranked(tx, q, chosen, present, limit))
        if len(found) >= limit:
            return _best(found, limit)
    # Terms too common to rank all their matches: the newest matches are ranked too.
    found.update(_newest(tx, q, present, NEWEST, limit))
    if len(found) >= limit:
        return _best(found, limit)
    # Too few passed the filters among what was ranked: every match.
    return _ranked(tx, q, present, present, limit)


class _Query:
    """What the SQL needs of one search: the namespaces' keys in the text tables, the
    average length, each term's IDF, and the filters (None: none)."""

    __slots__ = ("avgdl", "filters", "idf", "ids", "params")

    def __init__(self, ids: Sequence[int], avgdl: float, idf: Mapping[str, float],
                 filters: str | None, params: Sequence[Any]) -> None:
        self.ids, self.avgdl, self.idf = ids, avgdl, idf
        self.filters, self.params = filters, params

    def weights(self, terms: Sequence[str]) -> tuple[str, list[Any]]:
        """The terms and their IDFs as a table ``w(term, idf)``, and its parameters."""
        sql = "w(term, idf) AS (VALUES " + ", ".join("(?, ?)" for _ in terms) + ")"
        return sql, [x for t in terms for x in (t, self.idf[t])]

    def passing(self, column: str, where: str = "WHERE") -> tuple[str, list[Any]]:
        """The join that keeps entries passing the filters (its conditions after
        ``where``: "WHERE", or "AND" to add them to the join's own), and its
        parameters."""
        if self.filters is None:
            return "", []
        return (f" JOIN memory_entries e ON e.n = {column} {where} {self.filters}",
                list(self.params))


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _best(scores: Mapping[int, float], limit: int) -> list[tuple[int, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], -kv[0]))[:limit]


def _ranked(tx: Tx, q: _Query, match: Sequence[str], terms: Sequence[str], limit: int
            ) -> list[tuple[int, float]]:
    """``(n, BM25 over terms)`` of the best ``limit`` entries passing the filters that
    hold any of ``match`` (some of ``terms``), best first: their postings of every
    term, read by the primary key (namespace, term, entry)."""
    ids = _marks(q.ids)
    weights, wparams = q.weights(terms)
    if list(match) == list(terms):
        join, jparams = q.passing("p.n")
        # Every posting of the terms: one range of the key per namespace and term.
        sql = (f"WITH {weights} SELECT p.n, ROUND(SUM({_SCORE}) * {_SCALE}) AS score "
               f"FROM w JOIN memory_postings p ON p.ns IN ({ids}) AND p.term = w.term"
               f"{join} GROUP BY p.n ORDER BY score DESC, p.n DESC LIMIT ?")
        args = (*wparams, q.avgdl, *q.ids, *jparams, limit)
    else:
        # The entries holding a ``match`` term first, then each one's posting of every
        # term by key: a plan that starts from the other (common) terms' postings read
        # all of them, and took 100 ms at 100,000 entries on PostgreSQL.
        join, jparams = q.passing("p.n", "AND")
        sql = (f"WITH {weights}, c AS MATERIALIZED (SELECT DISTINCT p.n FROM "
               f"memory_postings p{join} WHERE p.ns IN ({ids}) AND p.term IN "
               f"({_marks(match)})) "
               f"SELECT p.n, ROUND(SUM({_SCORE}) * {_SCALE}) AS score FROM c CROSS JOIN w "
               f"JOIN memory_postings p ON p.ns IN ({ids}) AND p.term = w.term "
               "AND p.n = c.n GROUP BY p.n ORDER BY score DESC, p.n DESC LIMIT ?")
        args = (*wparams, *jparams, *q.ids, *match, q.avgdl, *q.ids, limit)
    rows = tx.all(sql, args)
    return [(int(r[0]), float(r[1]) / _SCALE) for r in rows]


def _newest(tx: Tx, q: _Query, terms: Sequence[str], window: int, limit: int
            ) -> list[tuple[int, float]]:
    """Of the newest ``window`` entries of the namespaces holding any of ``terms``, the
    best ``limit`` passing the filters, by BM25 over ``terms``.

    Those entries are among the union of each (namespace, term)'s newest ``window``
    postings, and each of them has a row there for every term it holds: so that union,
    cut to its newest ``window`` entries, is all that is read."""
    pairs = [(ns, t) for ns in q.ids for t in terms]
    rows: list[tuple[int, str, int, int]] = []
    one = ("SELECT * FROM (SELECT n, term, tf, len FROM memory_postings "
           "WHERE ns = ? AND term = ? ORDER BY n DESC LIMIT ?) t")
    for start in range(0, len(pairs), 100):  # SQLite joins at most 500 SELECTs
        part = pairs[start:start + 100]
        rows.extend((int(n), str(t), int(tf), int(ln)) for n, t, tf, ln in tx.all(
            " UNION ALL ".join(one for _ in part),
            [x for ns, t in part for x in (ns, t, window)]))
    keep = set(sorted({r[0] for r in rows}, reverse=True)[:window])
    if q.filters is not None and keep:
        passing: set[int] = set()
        ordered = sorted(keep)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            passing.update(int(r[0]) for r in tx.all(
                f"SELECT e.n FROM memory_entries e WHERE e.n IN ({_marks(chunk)}) "
                f"AND {q.filters}", (*chunk, *q.params)))
        keep = passing
    scores: dict[int, float] = {}
    for n, term, tf, length in sorted(rows):
        if n in keep:
            scores[n] = scores.get(n, 0.0) + bm25(q.idf[term], tf, length, q.avgdl)
    return _best({n: rounded(s) for n, s in scores.items()}, limit)
