"""Sleeping agents: what one costs in memory, and how fast it wakes.

1. Two SQLite homes: one with just a warm-up agent, one with that agent plus N
   (default 100,000) agents created through the store. The real daemon
   (``python -m agentd serve``) starts on each; after the same warm-up (turns to the
   warm-up agent) its resident memory (VmRSS) is read. None of the N agents has been
   touched, so they all sleep: ``rss_per_sleeping_agent_b`` is the difference over N.
2. Wake: W agents (default 1,000) each get one message (their session now has a
   history), then the script waits until /health reports every agent asleep again
   (``agent_idle_s``). Then one message (``wait=true``, scripted model) to each of the
   W sleeping agents in turn, over one keep-alive connection: the latency of a turn to
   a sleeping agent, wake included (record read, model built, history folded from the
   log), p50 / p99. The same turn again to the same agents, now awake, is the
   baseline; ``wake_overhead_ms_p50`` is the difference of the medians.
3. VmRSS after the W agents first woke, over the daemon's with all asleep:
   ``rss_per_awake_agent_b`` (agent record, resolved model, one session's history);
   ``rss_per_rewoken_agent_b`` is the same after they slept and woke again (Python
   reuses the memory freed by sleeping, which it does not return to the OS). Then,
   after ``agent_idle_s``, /health must report them asleep again.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/sleep_wake.py [--agents 100000] [--wake 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from _load import LocalDaemon, info, percentile
from agentd.store import open_store

WARMUP_TURNS = 300


async def _create_agents(home: Path, count: int) -> None:
    store = await open_store(f"sqlite:///{home}/agentd.db")
    try:
        await store.create_agent(name="warm", model="scripted", instructions="", tools=[],
                                 settings={})
        batch = 2000
        for start in range(0, count, batch):
            await asyncio.gather(*(
                store.create_agent(name=f"agent-{i:06d}", model="scripted",
                                   instructions="You are a sleeping agent.", tools=[],
                                   settings={})
                for i in range(start, min(start + batch, count))))
            if start and start % 20000 == 0:
                info(f"created {start} agents")
    finally:
        await store.close()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _turn(http: httpx.Client, agent: str, text: str) -> float:
    started = time.perf_counter()
    response = http.post(f"/v1/agents/{agent}/sessions/s/messages", json={"content": text})
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or response.json()["status"] != "completed":
        raise RuntimeError(f"turn to {agent} failed: {response.status_code} {response.text}")
    return elapsed


TOKEN = "bench-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Daemon(LocalDaemon):
    def __init__(self, home: Path, idle_s: float) -> None:
        super().__init__(home, TOKEN, {"AGENTD_AGENT_IDLE_S": str(idle_s)}, ready_s=60)

    def rss(self) -> int:
        assert self.server.pid is not None
        return _rss_bytes(self.server.pid)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base}/health", timeout=5).json()
        return body


def _wait_asleep(daemon: Daemon, idle_s: float) -> None:
    deadline = time.monotonic() + idle_s * 3 + 10
    while daemon.health()["agents_awake"] > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("agents did not go to sleep")
        time.sleep(0.2)


def _warm_up(daemon: Daemon) -> int:
    with httpx.Client(base_url=daemon.base, timeout=30, headers=AUTH) as http:
        for i in range(WARMUP_TURNS):
            _turn(http, "warm", f"warm {i}")
    time.sleep(0.5)
    return daemon.rss()


def run(agents: int, wake: int, idle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agentd-sleep-") as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        empty.mkdir()
        full.mkdir()
        asyncio.run(_create_agents(empty, 0))
        started = time.monotonic()
        asyncio.run(_create_agents(full, agents))
        info(f"{agents} agents created in {time.monotonic() - started:.1f}s")

        with Daemon(empty, idle_s) as daemon:
            rss_empty = _warm_up(daemon)
        info(f"daemon with no agents: {rss_empty / 2**20:.1f} MiB")

        with Daemon(full, idle_s) as daemon:
            rss_full = _warm_up(daemon)
            health = daemon.health()
            info(f"daemon with {agents} sleeping agents: {rss_full / 2**20:.1f} MiB, "
                 f"awake {health['agents_awake']}")
            sleeping_before = health["agents_sleeping"]
            names = [f"agent-{i:06d}" for i in range(0, agents, max(agents // wake, 1))][:wake]
            with httpx.Client(base_url=daemon.base, timeout=30, headers=AUTH) as http:
                for name in names:
                    _turn(http, name, "first")
                rss_primed = daemon.rss()
                _wait_asleep(daemon, idle_s)
                rss_slept = daemon.rss()
                cold = [_turn(http, name, "wake up") for name in names]
                awake_health = daemon.health()
                rss_awake = daemon.rss()
                warm = [_turn(http, name, "again") for name in names]
            info(f"woke {len(names)} agents; awake now {awake_health['agents_awake']}")
            _wait_asleep(daemon, idle_s)
            asleep_again = daemon.health()
            rss_after_sleep = daemon.rss()

    cold.sort()
    warm.sort()

    def ms(values: list[float], q: float) -> float:
        return round((percentile(values, q) or 0.0) * 1000, 3)

    return {
        "bench": "sleep_wake",
        "agents": agents,
        "store": "sqlite",
        "rss_empty_mib": round(rss_empty / 2**20, 1),
        "rss_with_sleeping_mib": round(rss_full / 2**20, 1),
        "rss_per_sleeping_agent_b": round((rss_full - rss_empty) / agents, 1),
        "sleeping_reported": sleeping_before,
        "woken": len(names),
        "wake_turn_ms_p50": ms(cold, 50),
        "wake_turn_ms_p99": ms(cold, 99),
        "awake_turn_ms_p50": ms(warm, 50),
        "awake_turn_ms_p99": ms(warm, 99),
        "wake_overhead_ms_p50": round(ms(cold, 50) - ms(warm, 50), 3),
        "awake_reported": awake_health["agents_awake"],
        "rss_with_awake_mib": round(rss_awake / 2**20, 1),
        "rss_per_awake_agent_b": round((rss_primed - rss_full) / len(names), 1),
        "rss_per_rewoken_agent_b": round((rss_awake - rss_slept) / len(names), 1),
        "asleep_again_awake_reported": asleep_again["agents_awake"],
        "rss_after_sleep_mib": round(rss_after_sleep / 2**20, 1),
        "agent_idle_s": idle_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--wake", type=int, default=1_000)
    parser.add_argument("--idle-s", type=float, default=6.0,
                        help="the daemon's agent_idle_s (longer than two wake passes)")
    args = parser.parse_args()
    print(orjson.dumps(run(args.agents, args.wake, args.idle_s)).decode(), flush=True)


if __name__ == "__main__":
    main()
