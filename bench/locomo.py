"""Memory retrieval on LoCoMo, measured as the data's README says (issue 31): one JSON line.

    PYTHONPATH=src .venv/bin/python bench/locomo.py
    PYTHONPATH=src .venv/bin/python bench/locomo.py --postgres postgresql://postgres@127.0.0.1:5432/test
    PYTHONPATH=src .venv/bin/python bench/locomo.py --restart      # and again after a restart

A real daemon (``python -m agentd serve``, fresh home, SQLite unless ``--postgres``,
default ``[memory]``) and one client over HTTP. For each conversation of ``--data``
(default ``../shared/data/locomo-dev/locomo-dev.json``), in turn:

- one agent (``locomo-<sample>-<run>``) and one memory entry per turn, stored verbatim
  through ``POST .../memory/entries`` in one batch: content ``"[<session date_time>]
  <speaker>: <text>"``, metadata ``{"dia_id": ...}``;
- right after the batch is acknowledged, each question of categories 1-4 with evidence
  is one ``POST .../memory/search`` ``{"query": question, "limit": 10}``, one at a
  time (each timed: the "right after a write" latency of issue 31 item 2);
- turn recall@10: a hit when any evidence ``dia_id`` is among the 10 results; session
  recall@10: a hit when any result is from an evidence turn's session.

The same figures for plain BM25 over the same entries are computed here (Okapi, k1 1.5,
b 0.75, lower-cased alphanumeric words, a short stop-word list: the README's reference).
Categories as LoCoMo numbers them: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop.

``--recall N``: then, with ``settings.memory.auto_recall`` on and ``recall_limit`` N
(the default token budget, 800), each question is sent as a user message to the
conversation's agent (the scripted model, a session per question), and the step's
``message.assistant`` event tells which entries were put into the context: the same
turn and session recall, of what the model was given, and the tokens it cost.

``--during``: then the largest conversation is written again, for a new agent, in one
batch, while a second client asks the first conversation's questions one after another
until the write is acknowledged: those searches' latencies (a write's embedding must
not delay a search).

``--restart``: after every conversation was searched, every question is asked again,
then again after a restart of the daemon; ``stable`` counts the questions whose ranked
ids differ between those two (must be 0: issue 31 item 3), and from right after their
conversation's write (must be 0 too: full text ranks with each namespace's own
statistics, so conversations stored later change nothing). ``--weight W`` sends
``vector_weight`` with every search.

Progress goes to stderr; stdout gets one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from _load import info, percentile
from memory import TOKEN, Api, Daemon

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo-dev" / \
    "locomo-dev.json"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
#: The reference's "short stop-word list".
BM25_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from",
    "has", "have", "how", "i", "in", "is", "it", "its", "of", "on", "or", "that", "the",
    "this", "to", "was", "were", "what", "when", "where", "which", "who", "why", "will",
    "with", "you"})


@dataclass
class Turn:
    dia_id: str
    session: int
    content: str


@dataclass
class Question:
    text: str
    evidence: list[str]
    category: int


@dataclass
class Conversation:
    sample: str
    turns: list[Turn]
    questions: list[Question]


def session_of(dia_id: str) -> int | None:
    m = re.match(r"D(\d+):", dia_id)
    return int(m.group(1)) if m else None


def load(path: Path) -> list[Conversation]:
    out = []
    for c in orjson.loads(path.read_bytes()):
        conv = c["conversation"]
        turns: list[Turn] = []
        s = 1
        while f"session_{s}" in conv:
            date = conv[f"session_{s}_date_time"]
            turns.extend(Turn(t["dia_id"], s, f"[{date}] {t['speaker']}: {t['text']}")
                         for t in conv[f"session_{s}"])
            s += 1
        questions = [Question(str(q["question"]), [str(e) for e in q["evidence"]],
                              int(q["category"]))
                     for q in c["qa"] if q.get("category") in CATEGORIES and q.get("evidence")]
        out.append(Conversation(str(c["sample_id"]), turns, questions))
    return out


# -- the BM25 reference ----------------------------------------------------------------------


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in BM25_STOPWORDS]


class BM25:
    """Okapi BM25 (k1 1.5, b 0.75, IDF log(1 + (N - df + 0.5) / (df + 0.5)))."""

    def __init__(self, docs: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tf = [Counter(words(d)) for d in docs]
        self.len = [sum(t.values()) for t in self.tf]
        self.avg = sum(self.len) / max(len(docs), 1)
        df: Counter[str] = Counter()
        for t in self.tf:
            df.update(t.keys())
        n = len(docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}

    def rank(self, query: str, k: int) -> list[int]:
        terms = set(words(query))
        scores: list[tuple[float, int]] = []
        for i, tf in enumerate(self.tf):
            s = 0.0
            for w in terms:
                f = tf.get(w)
                if f:
                    s += self.idf[w] * f * (self.k1 + 1) / (
                        f + self.k1 * (1 - self.b + self.b * self.len[i] / self.avg))
            if s > 0:
                scores.append((-s, i))
        scores.sort()
        return [i for _, i in scores[:k]]


# -- scoring -----------------------------------------------------------------------------------


@dataclass
class Tally:
    n: int = 0
    turn: int = 0
    session: int = 0

    def add(self, turn: bool, session: bool) -> None:
        self.n += 1
        self.turn += turn
        self.session += session

    def out(self) -> dict[str, Any]:
        return {"questions": self.n, "turn_recall_at_10": round(self.turn / self.n, 4),
                "session_recall_at_10": round(self.session / self.n, 4)}


@dataclass
class Score:
    all: Tally = field(default_factory=Tally)
    conv: dict[str, Tally] = field(default_factory=dict)
    cat: dict[int, Tally] = field(default_factory=dict)

    def add(self, conv: str, q: Question, found: Sequence[Turn]) -> None:
        ids = {t.dia_id for t in found[:10]}
        sessions = {t.session for t in found[:10]}
        turn = any(e in ids for e in q.evidence)
        session = any(session_of(e) in sessions for e in q.evidence)
        for tally in (self.all, self.conv.setdefault(conv, Tally()),
                      self.cat.setdefault(q.category, Tally())):
            tally.add(turn, session)

    def out(self) -> dict[str, Any]:
        return {**self.all.out(),
                "per_conversation": {k: v.out() for k, v in self.conv.items()},
                "per_category": {f"{k} {CATEGORIES[k]}": v.out()
                                 for k, v in sorted(self.cat.items())}}


def beats(ours: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Where ``ours`` is below ``ref`` (turn or session recall), by slice."""
    worse = []
    for group in ("per_conversation", "per_category"):
        for key, row in ours[group].items():
            for m in ("turn_recall_at_10", "session_recall_at_10"):
                if row[m] < ref[group][key][m]:
                    worse.append(f"{key} {m.split('_')[0]} {row[m]} < {ref[group][key][m]}")
    return {"at_least_bm25_everywhere": not worse, "below_bm25": worse}


# -- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    convs = load(Path(args.data))
    out: dict[str, Any] = {"bench": "locomo", "python": platform.python_version(),
                           "cpu_count": os.cpu_count(),
                           "store": "postgresql" if args.postgres else "sqlite",
                           "data": str(args.data), "weight": args.weight,
                           "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    bm25 = Score()
    for c in convs:
        index = BM25([t.content for t in c.turns])
        for q in c.questions:
            bm25.add(c.sample, q, [c.turns[i] for i in index.rank(q.text, 10)])
    workdir = Path(tempfile.mkdtemp(prefix="agentd-locomo-"))
    daemon = Daemon(workdir, args.postgres)
    run_id = uuid.uuid4().hex[:6]
    ours = Score()
    lat: list[float] = []
    first: dict[str, list[str]] = {}
    turn_of: dict[str, Turn] = {}
    cpu0 = cpu1 = None
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, headers={
            "Authorization": f"Bearer {TOKEN}"}) as http:
        api = Api(http, daemon)

        async def ask(agent: str, q: Question) -> list[str]:
            body: dict[str, Any] = {"query": q.text, "limit": 10}
            if args.weight is not None:
                body["vector_weight"] = args.weight
            t = time.perf_counter()
            res = await api.call("POST", f"/v1/agents/{agent}/memory/search", body)
            lat.append((time.perf_counter() - t) * 1000)
            return [h["id"] for h in res["results"]]

        try:
            await daemon.start(http)
            assert daemon.proc is not None
            cpu0 = daemon.proc.cpu_s()
            insert_ms = []
            for c in convs:
                agent = f"locomo-{c.sample}-{run_id}"
                await api.agent(agent)
                t = time.perf_counter()
                res = await api.call("POST", f"/v1/agents/{agent}/memory/entries", {
                    "entries": [{"content": t.content, "metadata": {"dia_id": t.dia_id}}
                                for t in c.turns]})
                insert_ms.append(round((time.perf_counter() - t) * 1000, 1))
                for e, turn in zip(res["entries"], c.turns, strict=True):
                    turn_of[e["id"]] = turn
                for i, q in enumerate(c.questions):
                    ids = await ask(agent, q)
                    first[f"{agent}/{i}"] = ids
                    ours.add(c.sample, q, [turn_of[x] for x in ids])
                info(f"{c.sample}: {len(c.turns)} entries, {len(c.questions)} questions; "
                     f"so far {ours.all.out()}")
            cpu1 = daemon.proc.cpu_s()
            s = sorted(lat)
            out["after_write"] = {
                "searches": len(s), "p50_ms": round(percentile(s, 50) or 0, 2),
                "p95_ms": round(percentile(s, 95) or 0, 2),
                "p99_ms": round(percentile(s, 99) or 0, 2),
                "max_ms": round(s[-1], 2), "insert_batch_ms": insert_ms,
                "daemon_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2)}
            if args.during:
                out["during_write"] = await during_write(api, convs, run_id)
            if args.recall:
                out["auto_recall"] = await recall_phase(api, convs, run_id, turn_of,
                                                        args.recall)
            if args.restart:
                # Again with every conversation stored (on SQLite FTS5's BM25 counts
                # documents over every namespace, so a conversation stored later moves
                # an earlier one's scores), then after a restart: the two must agree.
                later = await ask_all(ask, convs, run_id, turn_of)
                daemon.stop()
                await daemon.start(http)
                again = await ask_all(ask, convs, run_id, turn_of)
                out["stable"] = {
                    "questions": len(first),
                    "differ_after_restart": sum(later[0][k] != again[0][k] for k in first),
                    "differ_from_right_after_write": sum(first[k] != later[0][k]
                                                         for k in first),
                    "after_all_writes": later[1].all.out(),
                    "after_restart": again[1].all.out()}
        finally:
            daemon.stop()
            if args.keep:
                info(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    out["agentd"] = ours.out()
    out["bm25"] = bm25.out()
    out["agentd_vs_bm25"] = beats(out["agentd"], out["bm25"])
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


async def during_write(api: Api, convs: list[Conversation], run_id: str
                       ) -> dict[str, Any]:
    big = max(convs, key=lambda c: len(c.turns))
    agent = f"locomo-during-{run_id}"
    await api.agent(agent)
    body = {"entries": [{"content": t.content, "metadata": {"dia_id": t.dia_id}}
                        for t in big.turns]}
    ms: list[float] = []
    t0 = time.perf_counter()
    write = asyncio.create_task(api.call("POST", f"/v1/agents/{agent}/memory/entries", body))
    first = convs[0]
    i = 0
    while not write.done():
        q = first.questions[i % len(first.questions)]
        t = time.perf_counter()
        await api.call("POST", f"/v1/agents/locomo-{first.sample}-{run_id}/memory/search",
                       {"query": q.text, "limit": 10})
        ms.append((time.perf_counter() - t) * 1000)
        i += 1
    await write
    s = sorted(ms)
    return {"entries_written": len(big.turns),
            "write_ms": round((time.perf_counter() - t0) * 1000, 1), "searches": len(s),
            "p50_ms": round(percentile(s, 50) or 0, 2),
            "p95_ms": round(percentile(s, 95) or 0, 2),
            "max_ms": round(s[-1], 2) if s else None}


async def ask_all(ask: Any, convs: list[Conversation], run_id: str,
                  turn_of: dict[str, Turn]) -> tuple[dict[str, list[str]], Score]:
    got: dict[str, list[str]] = {}
    score = Score()
    for c in convs:
        agent = f"locomo-{c.sample}-{run_id}"
        for i, q in enumerate(c.questions):
            got[f"{agent}/{i}"] = ids = await ask(agent, q)
            score.add(c.sample, q, [turn_of[x] for x in ids])
    return got, score


async def recall_phase(api: Api, convs: list[Conversation], run_id: str,
                       turn_of: dict[str, Turn], limit: int) -> dict[str, Any]:
    score = Score()
    tokens: list[int] = []
    counts: list[int] = []
    ms: list[float] = []
    for c in convs:
        agent = f"locomo-{c.sample}-{run_id}"
        await api.call("PATCH", f"/v1/agents/{agent}", {"settings": {"memory": {
            "auto_recall": True, "recall_limit": limit}}})
        for i, q in enumerate(c.questions):
            key = f"q{i}"
            t = time.perf_counter()
            run = await api.call("POST", f"/v1/agents/{agent}/sessions/{key}/messages",
                                 {"content": q.text, "stream": False})
            ms.append((time.perf_counter() - t) * 1000)
            if run.get("status") != "completed":
                raise RuntimeError(f"turn not completed: {run!r:.300}")
            page = await api.call("GET", f"/v1/agents/{agent}/sessions/{key}/events"
                                         "?limit=1000")
            step = [e for e in page["events"] if e["kind"] == "message.assistant"][-1]
            recalled = (step.get("data") or {}).get("recalled") or {}
            ids = [e["id"] for e in recalled.get("entries", [])]
            tokens.append(int(recalled.get("tokens", 0)))
            counts.append(len(ids))
            score.add(c.sample, q, [turn_of[x] for x in ids])
        info(f"{c.sample}: auto-recall so far {score.all.out()}")
    s = sorted(ms)
    return {"recall_limit": limit, **score.out(),
            "entries_per_turn_mean": round(sum(counts) / len(counts), 2),
            "tokens_per_turn_mean": round(sum(tokens) / len(tokens), 1),
            "tokens_per_turn_max": max(tokens),
            "turn_p50_ms": round(percentile(s, 50) or 0, 2),
            "turn_p95_ms": round(percentile(s, 95) or 0, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="a LoCoMo JSON file")
    ap.add_argument("--postgres", help="a PostgreSQL URL for the store (default SQLite)")
    ap.add_argument("--weight", type=float, help="vector_weight sent with every search")
    ap.add_argument("--restart", action="store_true",
                    help="restart the daemon and ask every question again")
    ap.add_argument("--during", action="store_true",
                    help="also search while a conversation is being written")
    ap.add_argument("--recall", type=int, default=0, metavar="N",
                    help="also measure auto-recall with recall_limit N")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (home, logs)")
    args = ap.parse_args(argv)
    out = asyncio.run(run(args))
    print(orjson.dumps(out).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
