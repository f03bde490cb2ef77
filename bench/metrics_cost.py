"""What the metrics cost per HTTP request and per event, in-process (no daemon).

    python bench/metrics_cost.py

HTTP: an ASGI app that answers 200 at once, called N times through
``HttpMetrics`` and without it; the difference is the middleware's CPU per request.
Events: ``Metrics.take`` of a turn's counted events (two ``message.assistant`` with
usage and queue, one ``tool.finished``, ``run.started``, ``run.completed``), the
follower's work per turn. One JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from typing import Any

from agentd.runtime.bus import EventBus
from agentd.store.records import EventRecord
from agentd.telemetry.metrics import HttpMetrics, Metrics, State

N = 200_000


class _Route:
    path = "/v1/agents/{name}"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = _Route
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _send(message: dict[str, Any]) -> None:
    return None


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _per_request(app: Any) -> float:
    scope = {"type": "http", "method": "GET", "path": "/v1/agents/a"}
    started = time.process_time()
    for _ in range(N):
        await app(dict(scope), _receive, _send)
    return (time.process_time() - started) / N * 1e6


def _metrics() -> Metrics:
    async def tenant(session_id: str) -> str | None:
        return "default"

    async def state() -> State:
        return State(agents_by_state={}, awake=0, runs_by_state={}, node="n", runs_here=0,
                     queued_here=0, kernel={}, egress_held=0, egress_max=0)

    return Metrics(bus=EventBus(), tenant_of_session=tenant, state=state)


def _turn() -> list[EventRecord]:
    usage = {"input_tokens": 900, "output_tokens": 40, "cached_tokens": 0,
             "cost_usd": 0.0012}
    step = {"text": "", "tool_calls": [], "usage": usage, "finish_reason": "stop",
            "model": "openai:gpt-4.1-mini", "step": 0,
            "queue": {"class": "interactive", "lane": "openai", "wait_ms": 0.2}}
    kinds = [("run.started", {}), ("message.assistant", step),
             ("tool.finished", {"call_id": "c", "name": "shell", "output": "",
                                "is_error": False, "duration_ms": 12.0}),
             ("message.assistant", step), ("run.completed", {"output": "", "steps": 2,
                                                             "usage": usage})]
    return [EventRecord(session_id="s", seq=i, kind=k, data=d, at=0.0, run_id="r")
            for i, (k, d) in enumerate(kinds)]


async def main() -> None:
    metrics = _metrics()
    bare = await _per_request(_app)
    wrapped = await _per_request(HttpMetrics(_app, metrics=lambda: metrics))
    turn = _turn()
    turns = N // 10
    started = time.process_time()
    for _ in range(turns):
        for event in turn:
            await metrics.take(event)
    per_turn = (time.process_time() - started) / turns * 1e6
    print(json.dumps({"bench": "metrics_cost", "requests": N,
                      "request_us_bare": round(bare, 2),
                      "request_us_with_metrics": round(wrapped, 2),
                      "middleware_us_per_request": round(wrapped - bare, 2),
                      "follower_us_per_turn": round(per_turn, 2),
                      "events_per_turn": len(turn), "python": platform.python_version()}))


if __name__ == "__main__":
    asyncio.run(main())
