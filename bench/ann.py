"""The memory vector index (agentd.memory.index) at 10k and 100k vectors: one JSON line.

    PYTHONPATH=src .venv/bin/python bench/ann.py                       # 10k, 100k
    PYTHONPATH=src .venv/bin/python bench/ann.py --sizes 1000000 --kinds clustered

Per size and kind of data: the bulk build (every vector in one add, the HNSW graph
built with AnnParams.threads), incremental add throughput (batches of 1,000 into the
built index), exact and HNSW query latency p50/p95/p99 (one query at a time, k=10),
HNSW with a filter allowing half the keys, recall@10 of HNSW against the exact scan,
save and load time, file size, and the process's RSS.

Kinds: ``clustered`` is 1,000 gaussian centres plus gaussian noise of the same scale
(cosine within a cluster about 0.5, across about 0), normalised, queries drawn the same
way: text embeddings have such structure. ``uniform`` is normalised gaussian noise, and
the queries too: every point is about as far as every other, so the 10 nearest are
barely nearer than the rest; no graph index finds them without visiting a large share
of the points, and the recall shown there (with an ef_search sweep) is a floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agentd.memory.index import AnnParams, VectorIndex


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def data(kind: str, n: int, dim: int, rng: np.random.Generator,
         centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):  # in chunks: 1M x 384 is 1.5 GB already
        m = min(100_000, n - s)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        if kind == "clustered":
            x += centres[rng.integers(0, len(centres), m)]
        out[s:s + m] = unit(x)
    return out


def pct(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat) * 1e3
    return {f"p{p}_ms": round(float(np.percentile(a, p)), 3) for p in (50, 95, 99)}


def timed(ix: VectorIndex, queries: np.ndarray, k: int, allow: np.ndarray | None = None
          ) -> tuple[list[list[int]], list[float]]:
    res, lat = [], []
    for q in queries:
        t = time.perf_counter()
        got = ix.search(q, k, allow=allow)
        lat.append(time.perf_counter() - t)
        res.append([key for key, _ in got])
    return res, lat


def recall(got: list[list[int]], truth: list[list[int]]) -> float:
    return round(sum(len(set(g) & set(t)) for g, t in zip(got, truth, strict=True))
                 / sum(len(t) for t in truth), 4)


def one(n: int, kind: str, args: argparse.Namespace, params: AnnParams) -> dict[str, Any]:
    rng = np.random.default_rng(n + len(kind))
    centres = rng.standard_normal((1000, args.dim), dtype=np.float32)
    vecs = data(kind, n, args.dim, rng, centres)
    queries = data(kind, args.queries, args.dim, rng, centres)
    extra = data(kind, 10_000, args.dim, rng, centres)
    keys = np.arange(n, dtype=np.int64)
    row: dict[str, Any] = {"n": n, "kind": kind}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ns.idx"
        ix = VectorIndex(args.dim, ann_threshold=args.threshold, path=path,
                         ann_params=params)
        t = time.perf_counter()
        ix.add(keys, vecs)
        row["build_s"] = round(time.perf_counter() - t, 2)
        row["approximate"] = ix.approximate
        t = time.perf_counter()
        for s in range(0, len(extra), 1000):
            ix.add(np.arange(n + s, n + s + 1000), extra[s:s + 1000])
        row["add_per_s"] = round(len(extra) / (time.perf_counter() - t))
        ix.remove(range(n, n + len(extra)))
        row["rss_mb"] = rss_mb()

        threshold, ix.ann_threshold = ix.ann_threshold, n + len(extra) + 1  # exact scan
        truth, lat = timed(ix, queries, 10)
        row["exact"] = pct(lat)
        half = keys[::2]
        truth_half, _ = timed(ix, queries, 10, allow=half)
        ix.ann_threshold = threshold
        if ix.approximate:
            got, lat = timed(ix, queries, 10)
            row["ann"] = {**pct(lat), "recall_at_10": recall(got, truth)}
            got, lat = timed(ix, queries, 10, allow=half)
            row["ann_allow_half"] = {**pct(lat), "recall_at_10": recall(got, truth_half)}
            graph = ix._graph.index  # type: ignore[union-attr]  # a bench may peek
            sweep = {}
            for ef in args.ef_sweep:
                graph.set_ef(ef)
                got, lat = timed(ix, queries, 10)
                sweep[ef] = {"p95_ms": pct(lat)["p95_ms"], "recall_at_10": recall(got, truth)}
            graph.set_ef(params.ef_search)
            if sweep:
                row["ef_sweep"] = sweep

        t = time.perf_counter()
        ix.save()
        row["save_s"] = round(time.perf_counter() - t, 2)
        row["file_mb"] = round(sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20, 1)
        del ix
        t = time.perf_counter()
        back = VectorIndex.load(path, args.dim, ann_threshold=args.threshold,
                                ann_params=params)
        row["load_s"] = round(time.perf_counter() - t, 2)
        assert back is not None and len(back) == n
        got, _ = timed(back, queries[:20], 10)
        row["loaded_same"] = got == timed(back, queries[:20], 10)[0]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--kinds", default="clustered,uniform")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threshold", type=int, default=0,
                    help="ann_threshold (0: the graph is built at every size)")
    ap.add_argument("--m", type=int, default=AnnParams.m)
    ap.add_argument("--ef-construction", type=int, default=AnnParams.ef_construction)
    ap.add_argument("--ef-search", type=int, default=AnnParams.ef_search)
    ap.add_argument("--ef-sweep", default="",
                    help="extra ef_search values to measure, e.g. 64,256,1024")
    args = ap.parse_args()
    args.ef_sweep = [int(x) for x in args.ef_sweep.split(",") if x]
    params = AnnParams(m=args.m, ef_construction=args.ef_construction,
                       ef_search=args.ef_search)
    results = [one(int(n), kind, args, params) for n in args.sizes.split(",")
               for kind in args.kinds.split(",")]
    print(json.dumps({"bench": "ann", "dim": args.dim, "queries": args.queries,
                      "params": {"m": params.m, "ef_construction": params.ef_construction,
                                 "ef_search": params.ef_search, "threads": params.threads},
                      "python": sys.version.split()[0], "results": results}))


if __name__ == "__main__":
    main()
