"""PostgreSQL's reads for full-text search (:mod:`agentd.store._fulltext`), and its
planner statistics.

An entry's ``text_terms`` is a ``tsvector`` of its terms (:mod:`agentd.store._text`)
whose positions count each one; a GIN index finds the entries holding a term. To read
a few terms' counts out of an entry, its ``tsvector`` is cut to those terms
(``setweight`` marks them, ``ts_filter`` keeps what is marked) before it is unnested:
unnesting every term of every match cost 25 ms for 3,500 matches. Every term is a
parameter (cast to ``tsquery`` with ``quote_literal``): no text a user types is read
as query syntax.

The test server runs with autovacuum off, and without statistics the planner takes
a large namespace for a small one (it compared a query with every vector of a
100,000-entry namespace instead of walking the HNSW index: 176 ms instead of 5).
So the daemon analyzes ``memory_entries`` and ``memory_pgvec`` itself when they are
large and their statistics missing or stale (:func:`analyze_if_stale`, looked at
once a minute after a write or a search: :class:`Statistics`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

from agentd.store._fulltext import Query, Side, best, score_sql
from agentd.store.engine import Tx

__all__ = ["ANALYZE_ABOVE", "POSTGRES", "TTL", "Statistics", "analyze_if_stale"]

#: Seconds between two looks at whether the tables need analyzing.
TTL = 60.0
#: Tables of at most this many rows are left to the server (or to no one).
ANALYZE_ABOVE = 20_000

_TF = "array_length(u.positions, 1)"


def _tsquery(terms: Sequence[str]) -> str:
    return " || ".join("quote_literal(?)::tsquery" for _ in terms)


def _cut(column: str) -> str:
    """The rows of ``column``'s terms among a ``text[]`` parameter."""
    return f"unnest(ts_filter(setweight({column}, 'A', ?::text[]), '{{a}}')) u"


class _Postgres(Side):
    def ranked(self, tx: Tx, q: Query, terms: Sequence[str], limit: int
               ) -> list[tuple[int, float, int]]:
        sql = f"""
WITH m AS MATERIALIZED (SELECT e.n, e.text_len AS len, e.text_terms AS v
      FROM memory_entries e WHERE e.text_terms @@ ({_tsquery(terms)}) AND {q.where})
SELECT m.n, SUM({score_sql(_TF, 'm.len', '::float8')}) AS score, MAX(m.len)
FROM m CROSS JOIN LATERAL {_cut('m.v')}
JOIN unnest(?::text[], ?::float8[]) AS w(term, idf) ON w.term = u.lexeme
GROUP BY m.n ORDER BY score DESC, m.n DESC LIMIT ?"""
        rows = tx.all(sql, (*terms, *q.params, q.stats.avgdl, list(terms), list(terms),
                            [q.idf[t] for t in terms], limit))
        return [(int(r[0]), float(r[1]), int(r[2])) for r in rows]

    def counts(self, tx: Tx, q: Query, keys: Sequence[int], terms: Sequence[str]
               ) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        if not keys:
            return out
        for n, term, tf in tx.all(
                f"SELECT e.n, u.lexeme, {_TF} FROM memory_entries e "
                f"CROSS JOIN LATERAL {_cut('e.text_terms')} WHERE e.n = ANY(?)",
                (list(terms), list(keys))):
            out.setdefault(int(n), {})[str(term)] = int(tf)
        return out

    def newest(self, tx: Tx, q: Query, terms: Sequence[str], window: int, limit: int
               ) -> list[tuple[int, float]]:
        names = list(q.names)
        marks = ", ".join("?" for _ in names)
        # The window is the namespaces' newest entries holding a term; filters apply
        # to it afterwards (as on SQLite).
        passing = (f" JOIN memory_entries e ON e.n = m.n WHERE {q.where}" if q.filtered
                   else "")
        sql = f"""
WITH m AS MATERIALIZED (SELECT e.n, e.text_len AS len, e.text_terms AS v
      FROM memory_entries e WHERE e.text_terms @@ ({_tsquery(terms)})
      AND e.namespace IN ({marks}) ORDER BY e.n DESC LIMIT {int(window)}),
k AS MATERIALIZED (SELECT m.* FROM m{passing})
SELECT k.n, SUM({score_sql(_TF, 'k.len', '::float8')}) AS score
FROM k CROSS JOIN LATERAL {_cut('k.v')}
JOIN unnest(?::text[], ?::float8[]) AS w(term, idf) ON w.term = u.lexeme
GROUP BY k.n ORDER BY score DESC, k.n DESC LIMIT ?"""
        rows = tx.all(sql, (*terms, *names, *(q.params if q.filtered else ()),
                            q.stats.avgdl, list(terms), list(terms),
                            [q.idf[t] for t in terms], limit))
        return best({int(r[0]): float(r[1]) for r in rows}, limit)


POSTGRES = _Postgres()


# -- planner statistics ----------------------------------------------------------------------


class Statistics:
    """When the memory tables were last looked at (one per store; searches on several
    threads share it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = -math.inf

    def due(self) -> bool:
        """Whether :func:`analyze_if_stale` should look at the tables again (once a
        :data:`TTL`)."""
        now = self._clock()
        with self._lock:
            if now - self._checked_at < TTL:
                return False
            self._checked_at = now
            return True


#: A table's size, changes since its statistics, and whether it was ever analyzed
#: (``reltuples`` alone does not say: building an index sets them); no row: no table.
_STATE = """
SELECT GREATEST(c.reltuples, 0)::float8, COALESCE(t.n_live_tup, 0)::float8,
       COALESCE(t.n_mod_since_analyze, 0)::float8,
       COALESCE(t.last_analyze, t.last_autoanalyze) IS NOT NULL
FROM pg_class c LEFT JOIN pg_stat_user_tables t ON t.relid = c.oid
WHERE c.oid = to_regclass(?)"""


def analyze_if_stale(tx: Tx) -> bool:
    """``ANALYZE`` ``memory_entries`` and ``memory_pgvec`` (pgvector's copy of the
    vectors) when one is over :data:`ANALYZE_ABOVE` rows and has no statistics, or a
    fifth of it changed since they were taken (what autovacuum would do, for servers
    where it is off). Each takes its own snapshot and a lock only another ANALYZE or
    VACUUM waits for; about 0.1-0.3 s at 100,000 entries (it samples 30,000 rows at
    any size). Returns whether either was analyzed."""
    analyzed = False
    for table in ("memory_entries", "memory_pgvec"):
        row = tx.one(_STATE, (table,))
        if row is None:
            continue
        reltuples, live, modified, done = row
        rows = max(float(reltuples), float(live))
        if not done:
            # The server's counts lag its writes by up to seconds: count, up to the size.
            counted = tx.one(f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT ?) t",
                             (ANALYZE_ABOVE + 1,))
            rows = max(rows, float(counted[0]) if counted else 0.0)
        if rows > ANALYZE_ABOVE and (not done or float(modified) > rows / 5):
            tx.execute(f"ANALYZE {table}")
            analyzed = True
    return analyzed
