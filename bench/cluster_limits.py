"""One rate limit across the cluster: three ``agentd serve`` nodes on one PostgreSQL
database against one stub provider, and the gate's cost per model call.

    AGENTD_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/cluster_limits.py            # ~5 min
    ... bench/cluster_limits.py --quick                     # ~2 min

The provider is :class:`agentd.testing.StubLLMServer` (OpenAI wire, echo answers,
``--latency`` s before each answer, no limit of its own: it records when each request
arrived). Every node has the same ``providers`` setting: a lane per scenario
(``openai-compatible:<scenario>``) with ``rpm`` = ``--rpm``, ``burst_s`` 1 and
``concurrency`` = ``--concurrency``. Each node is sent its own messages (sessions of
several queued messages each), so that its lane stays backlogged throughout.

Scenarios (after ``--warm`` s, counted over ``--window`` s of arrivals at the stub):

tenants
    Tenant ``t1`` (weight 1) has an agent whose sessions are sent to node 0; tenant
    ``t2`` (weight 2) one whose sessions are sent to nodes 1 and 2; all background.
    One node would serve them 1 : 2; three nodes racing for the tokens, 1 : 2 per
    node pair, i.e. 1 : 4 by node count. Figures: requests admitted in the window
    against the limit (``rpm`` x window / 60 + the bucket), the most in any 60 s (or
    the window), the most in flight at the stub, and ``t2 / t1``.
classes
    Node 0 sends interactive messages (tenant ``t1``), nodes 1 and 2 batch messages
    (``t2``). One node gives interactive 100 / 102 of a lane that batch keeps busy
    too (class weights 100 : 10 : 1): the share interactive got.
node_scope
    (not with ``--quick``) The tenants load on a lane whose ``scope`` is ``node``: each
    node keeps the limit alone, as before this change (three times the limit).
overhead
    In this process, against the same database: one exchange with the store as a
    shared lane makes it for a call (take a request and a slot), and the one that
    frees the slot, sequentially, p50 / p99 (µs); and a call's way through a node's
    scheduler with and without a gate, limits that do not bind: from ``acquire`` to
    its grant (what the gate adds before a call goes out) and to the slot given back
    after ``release`` (µs). From the nodes under load: exchanges per call and their
    time (``/v1/kernel``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg

from _load import LocalDaemon, info, percentile
from agentd.runtime.cluster_limits import ClusterGate
from agentd.runtime.scheduler import LaneLimits, Scheduler
from agentd.store import open_store
from agentd.store.limits import Exchange, Give, Rates, Take
from agentd.testing import Capacity, StubLLMServer

PROVIDER = "openai-compatible"
TOKEN = "bench-cluster-limits-token"
NODES = 3


def _schema_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    schema = f"bench_limits_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _schema_url(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def most_in(times: list[float], window: float) -> int:
    times = sorted(times)
    most, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] <= start + window:
            j += 1
        most = max(most, j - i)
    return most


def most_overlapping(times: list[float], length: float) -> int:
    edges = sorted([(t, 1) for t in times] + [(t + length, -1) for t in times])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


class Cluster:
    """The nodes, their HTTP clients and the stub."""

    def __init__(self, nodes: list[LocalDaemon], stub: StubLLMServer) -> None:
        self.nodes = nodes
        self.stub = stub
        self.http = [httpx.Client(base_url=n.base, timeout=60,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
                     for n in nodes]

    def agent(self, name: str, model: str, tenant: str) -> None:
        answer = self.http[0].post("/v1/agents", json={
            "name": name, "model": model, "instructions": "Answer in one line.",
            "settings": {"base_url": self.stub.base_url, "tenant": tenant}})
        answer.raise_for_status()

    def send(self, node: int, agent: str, session: str, content: str, priority: str
             ) -> None:
        answer = self.http[node].post(
            f"/v1/agents/{agent}/sessions/{quote(session, safe='')}/messages",
            json={"content": content, "wait": False, "priority": priority})
        if answer.status_code != 202:
            raise RuntimeError(f"send: {answer.status_code} {answer.text}")

    def delete(self, agent: str) -> None:
        self.http[0].delete(f"/v1/agents/{agent}")

    def lanes(self, lane: str) -> list[dict[str, Any]]:
        return [h.get("/v1/kernel").json()["scheduler"]["lanes"].get(lane, {})
                for h in self.http]

    def close(self) -> None:
        for client in self.http:
            client.close()


def scenario(cluster: Cluster, args: argparse.Namespace, name: str,
             plan: list[tuple[int, str, str, str]]) -> dict[str, Any]:
    """``plan``: (node, agent, tenant, priority) of each stream of sessions. Sends
    them, counts what the stub saw, deletes the agents."""
    model = f"{PROVIDER}:{name}"
    for agent, tenant in {(a, t) for _, a, t, _ in plan}:
        cluster.agent(agent, model, tenant)
    seen = len(cluster.stub.requests)
    began = time.monotonic()
    sends = [(node, agent, f"{node}-{s}", f"{tenant}|{priority}|{m}", priority)
             for m in range(args.messages) for s in range(args.sessions)
             for node, agent, tenant, priority in plan]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda a: cluster.send(*a), sends))
    sent = time.monotonic()
    info(f"{name}: sent {len(sends)} messages in {sent - began:.1f} s")
    start = max(began + args.warm, sent + 1.0)
    time.sleep(max(0.0, start + args.window + 1.0 - time.monotonic()))
    times = cluster.stub.request_times[seen:]
    bodies = cluster.stub.requests[seen:]
    lanes = cluster.lanes(model)
    backlogged = [bool(lane.get("queued")) for lane in lanes]
    for agent in {a for _, a, _, _ in plan}:
        cluster.delete(agent)
    in_window = [(t, user_text(b)) for t, b in zip(times, bodies, strict=True)
                 if start <= t < start + args.window]
    by_tenant = Counter(text.split("|")[0] for _, text in in_window)
    by_class = Counter(text.split("|")[1] for _, text in in_window if "|" in text)
    burst = max(1.0, args.rpm / 60.0)
    arrivals = [t for t, _ in in_window]
    out: dict[str, Any] = {
        "admitted_in_window": len(in_window),
        "limit_in_window": round(args.rpm * args.window / 60.0 + burst, 1),
        "most_in_any_60s": most_in(times, 60.0) if args.window >= 60 else None,
        "most_in_any_10s": most_in(times, 10.0),
        "limit_in_10s": round(args.rpm * 10 / 60.0 + burst, 1),
        # (arrival times: a request reaches the stub some time after its node was
        # admitted, so arrivals may bunch by how much that time varies)
        "max_in_flight": most_overlapping(arrivals, args.latency),
        "by_tenant": dict(sorted(by_tenant.items())),
        "by_class": dict(sorted(by_class.items())),
        # (each node still had calls waiting at the end: the load kept it busy)
        "backlogged_at_end": backlogged,
    }
    clustered = [lane.get("cluster", {}) for lane in lanes]
    granted = sum(lane.get("granted", 0) for lane in lanes)
    if any(clustered) and granted:
        out["exchanges_per_call"] = round(sum(c["exchanges"] for c in clustered) / granted,
                                          2)
        out["exchange_ms_p50_by_node"] = [c["exchange_ms"]["p50"] for c in clustered]
        out["exchange_ms_p99_by_node"] = [c["exchange_ms"]["p99"] for c in clustered]
        out["shares_at_end"] = [c["share"] for c in clustered]
    return out


async def overhead(url: str, samples: int) -> dict[str, Any]:
    """The gate's cost, in this process, on an idle database."""
    store = await open_store(url)
    try:
        rates = Rates.of(1e9, None, 1.0)
        times: list[float] = []
        for i in range(samples):
            t0 = time.perf_counter()
            out = await store.limit_exchange("bench", Exchange(
                node="bench", now=time.time(), rates=rates,
                take=Take(concurrency=64, claim=f"c{i}")))
            t1 = time.perf_counter()
            await store.limit_exchange("bench", Exchange(
                node="bench", now=time.time(), rates=rates,
                gives=[Give(slot=out.slot, claim=f"c{i}")]))
            t2 = time.perf_counter()
            times += [t1 - t0, t2 - t1]
        times.sort()
        limits = LaneLimits(rpm=1e9, concurrency=64)
        gate = ClusterGate(store, node_id="bench", lanes=["p"], ttl_s=30.0)
        paths: dict[str, list[float]] = {}
        waits: dict[str, list[float]] = {}
        for label, scheduler in (("local", Scheduler({"p": limits})),
                                 ("gated", Scheduler({"p": limits}, gate=gate))):
            calls: list[float] = []
            grants: list[float] = []
            for _ in range(samples):
                await gate.idle()  # (the last call's slot given back)
                t0 = time.perf_counter()
                grant = await scheduler.acquire(provider="p", model="m")
                t1 = time.perf_counter()
                grant.release()
                await gate.idle()
                calls.append(time.perf_counter() - t0)
                grants.append(t1 - t0)
            paths[label], waits[label] = sorted(calls), sorted(grants)
        await gate.close()
        return {
            "exchange_us_p50": round((percentile(times, 50) or 0) * 1e6, 1),
            "exchange_us_p99": round((percentile(times, 99) or 0) * 1e6, 1),
            # A call's wait for its grant (what the gate adds before the call goes
            # out), and its grant and release with the slot given back (the database
            # time a call costs in all).
            "acquire_us_p50": {k: round((percentile(v, 50) or 0) * 1e6, 1)
                               for k, v in waits.items()},
            "acquire_us_p99": {k: round((percentile(v, 99) or 0) * 1e6, 1)
                               for k, v in waits.items()},
            "acquire_release_us_p50": {k: round((percentile(v, 50) or 0) * 1e6, 1)
                                       for k, v in paths.items()},
        }
    finally:
        await store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", default=os.environ.get("AGENTD_TEST_POSTGRES_URL", ""))
    p.add_argument("--rpm", type=float, default=300.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--warm", type=float, default=10.0)
    p.add_argument("--sessions", type=int, default=40,
                   help="sessions per node and agent (each with --messages queued)")
    p.add_argument("--messages", type=int, default=12, help="messages per session")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if not args.pg:
        sys.exit("a PostgreSQL URL is needed: --pg or AGENTD_TEST_POSTGRES_URL")
    if args.quick:
        args.window, args.warm, args.messages, args.samples = 20.0, 5.0, 5, 500
    began = time.monotonic()
    out: dict[str, Any] = {"bench": "cluster_limits", "nodes": NODES, "rpm": args.rpm,
                           "burst_s": 1.0, "concurrency": args.concurrency,
                           "latency_s": args.latency, "window_s": args.window}
    lane = {"rpm": args.rpm, "concurrency": args.concurrency, "burst_s": 1.0}
    providers = {f"{PROVIDER}:{name}": lane for name in ("tenants", "classes")}
    providers[f"{PROVIDER}:node_scope"] = {**lane, "scope": "node"}
    with fresh_schema(args.pg) as url, StubLLMServer() as stub, \
            tempfile.TemporaryDirectory(prefix="agentd-bench-limits-") as tmp:
        stub.capacity = Capacity(latency_s=args.latency)
        env = {"AGENTD_DATABASE_URL": url, "AGENTD_PROVIDERS": orjson.dumps(providers).decode(),
               "AGENTD_TENANTS": orjson.dumps({"t1": {"weight": 1.0},
                                               "t2": {"weight": 2.0}}).decode()}
        with contextlib.ExitStack() as stack:
            nodes = []
            for i in range(NODES):
                home = Path(tmp) / f"node-{i}"
                home.mkdir(mode=0o700)
                nodes.append(stack.enter_context(LocalDaemon(
                    home, TOKEN, {**env, "AGENTD_NODE_ID": f"node-{i}"})))
            cluster = Cluster(nodes, stub)
            try:
                tenants = [(0, "a1", "t1", "background"), (1, "a2", "t2", "background"),
                           (2, "a2", "t2", "background")]
                figures = scenario(cluster, args, "tenants", tenants)
                got = figures["by_tenant"]
                figures["t2_over_t1"] = round(got.get("t2", 0) / max(1, got.get("t1", 0)), 2)
                figures["t2_over_t1_target"] = 2.0
                out["tenants"] = figures
                classes = [(0, "c1", "t1", "interactive"), (1, "c2", "t2", "batch"),
                           (2, "c2", "t2", "batch")]
                figures = scenario(cluster, args, "classes", classes)
                got = figures["by_class"]
                figures["interactive_share"] = round(
                    got.get("interactive", 0) / max(1, sum(got.values())), 3)
                figures["interactive_share_target"] = round(100 / 102, 3)
                out["classes"] = figures
                if not args.quick:
                    out["node_scope"] = scenario(
                        cluster, args, "node_scope",
                        [(n, f"n{n}", "t1", "background") for n in range(NODES)])
            finally:
                cluster.close()
        out["overhead"] = asyncio.run(overhead(url, args.samples))
    out["wall_s"] = round(time.monotonic() - began, 1)
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
