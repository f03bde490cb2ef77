"""Memory's full-text side in a large namespace, in-process, on either store: one JSON line.

    PYTHONPATH=src .venv/bin/python bench/fulltext.py --store sqlite:///<home>/agentd.db
    PYTHONPATH=src .venv/bin/python bench/fulltext.py \\
        --store postgresql://postgres@127.0.0.1:5432/membench31_pg

Against a database bench/memory.py filled (the largest namespace), each of
bench/_memory_data.py's questions is searched through the store's own function
(``entries.fulltext``: BM25 with the namespace's own statistics, bounded work above
``_fulltext.BUDGET`` term matches), in one read transaction, without HTTP or an
embedder. Reported: ms per search (p50/p95/p99), how often each path was taken, and
against the reference, every match ranked (the same function with no budget): the
share of the reference's top 10 found in the search's own top 10, and the
reference's scores of the search's top 10 summed, as a share of the reference's own
(the set repeats each sentence hundreds of times, so many entries tie and the first
figure is partly the order of ties; the second says whether what was found is as
good). ``--stats`` times reading the statistics alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _memory_data as data
from agentd.store import _fulltext, _text, open_store
from agentd.store import entries as _entries
from agentd.store.engine import Tx


def pct(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {f"p{p}_ms": round(s[min(len(s) - 1, int(len(s) * p / 100))], 2)
            for p in (50, 95, 99)}


def path_of(tx: Tx, names: list[str], query: str) -> str:
    """Which way the search takes for ``query`` (from the statistics alone)."""
    terms = _entries.query_terms(query)
    stats = _text.read_stats(tx, names, terms)
    total = sum(stats.df.get(t, 0) for t in terms)
    if total <= _fulltext.BUDGET:
        return "every_match"
    rarest = min((stats.df[t] for t in terms if stats.df.get(t)), default=0)
    return "rarest_terms" if rarest <= _fulltext.BUDGET else "newest_only"


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    store = await open_store(args.store)
    try:
        row = await store.engine.read(lambda tx: tx.one(
            "SELECT namespace, docs FROM memory_text_ns ORDER BY docs DESC LIMIT 1"))
        assert row is not None, "no entries: fill with bench/memory.py first"
        names, size = [str(row[0])], int(row[1])
        dialect = store.dialect
        queries = data.questions()
        out: dict[str, Any] = {"bench": "fulltext", "store": dialect, "entries": size,
                               "queries": len(queries),
                               "loadavg_1m_start": round(os.getloadavg()[0], 2)}
        paths: dict[str, int] = {}
        for q in queries:
            p = await store.engine.read(lambda tx, q=q: path_of(tx, names, q))
            paths[p] = paths.get(p, 0) + 1
        out["paths"] = paths
        budget = _fulltext.BUDGET
        _fulltext.BUDGET = 10**9  # the reference: every match ranked
        try:
            scores = {q: dict(await store.engine.read(lambda tx, q=q: _entries.fulltext(
                tx, names, q, None, 1000, dialect))) for q in queries}
        finally:
            _fulltext.BUDGET = budget
        ref = {q: set(list(s)[:10]) for q, s in scores.items()}
        best = sum(sum(list(s.values())[:10]) for s in scores.values())
        times: list[float] = []
        found = 0
        got = 0.0
        for _ in range(args.rounds):
            for q in queries:
                t0 = time.perf_counter()
                hits = await store.engine.read(lambda tx, q=q: _entries.fulltext(
                    tx, names, q, None, 10, dialect))
                times.append((time.perf_counter() - t0) * 1000)
                found += len(ref[q] & {n for n, _ in hits})
                floor = min(scores[q].values(), default=0.0)
                got += sum(scores[q].get(n, floor) for n, _ in hits)
        out["search"] = {**pct(times), "top10_of_every_match": round(
            found / (args.rounds * sum(len(r) for r in ref.values())), 4),
            "score_of_top10": round(got / (args.rounds * best), 4)}
        if args.stats:
            st: list[float] = []
            for q in queries:
                terms = _entries.query_terms(q)
                t0 = time.perf_counter()
                await store.engine.read(lambda tx, t=terms: _text.read_stats(tx, names, t))
                st.append((time.perf_counter() - t0) * 1000)
            out["statistics"] = pct(st)
    finally:
        await store.close()
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="a database bench/memory.py filled")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the questions")
    ap.add_argument("--stats", action="store_true", help="time the statistics' read too")
    args = ap.parse_args()
    print(orjson.dumps(asyncio.run(amain(args))).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
