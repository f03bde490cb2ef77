"""Do SQLite and PostgreSQL rank LoCoMo's questions the same way? One JSON line.

    PYTHONPATH=src .venv/bin/python bench/locomo_stores.py \\
        --postgres postgresql://postgres@127.0.0.1:5432/<a fresh database>

In one process, through the stores' own code: LoCoMo's development half
(``--data``, as bench/locomo.py reads it) stored in a fresh SQLite file and in the
PostgreSQL database, one namespace per conversation, each turn with its MiniLM vector
(the daemon's embedder, computed once here and stored with the entries on both);
then each question ranked as a hybrid search ranks it (full text from the store,
vectors by exact cosine, which both stores' vector search is at this size, the
default fusion and neighbours). Reported: how many questions' top 10 (and full-text
top 10, with scores) differ between the stores, and each store's turn / session
recall@10.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentd.memory.embed import resolve_embedder
from agentd.memory.entries import fuse, with_neighbours
from agentd.store import Store, open_store
from agentd.store.entries import NewEntry
from locomo import DATA, Conversation, load, session_of

EMBEDDER = "onnx:all-minilm-l6-v2-int8"
WEIGHT, LIFT = 0.4, 0.2


async def rank(store: Store, convs: list[Conversation], turns: np.ndarray,
               questions: np.ndarray) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    t0 = q0 = 0
    for c in convs:
        ns = f"agent:{c.sample}"
        vecs = turns[t0:t0 + len(c.turns)]
        done = await store.insert_entries([NewEntry(namespace=ns, content=t.content)
                                           for t in c.turns])
        keys = np.array([r.n for r, _ in done])
        dia = {r.n: t.dia_id for (r, _), t in zip(done, c.turns, strict=True)}
        for j, q in enumerate(c.questions):
            text = await store.fulltext_entries([ns], q.text, None, 100)
            sims = vecs @ questions[q0 + j]
            top = np.lexsort((keys, -sims))[:100]
            score = fuse(text, [(int(keys[i]), float(sims[i])) for i in top], WEIGHT)
            around = await store.entry_neighbours([ns], list(score))
            got = [dia[k] for k, _ in with_neighbours(score, around, LIFT)[:10]]
            sessions = {session_of(e) for e in q.evidence}
            out.append({"got": got, "text": [(dia[k], s) for k, s in text[:10]],
                        "turn": any(g in q.evidence for g in got),
                        "session": any(session_of(g) in sessions for g in got)})
        t0 += len(c.turns)
        q0 += len(c.questions)
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    convs = load(Path(args.data))
    embedder = resolve_embedder(EMBEDDER)
    assert embedder is not None
    texts = [t.content for c in convs for t in c.turns]
    turns = np.concatenate([np.asarray(await embedder.embed(texts[i:i + 64]), np.float32)
                            for i in range(0, len(texts), 64)])
    questions = np.stack([np.asarray(await embedder.embed_query(q.text), np.float32)[0]
                          for c in convs for q in c.questions])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in (("sqlite", f"sqlite:///{tmp}/a.db"), ("postgresql", args.postgres)):
            store = await open_store(url)
            try:
                results[name] = await rank(store, convs, turns, questions)
            finally:
                await store.close()
    lite, pg = results["sqlite"], results["postgresql"]
    out: dict[str, Any] = {"bench": "locomo_stores", "questions": len(lite),
                           "top10_differ": sum(a["got"] != b["got"]
                                               for a, b in zip(lite, pg, strict=True)),
                           "text_top10_differ": sum(a["text"] != b["text"]
                                                    for a, b in zip(lite, pg, strict=True))}
    for name, rows in results.items():
        out[name] = {"turn_recall_at_10": round(sum(r["turn"] for r in rows) / len(rows), 4),
                     "session_recall_at_10": round(sum(r["session"] for r in rows)
                                                   / len(rows), 4)}
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", required=True, help="a fresh PostgreSQL database")
    ap.add_argument("--data", default=str(DATA), help="LoCoMo conversations (JSON)")
    args = ap.parse_args()
    print(orjson.dumps(asyncio.run(amain(args))).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
