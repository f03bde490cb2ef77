"""PostgreSQL's planner statistics of the memory tables, kept where the server does not.

The test server runs with autovacuum off, and without statistics the planner takes
a large namespace for a small one (it compared a query with every vector of a
100,000-entry namespace instead of walking the HNSW index: 176 ms instead of 5).
So the daemon analyzes ``memory_entries``, ``memory_postings`` and ``memory_pgvec``
itself when they are large and their statistics missing or stale
(:func:`analyze_if_stale`, looked at once a minute after a write or a search:
:class:`Statistics`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from agentd.store.engine import Tx

__all__ = ["ANALYZE_ABOVE", "TTL", "Statistics", "analyze_if_stale"]

#: Seconds between two looks at whether the tables need analyzing.
TTL = 60.0
#: Tables of at most this many rows are left to the server (or to no one).
ANALYZE_ABOVE = 20_000


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
    """``ANALYZE`` ``memory_entries``, ``memory_postings`` (full text's) and
    ``memory_pgvec`` (pgvector's copy of the vectors) when one is over
    :data:`ANALYZE_ABOVE` rows and has no statistics, or a fifth of it changed since
    they were taken (what autovacuum would do, for servers where it is off). Each
    takes its own snapshot and a lock only another ANALYZE or VACUUM waits for; about
    0.1-0.3 s at 100,000 entries (it samples 30,000 rows at any size). Returns
    whether one was analyzed."""
    analyzed = False
    for table in ("memory_entries", "memory_postings", "memory_pgvec"):
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
