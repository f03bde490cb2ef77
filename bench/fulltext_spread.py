"""Memory's full-text side with entries spread over many namespaces, in-process: one JSON line.

    PYTHONPATH=src .venv/bin/python bench/fulltext_spread.py --store sqlite:///<file>
    PYTHONPATH=src .venv/bin/python bench/fulltext_spread.py \\
        --store postgresql://postgres@127.0.0.1:5432/<a fresh database>

Fills an empty store (text only: no embedder) with ``--entries`` of
bench/_memory_data.py's entries spread round-robin over ``--namespaces`` agents'
namespaces (or reuses what a previous run left), then searches one namespace at a
time with bench/_memory_data.py's questions through the store's own function
(``entries.fulltext``, limit 10, one read transaction each): ms p50 / p95 / p99, and
the fill's entries/s. With ``--namespaces 1`` it is the one large namespace of
bench/fulltext.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _memory_data as data
from agentd.store import entries as _entries
from agentd.store import open_store
from agentd.store.entries import NewEntry


def pct(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {f"p{p}_ms": round(s[min(len(s) - 1, int(len(s) * p / 100))], 2)
            for p in (50, 95, 99)}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    store = await open_store(args.store)
    names = [f"agent:spread{i:05d}" for i in range(args.namespaces)]
    out: dict[str, Any] = {"bench": "fulltext_spread", "store": store.dialect,
                           "entries": args.entries, "namespaces": args.namespaces,
                           "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    try:
        have = await store.engine.read(lambda tx: tx.one(
            "SELECT COUNT(*) FROM memory_entries"))
        if not have or int(have[0]) == 0:
            texts, _ = data.entries(args.entries, data.pool())
            t0 = time.perf_counter()
            for start in range(0, len(texts), 1000):
                await store.insert_entries([
                    NewEntry(namespace=names[(start + i) % len(names)], content=t)
                    for i, t in enumerate(texts[start:start + 1000])])
            out["fill_entries_per_s"] = round(len(texts) / (time.perf_counter() - t0))
        rng = random.Random(5)
        queries = data.questions()
        dialect = store.dialect
        times: list[float] = []
        found = 0
        for _ in range(args.rounds):
            for q in queries:
                space = [rng.choice(names)]
                t0 = time.perf_counter()
                hits = await store.engine.read(lambda tx, q=q, s=space: _entries.fulltext(
                    tx, s, q, None, 10, dialect))
                times.append((time.perf_counter() - t0) * 1000)
                found += bool(hits)
        out["search"] = {**pct(times), "with_hits": round(found / len(times), 3)}
    finally:
        await store.close()
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="an empty database (or a previous run's)")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the questions")
    args = ap.parse_args()
    print(orjson.dumps(asyncio.run(amain(args))).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
