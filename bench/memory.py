"""Long-term memory over HTTP against a real daemon (issue 13): one JSON line.

    PYTHONPATH=src .venv/bin/python bench/memory.py                         # 10k, 100k
    PYTHONPATH=src .venv/bin/python bench/memory.py --sizes 10000,100000,1000000
    PYTHONPATH=src .venv/bin/python bench/memory.py --only quality
    ... --postgres postgresql://postgres@127.0.0.1:5432/bench   # instead of SQLite

Phases (``--only`` picks some), on a daemon started here (``python -m agentd serve``,
fresh AGENTD_HOME, SQLite unless ``--postgres``), one agent ``mem`` growing through
``--sizes``:

- **fill**: entries (an opener and two chat sentences, bench/_memory_data.py) go in
  through ``POST .../memory/entries`` in batches of 1,000, one client: acknowledged
  entries/s. The daemon embeds a batch before acknowledging it (issue 31); the bench
  still polls the store for entries without a vector (read-only SQL) and reports
  embedded entries/s, from the first batch sent to the last entry embedded, and how
  long after the last acknowledgement that was (0 unless a write's embedding failed).
- **latency**: ``POST .../memory/search`` with realistic questions, one at a time,
  embedded by the daemon per query (part of the latency): p50/p95/p99 for the default
  hybrid search, and for full text only and vectors only. The first search after a
  size is reached is timed apart (it brings the namespace's index up to date), then
  ``--warmup`` searches (10) are not timed.
- **ann**: recall@10 of the daemon's vector search (``vector_weight: 1``; its HNSW
  index above ``[memory] ann_threshold``, 20,000) against an exact scan of the store's
  vectors with the same query vector, computed here.
- **autorecall** (at the first size): ms per turn with the scripted model, blocks of
  turns with ``settings.memory.auto_recall`` off and on alternately, each block on a
  fresh session; the on blocks' events must show what was recalled.
- **quality**: bench/memory_eval.py's set stored verbatim, one agent per user, one
  entry per turn; recall@10 of the evidence per ``vector_weight`` (0: full text only,
  1: vectors only), and RRF (k=60) fused here from the two sides' top 100. Twice: the
  set as built (half the questions paraphrased) and a variant tuned so that BM25 gets
  about 0.65 (as on the public benchmark the project is measured on).

1M is not embedded by the real embedder (about 45 minutes on 2 cores). The shortcut,
reported in the JSON under ``shortcut``: the daemon is restarted with ``[memory]
embedder = "none"`` and the entries past the previous size go in through the API as
above (that is the insert figure at 1M); with the daemon stopped, this process then
gives every pending entry a vector through the store's own ``put_vectors`` (the call
the daemon's embedder makes): the normalised sum of the real MiniLM vectors of the
entry's two sentences plus a little noise. The index files are deleted (derived data)
and the daemon restarted with the default embedder, so the index build and every
search after it are the daemon's own.

Progress goes to stderr; stdout gets one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

import _memory_data as data
import memory_eval as me
from _load import ServerProcess, free_port, info, wait_ready

EMBEDDER = "onnx:all-minilm-l6-v2-int8"
TOKEN = "bench-token-0123456789abcdef"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
WEIGHTS = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
CLIENT_WEIGHTS = (0.9, 0.95, 0.97, 0.99)
#: The evaluation set's variant whose BM25 recall@10 is about 0.65 (found by a sweep
#: of memory_eval.build's knobs; docs/benchmarks.md): shorter sessions and nearly
#: every question sharing words with its evidence.
TUNED = {"paraphrased": 0.05, "sessions": 12, "turns_per_session": 24}


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {f"p{p}_ms": round(float(np.percentile(a, p)), 2) for p in (50, 95, 99)}


class Daemon:
    """The daemon under test: one home, restarted with other settings when needed."""

    def __init__(self, workdir: Path, database_url: str | None) -> None:
        self.home = workdir / "home"
        self.home.mkdir(exist_ok=True)
        self.workdir = workdir
        self.database_url = database_url or f"sqlite:///{self.home / 'agentd.db'}"
        self.proc: ServerProcess | None = None
        self.base = ""
        self.starts = 0

    async def start(self, http: aiohttp.ClientSession, embedder: str = EMBEDDER) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "AGENTD_HOME": str(self.home), "AGENTD_DEMO_AGENT": "false",
               "AGENTD_TOKEN": TOKEN, "AGENTD_DATABASE_URL": self.database_url,
               "AGENTD_MEMORY": orjson.dumps({"embedder": embedder}).decode()}
        self.starts += 1
        log = self.workdir / f"agentd-{self.starts}.log"
        self.proc = ServerProcess("agentd", [sys.executable, "-m", "agentd", "serve", "--host",
                                             "127.0.0.1", "--port", str(port)], log, env)
        self.proc.start()
        await wait_ready(http, f"{self.base}/health", 120, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            code = self.proc.stop(signal.SIGTERM, timeout_s=600)
            info(f"agentd stopped: exit {code} after {self.proc.shutdown_s or 0:.1f}s")
            self.proc = None

    def entries(self) -> int:
        """Entries already stored (a reused ``--workdir``), read from the store directly."""
        if not self.database_url.startswith("sqlite"):
            import psycopg

            with psycopg.connect(self.database_url) as conn:
                if conn.execute("SELECT to_regclass('memory_entries')").fetchone() == (None,):
                    return 0
                row = conn.execute("SELECT COUNT(*) FROM memory_entries").fetchone()
                return int(row[0]) if row else 0
        path = self.home / "agentd.db"
        if not path.exists():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COUNT(*) FROM memory_entries").fetchone()[0])
        finally:
            db.close()

    def pending(self) -> int:
        """Entries without a vector, read from the store directly (not a search)."""
        sql = "SELECT COUNT(*) FROM memory_entries WHERE embedded_with IS NULL"
        if self.database_url.startswith("sqlite"):
            db = sqlite3.connect(f"file:{self.home / 'agentd.db'}?mode=ro", uri=True)
            try:
                return int(db.execute(sql).fetchone()[0])
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

    def vectors(self, entry_id: str) -> tuple[list[str], np.ndarray]:
        """Every vector of the namespace of entry ``entry_id``, by entry id: the exact
        scan's data."""
        sql = ("SELECT e.id, v.vec FROM memory_vectors v JOIN memory_entries e ON e.n = v.n "
               "WHERE v.namespace = (SELECT namespace FROM memory_entries WHERE id = "
               f"'{entry_id}') AND v.embedder = '{EMBEDDER}'")
        if self.database_url.startswith("sqlite"):
            db = sqlite3.connect(f"file:{self.home / 'agentd.db'}?mode=ro", uri=True)
            try:
                rows = db.execute(sql).fetchall()
            finally:
                db.close()
        else:
            import psycopg

            with psycopg.connect(self.database_url) as conn:
                rows = conn.execute(sql).fetchall()
        ids = [str(r[0]) for r in rows]
        matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4")
        return ids, matrix.reshape(len(ids), -1)


class Api:
    def __init__(self, http: aiohttp.ClientSession, daemon: Daemon) -> None:
        self.http = http
        self.daemon = daemon

    def url(self, path: str) -> str:
        return self.daemon.base + path

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        raw_body = orjson.dumps(body) if body is not None else None
        for attempt in range(2):
            try:
                async with self.http.request(method, self.url(path), data=raw_body,
                                             headers=HEADERS) as resp:
                    raw = await resp.read()
                    break
            except aiohttp.ServerDisconnectedError:
                # A keep-alive connection the server closed as it was reused (idle
                # past uvicorn's keep-alive): the request never reached it.
                if attempt:
                    raise
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {raw[:500]!r}")
        return orjson.loads(raw) if raw else None

    async def agent(self, name: str, settings: dict[str, Any] | None = None) -> None:
        body = {"name": name, "model": "scripted", "settings": settings or {}}
        await self.call("POST", "/v1/agents", body)

    async def add(self, agent: str, texts: list[str]) -> list[str]:
        out = await self.call("POST", f"/v1/agents/{agent}/memory/entries",
                              {"entries": [{"content": t} for t in texts]})
        return [e["id"] for e in out["entries"]]

    async def search(self, agent: str, query: str, limit: int = 10,
                     weight: float | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"query": query, "limit": limit}
        if weight is not None:
            body["vector_weight"] = weight
        return list((await self.call("POST", f"/v1/agents/{agent}/memory/search",
                                     body))["results"])


# -- phases --------------------------------------------------------------------------------


async def all_embedded(daemon: Daemon, poll_s: float = 0.5) -> None:
    """Return once no entry is waiting for a vector."""
    for _ in range(10**7):
        if not await asyncio.to_thread(daemon.pending):
            return
        await asyncio.sleep(poll_s)


async def fill(api: Api, agent: str, texts: list[str], *, embedded: bool) -> dict[str, Any]:
    """Insert ``texts`` in batches of 1,000; with ``embedded``, wait until every one
    has a vector."""
    t0 = time.perf_counter()
    lat: list[float] = []
    for s in range(0, len(texts), 1000):
        t = time.perf_counter()
        await api.add(agent, texts[s:s + 1000])
        lat.append((time.perf_counter() - t) * 1000)
        if (s // 1000) % 50 == 49:
            info(f"  {s + 1000} inserted, {(s + 1000) / (time.perf_counter() - t0):.0f}/s")
    acked = time.perf_counter() - t0
    out: dict[str, Any] = {"entries": len(texts), "insert_s": round(acked, 1),
                           "insert_per_s": round(len(texts) / acked),
                           "batch_1000": pct(lat)}
    if embedded:
        await all_embedded(api.daemon)
        done = time.perf_counter() - t0
        out.update(embed_s=round(done, 1), embedded_per_s=round(len(texts) / done),
                   embed_lag_after_last_ack_s=round(done - acked, 1))
    info(f"  fill: {orjson.dumps(out).decode()}")
    return out


async def latency(api: Api, agent: str, queries: list[str], n: int, warmup: int = 10
                  ) -> dict[str, Any]:
    t = time.perf_counter()
    await api.search(agent, queries[0])
    out: dict[str, Any] = {"first_search_s": round(time.perf_counter() - t, 2),
                           "warmup": warmup}
    for i in range(warmup):  # warm-up
        q = queries[1 + i % (len(queries) - 1)]
        await api.search(agent, q)
    for label, weight in (("hybrid", None), ("text_only", 0.0), ("vector_only", 1.0)):
        lat: list[float] = []
        count = n if label == "hybrid" else max(50, n // 4)
        for i in range(count):
            t = time.perf_counter()
            await api.search(agent, queries[i % len(queries)], weight=weight)
            lat.append((time.perf_counter() - t) * 1000)
        out[label] = pct(lat)
    out["queries"] = n
    info(f"  latency: {orjson.dumps(out).decode()}")
    return out


async def ann_recall(api: Api, agent: str, entry_id: str, queries: list[str]
                     ) -> dict[str, Any]:
    from agentd.memory.embed import resolve_embedder

    ids, matrix = await asyncio.to_thread(api.daemon.vectors, entry_id)
    embedder = resolve_embedder(EMBEDDER)
    assert embedder is not None
    qv = np.asarray(await embedder.embed(queries), dtype=np.float32)
    exact = np.argsort(-(matrix @ qv.T), axis=0)[:10].T
    found = 0
    for i, q in enumerate(queries):
        got = {h["id"] for h in await api.search(agent, q, weight=1.0)}
        found += len(got & {ids[j] for j in exact[i]})
    out = {"vectors": len(ids), "queries": len(queries),
           "recall_at_10": round(found / (10 * len(queries)), 4)}
    info(f"  ann: {orjson.dumps(out).decode()}")
    return out


async def autorecall(api: Api, agent: str, queries: list[str], turns: int
                     ) -> dict[str, Any]:
    ms: dict[bool, list[float]] = {False: [], True: []}
    recalled = 0
    for block in range(4):
        on = bool(block % 2)
        await api.call("PATCH", f"/v1/agents/{agent}",
                       {"settings": {"memory": {"auto_recall": on}}})
        key = f"recall-{block}"
        for i in range(turns):
            t = time.perf_counter()
            run = await api.call("POST", f"/v1/agents/{agent}/sessions/{key}/messages",
                                 {"content": queries[(block * turns + i) % len(queries)],
                                  "stream": False})
            ms[on].append((time.perf_counter() - t) * 1000)
            if run.get("status") != "completed":
                raise RuntimeError(f"turn not completed: {run!r:.300}")
        if on:
            page = await api.call("GET", f"/v1/agents/{agent}/sessions/{key}/events"
                                         "?limit=10000")
            recalled += sum(1 for e in page["events"] if e["kind"] == "message.assistant"
                            and (e.get("data") or {}).get("recalled", {}).get("entries"))
    await api.call("PATCH", f"/v1/agents/{agent}", {"settings": {}})
    off, on_ = pct(ms[False]), pct(ms[True])
    out = {"turns_each": 2 * turns, "off": off, "on": on_,
           "off_mean_ms": round(float(np.mean(ms[False])), 2),
           "on_mean_ms": round(float(np.mean(ms[True])), 2),
           "on_turns_with_recalled_entries": recalled}
    out["added_ms_p50"] = round(on_["p50_ms"] - off["p50_ms"], 2)
    info(f"  autorecall: {orjson.dumps(out).decode()}")
    return out


async def quality(api: Api, label: str, es: me.EvalSet) -> dict[str, Any]:
    """recall@10 of the evidence through the API, per vector_weight, plus RRF."""
    agents: dict[int, str] = {}
    api_id: dict[int, str] = {}
    by_conv: dict[int, list[me.Entry]] = {}
    for e in es.entries:
        by_conv.setdefault(e.conv, []).append(e)
    t0 = time.perf_counter()
    for conv, entries in by_conv.items():
        name = f"q-{label}-{conv}"
        await api.agent(name)
        agents[conv] = name
        for s in range(0, len(entries), 1000):
            part = entries[s:s + 1000]
            ids = await api.add(name, [me.entry_text(e) for e in part])
            api_id.update((e.id, i) for e, i in zip(part, ids, strict=True))
    await all_embedded(api.daemon)
    info(f"  quality {label}: {len(es.entries)} entries stored and embedded in "
         f"{time.perf_counter() - t0:.1f}s")
    hits: dict[str, float] = {}
    para: dict[str, float] = {}
    n_para = sum(1 for q in es.questions if q.style == "ask")
    for q in es.questions:
        ev = [api_id[e] for e in q.evidence]
        ranked: dict[str, list[str]] = {}
        for w in WEIGHTS:
            ranked[f"w{w}"] = [h["id"] for h in await api.search(agents[q.conv], q.text,
                                                                  weight=w)]
        deep = {w: [h["id"] for h in await api.search(agents[q.conv], q.text, 100, w)]
                for w in (0.0, 1.0)}
        ranked["rrf60"] = rrf([deep[0.0], deep[1.0]])
        # The daemon's fusion redone here from the same two top-100 lists, for weights
        # between those asked (w0.9 here must equal the daemon's w0.9).
        for w in CLIENT_WEIGHTS:
            ranked[f"client_w{w}"] = me.weighted(deep[0.0], deep[1.0], w)  # type: ignore[arg-type]
        for key, r in ranked.items():
            got = sum(1 for e in ev if e in set(r[:10])) / len(ev)
            hits[key] = hits.get(key, 0.0) + got
            if q.style == "ask":
                para[key] = para.get(key, 0.0) + got
    n = len(es.questions)
    offline = me.FTS5BM25(es)
    out: dict[str, Any] = {
        "entries": len(es.entries), "distinct_stored": len(set(api_id.values())),
        "questions": n, "paraphrased_questions": n_para,
        "bm25_offline_fts5": round(me.mean_recall(es, lambda q: offline.rank(q, 10)), 4),
        "recall_at_10": {k: round(v / n, 4) for k, v in hits.items()},
    }
    if n_para:
        out["recall_at_10_paraphrased"] = {k: round(v / n_para, 4) for k, v in para.items()}
    info(f"  quality {label}: {orjson.dumps(out).decode()}")
    return out


def rrf(rankings: list[list[str]], k: int = 60) -> list[str]:
    score: dict[str, float] = {}
    for ranking in rankings:
        for r, key in enumerate(ranking, 1):
            score[key] = score.get(key, 0.0) + 1.0 / (k + r)
    return sorted(score, key=lambda e: (-score[e], e))


async def shortcut(daemon: Daemon, texts: list[str], parts: np.ndarray, offset: int
                   ) -> dict[str, Any]:
    """Vectors for every pending entry, written with the daemon stopped (see above)."""
    from agentd.memory.embed import resolve_embedder
    from agentd.store import open_store

    t0 = time.perf_counter()
    sentences = data.pool()
    embedder = resolve_embedder(EMBEDDER)
    assert embedder is not None
    base = np.asarray(await embedder.embed(sentences), dtype=np.float32)
    # How close a shortcut vector comes to the real vector of the same entry.
    real = np.asarray(await embedder.embed(texts[offset:offset + 200]), dtype=np.float32)
    fake = data.shortcut_vectors(parts[offset:offset + 200], base, np.random.default_rng(1))
    where = {t: i for i, t in enumerate(texts)}
    fidelity = float(np.mean(np.sum(real * fake, axis=1)))
    embed_s = time.perf_counter() - t0
    store = await open_store(daemon.database_url)
    rng = np.random.default_rng(5)
    written = 0
    try:
        while True:
            rows = await store.pending_embeddings(EMBEDDER, 5000)
            if not rows:
                break
            idx = np.asarray([where[r.content] for r in rows])
            vecs = data.shortcut_vectors(parts[idx], base, rng)
            await store.put_vectors(EMBEDDER, [(r.n, vecs[i].tobytes(), r.version)
                                               for i, r in enumerate(rows)])
            written += len(rows)
            if written % 100_000 < 5000:
                info(f"  shortcut: {written} vectors written")
    finally:
        await store.close()
    index_dir = daemon.home / "memory" / "index"
    shutil.rmtree(index_dir, ignore_errors=True)
    return {"what": "entries past the previous size inserted through the API with "
                    "[memory] embedder = none; their vectors written by the bench with "
                    "the daemon stopped, through Store.put_vectors: "
                    "normalise(normalise(MiniLM(a) + MiniLM(b)) + N(0, 0.01^2) per dim) "
                    "for the entry's two sentences a, b "
                    f"({len(sentences)} sentences embedded for real); index files deleted "
                    "so the daemon rebuilds its index",
            "vectors_written": written,
            "write_s": round(time.perf_counter() - t0 - embed_s, 1),
            "shortcut_fidelity_cos": round(fidelity, 4)}


# -- the run -------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    phases = set(args.only.split(","))
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    out: dict[str, Any] = {"bench": "memory", "python": platform.python_version(),
                           "cpu_count": os.cpu_count(), "embedder": EMBEDDER,
                           "store": "postgresql" if args.postgres else "sqlite",
                           "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    if args.workdir:
        workdir = Path(args.workdir)
        os.makedirs(workdir, exist_ok=True)
        args.keep = True
    else:
        workdir = Path(tempfile.mkdtemp(prefix="agentd-membench-"))
    daemon = Daemon(workdir, args.postgres)
    stored = daemon.entries()
    queries = data.questions()
    timeout = aiohttp.ClientTimeout(total=7200)
    async with aiohttp.ClientSession(timeout=timeout, headers={
            "Authorization": f"Bearer {TOKEN}"}) as http:
        api = Api(http, daemon)
        try:
            await daemon.start(http)
            if "quality" in phases:
                out["quality"] = {
                    "as_built": await quality(api, "built", me.build()),
                    "tuned_bm25_065": {**TUNED, **await quality(api, "tuned", me.build(
                        paraphrased=TUNED["paraphrased"], sessions=int(TUNED["sessions"]),
                        turns_per_session=int(TUNED["turns_per_session"])))}}
            if phases & {"fill", "latency", "ann", "autorecall"} and sizes:
                if not stored:
                    await api.agent("mem")
                texts, parts = data.entries(sizes[-1], data.pool())
                have = min(stored, sizes[-1])
                for size in sizes:
                    row: dict[str, Any] = {}
                    info(f"size {size}")
                    if size <= have:
                        # A reused --workdir already holds this many: nothing filled.
                        row["fill"] = {"reused": stored}
                        if size < have:
                            continue
                    elif size > args.embed_max:
                        daemon.stop()
                        await daemon.start(http, embedder="none")
                        row["fill"] = await fill(api, "mem", texts[have:size], embedded=False)
                        daemon.stop()
                        row["shortcut"] = await shortcut(daemon, texts, parts, have)
                        await daemon.start(http)
                    else:
                        row["fill"] = await fill(api, "mem", texts[have:size], embedded=True)
                    have = size
                    if "latency" not in phases:
                        # Fill only (a --workdir measured later): one search builds the
                        # index the daemon keeps on disk, timed like the first search.
                        t0 = time.perf_counter()
                        await api.search("mem", queries[0])
                        row["first_search_s"] = round(time.perf_counter() - t0, 1)
                        out[str(size)] = row
                        continue
                    row["latency"] = await latency(api, "mem", queries, args.queries,
                                                   args.warmup)
                    if "ann" in phases:
                        some = (await api.search("mem", queries[0], weight=0.0))[0]["id"]
                        row["ann"] = await ann_recall(api, "mem", some, queries[:100])
                    if "autorecall" in phases and size == sizes[0]:
                        row["autorecall"] = await autorecall(api, "mem", queries,
                                                             args.recall_turns)
                    out[str(size)] = row
        finally:
            daemon.stop()
            out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
            if args.keep:
                info(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000",
                    help="entries in the agent's namespace, measured in turn")
    ap.add_argument("--only", default="fill,latency,ann,autorecall,quality",
                    help="phases (default all)")
    ap.add_argument("--queries", type=int, default=300, help="searches per size")
    ap.add_argument("--warmup", type=int, default=10,
                    help="searches before the timed ones (after the first, timed apart)")
    ap.add_argument("--recall-turns", type=int, default=25,
                    help="turns per auto-recall block (4 blocks)")
    ap.add_argument("--embed-max", type=int, default=100_000,
                    help="sizes above this use the documented shortcut for vectors")
    ap.add_argument("--postgres", help="a PostgreSQL URL for the store (default SQLite)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (home, logs)")
    ap.add_argument("--workdir", help="use (and keep) this directory; entries a previous "
                                      "run left there are reused, not filled again")
    args = ap.parse_args(argv)
    out = asyncio.run(amain(args))
    print(orjson.dumps(out).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
