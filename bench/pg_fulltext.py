"""PostgreSQL's full-text side in a large namespace, in-process (issue 31): one JSON line.

    PYTHONPATH=src .venv/bin/python bench/pg_fulltext.py \\
        --postgres postgresql://postgres@127.0.0.1:5432/membench_pg [--analyze]

Against a database bench/memory.py filled (one agent, the largest namespace), each
of bench/_memory_data.py's questions is searched three ways through the store's own
functions, in one read transaction each, without HTTP or an embedder: the
daemon's search (``entries.fulltext``: the bounded BM25 of ``store/_pg_fulltext.py``
above 20,000 entries), ``ts_rank_cd`` over every match (the search before it), and
the reference, exact BM25 over every match with the namespace's own statistics
(``entries._pg_bm25``, what namespaces of up to 20,000 entries get). Reported: ms
per search (p50/p95/p99) of the first two, the share of the reference's top 10 each
one finds in its own top 10, and the exact BM25 scores of its top 10 summed, as a
share of the reference's (the set repeats each sentence hundreds of times, so many
entries tie and the first figure is partly the order of ties; the second says
whether what was found is as good). ``--analyze`` runs ``ANALYZE memory_entries``
first; without it the table keeps whatever statistics it has (none: the sampled
frequencies are measured).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _memory_data as data
from agentd.store import _pg_fulltext, open_store
from agentd.store import entries as _entries
from agentd.store.engine import Tx


def pct(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {f"p{p}_ms": round(s[min(len(s) - 1, int(len(s) * p / 100))], 2)
            for p in (50, 95, 99)}


def ts_rank_cd(tx: Tx, names: Sequence[str], query: str, limit: int
               ) -> list[tuple[int, float]]:
    """The full-text side before issue 31's bounded search: every match ranked."""
    where, params = _entries._where(list(names), None, "postgresql")
    lexemes = _lexemes(tx, query)
    if not lexemes:
        return []
    tsquery = " || ".join("quote_literal(?)::tsquery" for _ in lexemes)
    rows = tx.all(
        f"SELECT e.n, ts_rank_cd(e.content_tsv, q.q) AS score FROM memory_entries e, "
        f"(SELECT {tsquery} AS q) q WHERE e.content_tsv @@ q.q AND {where} "
        "ORDER BY score DESC, e.n DESC LIMIT ?", (*lexemes, *params, limit))
    return [(int(r[0]), float(r[1])) for r in rows]


def exact(tx: Tx, names: Sequence[str], query: str, limit: int) -> list[tuple[int, float]]:
    where, params = _entries._where(list(names), None, "postgresql")
    lexemes = _lexemes(tx, query)
    return _entries._pg_bm25(tx, lexemes, lexemes, where, params, limit) if lexemes else []


def _lexemes(tx: Tx, query: str) -> list[str]:
    terms = _entries.query_terms(query)
    return [str(r[0]) for r in tx.all(
        "SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', ?))) ORDER BY 1",
        (" ".join(terms),))][:64]


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    if args.analyze:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            t0 = time.perf_counter()
            conn.execute("ANALYZE memory_entries")
            analyze_ms = round((time.perf_counter() - t0) * 1000, 1)
    with psycopg.connect(args.postgres) as conn:
        row = conn.execute("SELECT namespace, COUNT(*) FROM memory_entries GROUP BY 1 "
                           "ORDER BY 2 DESC LIMIT 1").fetchone()
        assert row is not None, "no entries: fill with bench/memory.py first"
        names, size = [str(row[0])], int(row[1])
    store = await open_store(args.postgres)
    stats = _pg_fulltext.Stats()
    queries = data.questions()
    out: dict[str, Any] = {"bench": "pg_fulltext", "entries": size,
                           "queries": len(queries), "analyzed_first": args.analyze,
                           "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    if args.analyze:
        out["analyze_ms"] = analyze_ms
    ways: dict[str, Callable[[Tx, str], list[tuple[int, float]]]] = {
        "bounded": lambda tx, q: _entries.fulltext(tx, names, q, None, 10, "postgresql",
                                                   stats),
        "ts_rank_cd": lambda tx, q: ts_rank_cd(tx, names, q, 10)}
    try:
        # Exact BM25's scores of its best 1,000 (an entry below them: the 1,000th's).
        scores = {q: dict(await store.engine.read(lambda tx, q=q: exact(tx, names, q, 1000)))
                  for q in queries}
        ref = {q: set(list(s)[:10]) for q, s in scores.items()}
        best = sum(sum(list(s.values())[:10]) for s in scores.values())
        for name, way in ways.items():
            times: list[float] = []
            found = 0
            got = 0.0
            for _ in range(args.rounds):
                for q in queries:
                    t0 = time.perf_counter()
                    hits = await store.engine.read(lambda tx, q=q, way=way: way(tx, q))
                    times.append((time.perf_counter() - t0) * 1000)
                    found += len(ref[q] & {n for n, _ in hits})
                    floor = min(scores[q].values(), default=0.0)
                    got += sum(scores[q].get(n, floor) for n, _ in hits)
            out[name] = {**pct(times), "top10_of_exact_bm25": round(
                found / (args.rounds * sum(len(r) for r in ref.values())), 4),
                "exact_bm25_score_of_top10": round(got / (args.rounds * best), 4)}
    finally:
        await store.close()
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", required=True, help="a database bench/memory.py filled")
    ap.add_argument("--analyze", action="store_true", help="ANALYZE memory_entries first")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the questions")
    args = ap.parse_args()
    print(orjson.dumps(asyncio.run(amain(args))).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
