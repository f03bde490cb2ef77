"""The kernel scheduler against a rate-limited provider: makespan, priority, fairness,
overhead.

    .venv/bin/python bench/scheduler.py                       # everything (~20 min)
    .venv/bin/python bench/scheduler.py --quick               # smaller loads (~5 min)
    .venv/bin/python bench/scheduler.py --only makespan --agents 500 --calls 5
    .venv/bin/python bench/scheduler.py --only priority,fairness,overhead

The simulated provider is :class:`agentd.testing.StubLLMServer` (OpenAI Chat
Completions wire, streamed echo answers) with a capacity model, run in a process of
its own (``bench/_sim_provider.py``) so that its event loop does not share the GIL with
the runtime or the SDK under test. Its capacity, the same in every scenario:

- ``concurrency`` 8 calls at once, each answered after ``latency_s`` 0.2 s;
- ``rpm`` 2,400 (40 a second: what 8 calls of 200 ms sustain), ``burst_s`` 1;
- ``tpm`` = rpm x the mean tokens of the makespan workload's requests as the stub
  counts them (JSON characters of ``messages`` / 4 + ``max_tokens``, here 64):
  2,400 x 233.6 = 560,640 for 5 calls per session, so tokens bind as tightly as
  requests on the mean call (and tighter on a session's later, longer calls);
- ``count_rejected`` true: a 429 still takes a request token ("unsuccessful requests
  contribute to your per-minute limit", OpenAI's documented behaviour); the direct
  baseline is run with it false as well, because its result depends on it.

A 429 carries ``retry-after`` in whole seconds (at least 1), as OpenAI sends it.

Scenarios (one JSON line each on stdout; progress on stderr):

makespan
    ``--agents`` agents each send ``--calls`` messages one after another in one session,
    all agents at once. *Kernel*: an in-process :class:`~agentd.assembly.Runtime` (SQLite
    home in a temp dir) whose ``providers`` gives the ``openai-compatible`` lane the
    provider's limits; agents ``openai-compatible:sim`` on the sim. *Direct*: the same
    calls (same messages, so the same tokens) with the official ``openai`` SDK, one
    shared ``AsyncOpenAI(max_retries=--sdk-retries)``: its own retries, which honour
    ``retry-after`` (else exponential backoff with jitter). The sim's counts are reset
    (buckets full) before each side. Figures: makespan, 429s counted at the sim, calls
    that failed for good, and ``ratio`` = direct / kernel makespan. A direct side still
    running after ``--direct-timeout`` is stopped; its makespan is then a lower bound.
priority
    ``--bg-agents`` x ``--bg-sessions`` background runs (one message each, not
    awaited) are queued at once; while they drain, ``--chats`` interactive chats (an
    agent and session each, ``--chat-messages`` messages in turn, staggered over the
    first seconds) send with priority ``interactive``. TTFT: from ``send`` to the
    first live text ``Token`` of that run, p50 / p99 / max; background makespan.
fairness
    Standing backlogs: every agent has several sessions, each with messages queued, so
    that it always has calls waiting. Completed calls per agent are counted in a window
    (``--warm`` s after the last send, for ``--window`` s) in which every agent is still
    backlogged. Equal weights (``--fair-agents``): Jain's index (sum x)^2 / (n sum x^2).
    Weights 1:2:4 as agent ``settings.weight`` (one tenant), then as three tenants of
    weight 1, 2 and 4: completed calls normalised to the weight-1 agent.
overhead
    No contention. The scheduler alone: ``acquire`` + ``release`` of one call on an
    unlimited lane and on a lane with limits that do not bind (p50 / p99, µs), and the
    cost of a grant under a deep queue (1,000 tasks on 8 slots). The whole kernel path:
    ``ModelCaller.call`` with the offline scripted model against the same model's
    ``complete`` (its stream consumed into a message, what the kernel does around the
    call) — the difference of the medians is what the kernel adds to a call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from _load import info, percentile
from _sim_provider import SimProvider, wire_tokens
from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.llm.messages import ModelRequest, UserMessage
from agentd.llm.registry import resolve_model
from agentd.runtime import Token
from agentd.runtime.budgets import BudgetBook
from agentd.runtime.calls import Kernel, ModelCaller, Target
from agentd.runtime.kernel import BreakerSettings, RetryPolicy
from agentd.runtime.scheduler import LaneLimits, Scheduler

PROVIDER = "openai-compatible"
MODEL = f"{PROVIDER}:sim"
MAX_TOKENS = 64
INSTRUCTIONS = ("You are a benchmark agent. Answer each message with a one-line summary "
                "of the task state, no more.")
SCENARIOS = ("makespan", "priority", "fairness", "overhead")


def content(index: int, total: int) -> str:
    """The ``index``-th message of a session (fixed length, so every session costs the
    same tokens)."""
    return (f"message {index + 1:02d} of {total:02d}: please summarise the state of the "
            "task so far in one line.")


def reply(text: str) -> str:
    return f"stub: {text}"  # what the stub answers with nothing queued


def wire_body(calls_so_far: int, total: int) -> dict[str, Any]:
    """The Chat Completions body of a session's call number ``calls_so_far + 1``, as the
    runtime's provider sends it (and as the direct side sends it)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": INSTRUCTIONS}]
    for i in range(calls_so_far + 1):
        messages.append({"role": "user", "content": content(i, total)})
        if i < calls_so_far:
            messages.append({"role": "assistant", "content": reply(content(i, total))})
    return {"messages": messages, "max_tokens": MAX_TOKENS}


def mean_tokens(calls: int) -> float:
    return sum(wire_tokens(wire_body(k, calls)) for k in range(calls)) / calls


def ms(values: list[float], q: float) -> float | None:
    value = percentile(sorted(values), q)
    return None if value is None else round(value * 1000, 1)


# --------------------------------------------------------------------------- set-up


class Sim:
    """The simulated provider's parameters and process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.concurrency = args.concurrency
        self.latency_s = args.latency
        self.rpm = float(args.rpm)
        self.tpm = float(round(self.rpm * mean_tokens(args.tpm_calls)))
        #: Kernel slots kept for interactive calls (providers.X.reserve); the sim
        #: knows nothing of it.
        self.reserve = args.reserve
        self.proc = SimProvider(self.capacity())
        self.base_url = self.proc.base_url

    def capacity(self, count_rejected: bool = True) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "latency_s": self.latency_s,
                "rpm": self.rpm, "tpm": self.tpm, "burst_s": 1.0,
                "count_rejected": count_rejected}

    def limits(self) -> dict[str, Any]:
        """The kernel lane's limits: the provider's published ones, nothing tuned."""
        return {PROVIDER: {"concurrency": self.concurrency, "rpm": self.rpm,
                           "tpm": self.tpm, "burst_s": 1.0, "reserve": self.reserve}}

    def fresh(self, count_rejected: bool = True) -> None:
        """Buckets full, counts zeroed."""
        self.proc.configure(self.capacity(count_rejected))

    def figures(self) -> dict[str, Any]:
        stats = self.proc.stats()
        return {"accepted": stats["accepted"], "rejected_429": stats["rejected"],
                "rejected_by": stats["rejected_by"], "max_in_flight": stats["max_in_flight"],
                "tokens_per_request": round(stats["request_tokens"] / max(stats["requests"], 1),
                                            1)}

    def params(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "latency_s": self.latency_s,
                "rpm": self.rpm, "tpm": self.tpm, "burst_s": 1.0, "max_tokens": MAX_TOKENS}


@contextlib.asynccontextmanager
async def runtime(sim: Sim, **settings: Any) -> AsyncIterator[Runtime]:
    with tempfile.TemporaryDirectory(prefix="agentd-sched-") as tmp:
        rt = await Runtime.open(Settings(
            home=Path(tmp), demo_agent=False, providers=sim.limits(),
            shutdown_grace_s=1.0, log_level="WARNING", **settings))
        try:
            yield rt
        finally:
            await rt.close()


async def create_agents(rt: Runtime, sim: Sim, names: list[str],
                        settings: dict[str, Any] | None = None) -> None:
    base = {"base_url": sim.base_url, "max_tokens": MAX_TOKENS, **(settings or {})}
    for start in range(0, len(names), 100):
        await asyncio.gather(*(rt.create_agent(name=name, model=MODEL,
                                               instructions=INSTRUCTIONS,
                                               settings=dict(base))
                               for name in names[start:start + 100]))


def kernel_figures(rt: Runtime) -> dict[str, Any]:
    metrics = rt.kernel.metrics()
    lane = metrics["scheduler"]["lanes"].get(PROVIDER, {})
    breakers = metrics["breakers"]
    return {"counters": metrics["calls"], "reserve": lane.get("limits", {}).get("reserve"),
            "lane_wait_ms_last_1024": lane.get("wait_ms"),
            "breaker_opened": sum(b["opened"] for b in breakers.values())}


# --------------------------------------------------------------------------- makespan


async def makespan_kernel(sim: Sim, agents: int, calls: int) -> dict[str, Any]:
    async with runtime(sim) as rt:
        names = [f"agent-{i:04d}" for i in range(agents)]
        await create_agents(rt, sim, names)
        sim.fresh()
        info(f"makespan/kernel: {agents} agents x {calls} calls")

        async def agent(name: str) -> tuple[int, float]:
            failed = 0
            for i in range(calls):
                sent = await rt.send(name, "s", content(i, calls))
                run = await rt.wait(sent.run.id)
                if run.status != "completed":
                    failed += 1
            return failed, time.perf_counter()

        t0, cpu0 = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(agent(n) for n in names))
        makespan = max(end for _, end in results) - t0
        out = {"makespan_s": round(makespan, 2),
               "failed_calls": sum(f for f, _ in results),
               "cpu_ms_per_call": round((time.process_time() - cpu0) * 1000 / (agents * calls),
                                        2),
               **{f"sim_{k}": v for k, v in sim.figures().items()},
               **kernel_figures(rt)}
    info(f"makespan/kernel: {orjson.dumps(out).decode()}")
    return out


async def makespan_direct(sim: Sim, agents: int, calls: int, *, count_rejected: bool,
                          retries: int, timeout_s: float) -> dict[str, Any]:
    import openai

    sim.fresh(count_rejected)
    info(f"makespan/direct (count_rejected={count_rejected}): {agents} agents x {calls} "
         f"calls, openai {openai.__version__}, max_retries={retries}")
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=retries)
    done = 0
    failures: dict[str, int] = {}

    async def agent() -> float:
        nonlocal done
        messages: list[dict[str, Any]] = [{"role": "system", "content": INSTRUCTIONS}]
        for i in range(calls):
            messages.append({"role": "user", "content": content(i, calls)})
            try:
                stream = await client.chat.completions.create(
                    model="sim", messages=messages,  # type: ignore[arg-type]
                    stream=True, stream_options={"include_usage": True},
                    max_tokens=MAX_TOKENS)
                parts = []
                async with stream:
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            parts.append(chunk.choices[0].delta.content)
                messages.append({"role": "assistant", "content": "".join(parts)})
                done += 1
            except openai.APIError as exc:
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1
        return time.perf_counter()

    t0, cpu0 = time.perf_counter(), time.process_time()
    tasks = [asyncio.create_task(agent()) for _ in range(agents)]
    finished, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stopped = bool(pending)
    makespan = (timeout_s if stopped
                else max(t.result() for t in finished) - t0)
    cpu_s = time.process_time() - cpu0
    await client.close()
    out = {"makespan_s": round(makespan, 2), "stopped_at_timeout": stopped,
           "calls_completed": done, "failed_calls": sum(failures.values()),
           "cpu_ms_per_call": round(cpu_s * 1000 / max(done, 1), 2),
           "failures": failures, "count_rejected": count_rejected,
           **{f"sim_{k}": v for k, v in sim.figures().items()}}
    info(f"makespan/direct: {orjson.dumps(out).decode()}")
    return out


async def scenario_makespan(sim: Sim, args: argparse.Namespace) -> dict[str, Any]:
    agents, calls = args.agents, args.calls
    kernel = await makespan_kernel(sim, agents, calls)
    out: dict[str, Any] = {
        "bench": "scheduler", "scenario": "makespan", "agents": agents,
        "calls_per_agent": calls, "sim": sim.params(),
        "ideal_makespan_s": round(agents * calls * sim.latency_s / sim.concurrency, 2),
        "kernel": kernel}
    for flag in args.direct_count_rejected:
        direct = await makespan_direct(sim, agents, calls, count_rejected=flag,
                                       retries=args.sdk_retries,
                                       timeout_s=args.direct_timeout)
        key = "direct" if flag else "direct_count_rejected_false"
        out[key] = direct
        out["ratio" if flag else "ratio_count_rejected_false"] = round(
            direct["makespan_s"] / kernel["makespan_s"], 2)
    out["sdk_max_retries"] = args.sdk_retries
    return out


# --------------------------------------------------------------------------- priority


async def scenario_priority(sim: Sim, args: argparse.Namespace) -> dict[str, Any]:
    async with runtime(sim) as rt:
        bg = [f"bg-{i:04d}" for i in range(args.bg_agents)]
        chats = [f"chat-{i:03d}" for i in range(args.chats)]
        idle = [f"idle-{i:03d}" for i in range(args.idle_chats)]
        await create_agents(rt, sim, bg + chats + idle)
        sim.fresh()
        # The floor: the same chats with nothing else queued.
        idle_ttft: list[float] = []
        await asyncio.gather(*(_chat(rt, name, args, idle_ttft, [], []) for name in idle))
        runs_total = args.bg_agents * args.bg_sessions
        info(f"priority: {runs_total} background runs, then {args.chats} interactive chats")
        t0 = time.perf_counter()
        sent = await asyncio.gather(*(
            rt.send(name, f"s{s}", content(0, 1), priority="background")
            for name in bg for s in range(args.bg_sessions)))
        queued_s = time.perf_counter() - t0
        bg_waits = [asyncio.create_task(rt.wait(r.run.id)) for r in sent]
        ttft: list[float] = []
        turn: list[float] = []
        lost: list[str] = []

        async def chat(index: int, name: str) -> None:
            await asyncio.sleep(args.chat_start + index * args.chat_spread / max(len(chats), 1))
            await _chat(rt, name, args, ttft, turn, lost)

        await asyncio.gather(*(chat(i, n) for i, n in enumerate(chats)))
        chats_done = time.perf_counter() - t0
        runs = await asyncio.gather(*bg_waits)
        bg_makespan_s = time.perf_counter() - t0
        waits = []  # what the scheduler made each interactive call wait, from its event
        for name in chats:
            _, session = await rt.get_session(name, "chat")
            waits += [e.data["queue"]["wait_ms"] / 1000 for e in await rt.read_events(session.id)
                      if e.kind == "message.assistant"]
        out = {
            "bench": "scheduler", "scenario": "priority", "sim": sim.params(),
            "background_runs": runs_total, "queued_in_s": round(queued_s, 2),
            "interactive_runs": len(ttft) + len(lost), "ttft_missed": len(lost),
            "ttft_ms_p50": ms(ttft, 50), "ttft_ms_p99": ms(ttft, 99),
            "ttft_ms_max": ms(ttft, 100),
            "interactive_queue_wait_ms_p50": ms(waits, 50),
            "interactive_queue_wait_ms_p99": ms(waits, 99),
            "interactive_queue_wait_ms_max": ms(waits, 100),
            "interactive_turn_ms_p50": ms(turn, 50), "interactive_turn_ms_max": ms(turn, 100),
            "idle_ttft_ms_p50": ms(idle_ttft, 50), "idle_ttft_ms_max": ms(idle_ttft, 100),
            "chats_done_at_s": round(chats_done, 2),
            "background_makespan_s": round(bg_makespan_s, 2),
            "background_ideal_s": round(runs_total * sim.latency_s / sim.concurrency, 2),
            "background_failed": sum(r.status != "completed" for r in runs),
            **{f"sim_{k}": v for k, v in sim.figures().items()},
            **kernel_figures(rt)}
    return out


async def _chat(rt: Runtime, name: str, args: argparse.Namespace, ttft: list[float],
                turn: list[float], lost: list[str]) -> None:
    """One interactive chat: ``--chat-messages`` messages in turn; TTFT of each."""
    sub = None
    try:
        for i in range(args.chat_messages):
            started = time.perf_counter()
            result = await rt.send(name, "chat", content(i, args.chat_messages),
                                   priority="interactive")
            if sub is None:
                # The session exists only now; the run's first token is at least one
                # provider latency (0.2 s) away.
                sub = rt.subscribe(result.session.id)
            first = await _first_token(sub, result.run.id, limit_s=60.0)
            if first is None:
                lost.append(result.run.id)
            else:
                ttft.append(first - started)
            await rt.wait(result.run.id)
            turn.append(time.perf_counter() - started)
            await asyncio.sleep(args.chat_think)
    finally:
        if sub is not None:
            sub.close()


async def _first_token(sub: Any, run_id: str, limit_s: float) -> float | None:
    deadline = time.perf_counter() + limit_s
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        try:
            item = await asyncio.wait_for(sub.queue.get(), left)
        except TimeoutError:
            return None
        now = time.perf_counter()
        if isinstance(item, Token):
            if item.run_id == run_id and item.text:
                return now
        elif item.run_id == run_id and item.kind in ("run.completed", "run.failed"):
            return None  # the run ended and no token was seen


# --------------------------------------------------------------------------- fairness


async def backlog(sim: Sim, args: argparse.Namespace, agents: dict[str, dict[str, Any]],
                  sessions: int, messages: int, **settings: Any) -> dict[str, Any]:
    """Queue ``sessions`` x ``messages`` runs per agent; completed calls per agent in the
    window, and whether every agent stayed backlogged through it."""
    async with runtime(sim, **settings) as rt:
        for name, agent_settings in agents.items():
            await create_agents(rt, sim, [name], agent_settings)
        sim.fresh()
        t0 = time.perf_counter()
        sent = await asyncio.gather(*(
            _queue_session(rt, name, f"s{s}", messages)
            for name in agents for s in range(sessions)))
        t_sent = time.perf_counter()
        finished: dict[str, list[float]] = {name: [] for name in agents}

        async def follow(name: str, run_ids: list[str]) -> None:
            for run_id in run_ids:
                run = await rt.wait(run_id)
                if run.status == "completed":
                    finished[name].append(time.perf_counter())

        waiters = [asyncio.create_task(follow(name, ids)) for name, ids in sent]
        start = t_sent + args.warm
        end = start + args.window
        await asyncio.sleep(end - time.perf_counter() + 0.05)
        counts = {n: sum(start <= t < end for t in ts) for n, ts in finished.items()}
        by_end = {n: sum(t < end for t in ts) for n, ts in finished.items()}
        per_agent = sessions * messages
        backlogged = all(per_agent - by_end[n] >= sessions for n in agents)
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        out = {"counts": counts, "backlogged_throughout": backlogged,
               "calls_in_window": sum(counts.values()),
               "calls_per_s": round(sum(counts.values()) / args.window, 1),
               "queued_in_s": round(t_sent - t0, 2),
               **{f"sim_{k}": v for k, v in sim.figures().items()},
               **kernel_figures(rt)}
    return out


async def _queue_session(rt: Runtime, name: str, key: str, messages: int
                         ) -> tuple[str, list[str]]:
    ids = []
    for i in range(messages):
        result = await rt.send(name, key, content(i, messages))
        ids.append(result.run.id)
    return name, ids


def jain(values: list[int]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return round(total * total / (len(values) * squares), 4) if squares else 0.0


def backlog_messages(sim: Sim, args: argparse.Namespace, share: float, sessions: int) -> int:
    """Messages per session so that an agent with ``share`` of the provider is still
    backlogged at the window's end with 30 % to spare (at the provider's full rate)."""
    needed = share * sim.rpm / 60 * (args.warm + args.window) * 1.3 + sessions
    return math.ceil(needed / sessions)


async def scenario_fairness(sim: Sim, args: argparse.Namespace) -> dict[str, Any]:
    n = args.fair_agents
    if args.fair_messages is None:
        args.fair_messages = backlog_messages(sim, args, 1 / n, args.fair_sessions)
    if args.weighted_messages is None:
        args.weighted_messages = backlog_messages(sim, args, 4 / 7, args.weighted_sessions)
    info(f"fairness: {n} agents x {args.fair_sessions} sessions x {args.fair_messages} "
         f"messages, equal weights")
    equal = await backlog(sim, args, {f"fair-{i:03d}": {} for i in range(n)},
                          args.fair_sessions, args.fair_messages)
    counts = list(equal["counts"].values())
    equal_out = {"agents": n, "sessions_per_agent": args.fair_sessions,
                 "messages_per_session": args.fair_messages, "jain": jain(counts),
                 "calls_min": min(counts), "calls_max": max(counts),
                 **{k: v for k, v in equal.items() if k != "counts"}}
    info(f"fairness/equal: {orjson.dumps(equal_out).decode()}")

    weights = (1.0, 2.0, 4.0)
    info("fairness: weights 1:2:4 as agent settings.weight")
    by_agent = await backlog(
        sim, args, {f"w{w:g}": {"weight": w} for w in weights},
        args.weighted_sessions, args.weighted_messages)
    info("fairness: weights 1:2:4 as tenants")
    by_tenant = await backlog(
        sim, args, {f"t{w:g}": {"tenant": f"tenant-{w:g}"} for w in weights},
        args.weighted_sessions, args.weighted_messages,
        tenants={f"tenant-{w:g}": {"weight": w} for w in weights})

    def ratios(result: dict[str, Any]) -> dict[str, Any]:
        values = list(result["counts"].values())
        base = values[0] or 1
        return {"counts": result["counts"],
                "ratio": [round(v / base, 2) for v in values],
                **{k: v for k, v in result.items() if k != "counts"}}

    return {"bench": "scheduler", "scenario": "fairness", "sim": sim.params(),
            "window_s": args.window, "warm_s": args.warm, "equal": equal_out,
            "weights": list(weights), "sessions_per_weighted_agent": args.weighted_sessions,
            "messages_per_weighted_session": args.weighted_messages,
            "agent_weights": ratios(by_agent), "tenant_weights": ratios(by_tenant)}


# --------------------------------------------------------------------------- overhead


async def _acquire_release(sched: Scheduler, provider: str, n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        grant = await sched.acquire(provider=provider, model="m", priority="interactive",
                                    tenant="t", agent="a", weight=1.0, tokens=300)
        grant.release(280)
        out.append((clock() - t) / 1000.0)
    return out


async def _deep_queue(tasks: int, per_task: int) -> float:
    """µs per grant with ``tasks`` callers on 8 slots (the fair-queuing tree in use)."""
    sched = Scheduler({"p": LaneLimits(concurrency=8)})

    async def caller(i: int) -> None:
        for _ in range(per_task):
            grant = await sched.acquire(provider="p", model="m", priority="background",
                                        tenant=f"t{i % 10}", agent=f"a{i}", tokens=0)
            await asyncio.sleep(0)
            grant.release(None)

    t = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(tasks)))
    return (time.perf_counter() - t) / (tasks * per_task) * 1e6


async def scenario_overhead(args: argparse.Namespace) -> dict[str, Any]:
    n = args.overhead_iterations
    sched = Scheduler({"limited": LaneLimits(concurrency=8, rpm=1e9, tpm=1e12)})
    await _acquire_release(sched, "unlimited", 2000)
    await _acquire_release(sched, "limited", 2000)
    unlimited = await _acquire_release(sched, "unlimited", n)
    limited = await _acquire_release(sched, "limited", n)
    deep_us = await _deep_queue(1000, 20)

    model = resolve_model("scripted", settings={"script": [{"text": "done"}]}, agent="a")
    kernel = Kernel(Scheduler({}), BudgetBook(_no_usage, shared=False),
                    retry=RetryPolicy(), breaker=BreakerSettings())
    limited_kernel = Kernel(
        Scheduler({"scripted": LaneLimits(concurrency=8, rpm=1e9, tpm=1e12)}),
        BudgetBook(_no_usage, shared=False), retry=RetryPolicy(), breaker=BreakerSettings())

    async def note(kind: str, data: dict[str, Any]) -> None:
        del kind, data

    def caller(k: Kernel) -> ModelCaller:
        return ModelCaller(k, [Target(model=model, info=None)], priority="interactive",
                           tenant="default", agent="a", weight=1.0, retry=RetryPolicy(),
                           publish=lambda text, reset: None, note=note)

    request = ModelRequest(system=INSTRUCTIONS, messages=[UserMessage(content="hello")])
    direct: list[float] = []
    kerneled: list[float] = []
    kerneled_limited: list[float] = []
    via_kernel = caller(kernel)
    via_limited = caller(limited_kernel)
    clock = time.perf_counter_ns
    for block in range(2 + n // 1000):  # interleaved blocks of 1,000: drift hits all three
        for sample, run in ((direct, lambda: model.complete(request)),
                            (kerneled, lambda: via_kernel.call(request, tokens=0)),
                            (kerneled_limited, lambda: via_limited.call(request, tokens=300))):
            for _ in range(1000):
                t = clock()
                await run()
                if block >= 2:  # two warm-up blocks
                    sample.append((clock() - t) / 1000.0)

    def us(values: list[float], q: float) -> float:
        return round(percentile(sorted(values), q) or 0.0, 2)

    return {
        "bench": "scheduler", "scenario": "overhead", "iterations": n,
        "acquire_release_us_p50": us(unlimited, 50), "acquire_release_us_p99": us(unlimited, 99),
        "acquire_release_limited_us_p50": us(limited, 50),
        "acquire_release_limited_us_p99": us(limited, 99),
        "grant_under_deep_queue_us": round(deep_us, 2),
        "model_complete_us_p50": us(direct, 50), "model_complete_us_p99": us(direct, 99),
        "kernel_call_us_p50": us(kerneled, 50), "kernel_call_us_p99": us(kerneled, 99),
        "kernel_call_limited_us_p50": us(kerneled_limited, 50),
        "kernel_call_limited_us_p99": us(kerneled_limited, 99),
        "kernel_added_us_p50": round(us(kerneled, 50) - us(direct, 50), 2),
        "kernel_added_limited_us_p50": round(us(kerneled_limited, 50) - us(direct, 50), 2),
    }


async def _no_usage(scope: str, key: str, since: str) -> tuple[int, float]:
    del scope, key, since
    return 0, 0.0


# --------------------------------------------------------------------------- main


async def amain(args: argparse.Namespace) -> None:
    sim: Sim | None = None
    try:
        for name in args.only:
            if name == "overhead":
                out = await scenario_overhead(args)
            else:
                if sim is None:
                    sim = Sim(args)
                    info(f"simulated provider at {sim.base_url} (pid {sim.proc.pid}): "
                         f"{orjson.dumps(sim.params()).decode()}")
                runner = {"makespan": scenario_makespan, "priority": scenario_priority,
                          "fairness": scenario_fairness}[name]
                t = time.perf_counter()
                out = await runner(sim, args)
                out["wall_s"] = round(time.perf_counter() - t, 1)
            out["loop"] = args.loop
            out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
            print(orjson.dumps(out).decode(), flush=True)
    finally:
        if sim is not None:
            sim.proc.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"comma-separated scenarios among {', '.join(SCENARIOS)}")
    p.add_argument("--quick", action="store_true",
                   help="smaller loads: 100 agents, 400 background runs, 20 agents in "
                        "fairness, 10 s window, 20,000 overhead iterations")
    p.add_argument("--seed", type=int, default=20261124)
    sim = p.add_argument_group("simulated provider")
    sim.add_argument("--concurrency", type=int, default=8)
    sim.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    p.add_argument("--reserve", type=int, default=0,
                   help="kernel slots kept for interactive calls (providers.X.reserve)")
    sim.add_argument("--rpm", type=float, default=2400.0)
    sim.add_argument("--tpm-calls", type=int, default=5,
                     help="tpm = rpm x the mean tokens of a session of this many calls")
    mk = p.add_argument_group("makespan")
    mk.add_argument("--agents", type=int, default=None, help="default 500 (--quick 100)")
    mk.add_argument("--calls", type=int, default=5)
    mk.add_argument("--sdk-retries", type=int, default=100, help="direct side's max_retries")
    mk.add_argument("--direct-timeout", type=float, default=None,
                    help="stop the direct side after this many seconds (default: 10 x "
                         "the ideal makespan)")
    mk.add_argument("--direct-count-rejected", default="true,false",
                    help="run the direct side with the sim's count_rejected set to each "
                         "of these (default: true,false)")
    pr = p.add_argument_group("priority")
    pr.add_argument("--bg-agents", type=int, default=None, help="default 200 (--quick 80)")
    pr.add_argument("--bg-sessions", type=int, default=5)
    pr.add_argument("--chats", type=int, default=20)
    pr.add_argument("--chat-messages", type=int, default=3)
    pr.add_argument("--chat-start", type=float, default=1.0,
                    help="seconds after the background runs are queued")
    pr.add_argument("--chat-spread", type=float, default=None,
                    help="chats start over this many seconds (default 10, --quick 4)")
    pr.add_argument("--idle-chats", type=int, default=5,
                    help="chats measured first with nothing else queued (the TTFT floor)")
    pr.add_argument("--chat-think", type=float, default=0.3,
                    help="pause between a chat's answer and its next message")
    fa = p.add_argument_group("fairness")
    fa.add_argument("--fair-agents", type=int, default=None, help="default 40 (--quick 20)")
    fa.add_argument("--fair-sessions", type=int, default=4)
    fa.add_argument("--fair-messages", type=int, default=None,
                    help="default: enough for the window (see backlog_messages)")
    fa.add_argument("--weighted-sessions", type=int, default=64)
    fa.add_argument("--weighted-messages", type=int, default=None,
                    help="default: enough for the window (see backlog_messages)")
    fa.add_argument("--warm", type=float, default=3.0)
    fa.add_argument("--window", type=float, default=None, help="default 15 (--quick 8)")
    ov = p.add_argument_group("overhead")
    ov.add_argument("--overhead-iterations", type=int, default=None,
                    help="default 100,000 (--quick 20,000)")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    args = p.parse_args(argv)
    quick = args.quick

    def default(name: str, full: Any, small: Any) -> None:
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)

    default("agents", 500, 100)
    if args.direct_timeout is None:
        args.direct_timeout = max(60.0, 10 * args.agents * args.calls * args.latency
                                  / args.concurrency)
    default("bg_agents", 200, 80)
    default("chat_spread", 10.0, 4.0)
    default("fair_agents", 40, 20)
    default("window", 15.0, 8.0)
    default("overhead_iterations", 100_000, 20_000)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; use {', '.join(SCENARIOS)}")
    flags = {"true": True, "false": False}
    try:
        args.direct_count_rejected = [flags[v.strip().lower()]
                                      for v in args.direct_count_rejected.split(",") if v.strip()]
    except KeyError:
        p.error("--direct-count-rejected takes true, false or both: true,false")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    use_uvloop = args.loop == "uvloop" or (
        args.loop == "auto" and importlib.util.find_spec("uvloop") is not None)
    args.loop = "uvloop" if use_uvloop else "asyncio"
    gc.freeze()
    if use_uvloop:
        import uvloop

        uvloop.run(amain(args))
    else:
        asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
