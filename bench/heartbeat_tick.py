"""What finding due heartbeats costs with many agents, few of them beating.

Creates ``--agents`` agents in a fresh SQLite store (``--beating`` of them with a
heartbeat on), then times ``HeartbeatService.sync`` (the rebuild from the store, every
30 s and at start) and ``tick`` with nothing due (what the 1 s housekeeping job does
between beats). Prints one JSON line.

    python bench/heartbeat_tick.py --agents 10000 --beating 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agentd.autonomy.heartbeat import HeartbeatService
from agentd.store import open_store


async def main(agents: int, beating: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            filler = {"max_steps": 8, "memory": {"auto_recall": True},
                      "instructions_note": "x" * 400}
            for i in range(agents):
                settings: dict[str, Any] = dict(filler)
                if i < beating:
                    settings["heartbeat"] = {"enabled": True, "every_s": 3600,
                                             "document": "check"}
                await store.create_agent(name=f"agent{i}", model="scripted",
                                         instructions="", tools=[], settings=settings)
            now = time.time()
            service = HeartbeatService(store, runs=None, agents=None,  # type: ignore[arg-type]
                                       workspace_of=lambda agent_id: Path(tmp),
                                       clock=lambda: now, resync_s=1e9)
            syncs = []
            for _ in range(repeats):
                started = time.perf_counter()
                await service.sync()
                syncs.append((time.perf_counter() - started) * 1000)
            for plan in service.plans.values():
                plan.next_at = now + 3600  # nothing due: the steady state
            ticks = []
            for _ in range(repeats * 10):
                started = time.perf_counter()
                await service.tick()
                ticks.append((time.perf_counter() - started) * 1e6)
            return {"bench": "heartbeat_tick", "agents": agents, "beating": len(service.plans),
                    "sync_ms_median": round(statistics.median(syncs), 2),
                    "tick_us_median": round(statistics.median(ticks), 1)}
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--beating", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.agents, args.beating, args.repeats))))
