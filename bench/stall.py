"""Liveness while hostile tool calls run, and what the tool workers cost per call.

    PYTHONPATH=src python bench/stall.py [--seconds 20] [--scenario all|tools|tenants]

Prints one JSON line:

- ``health_p50_ms`` / ``health_p99_ms`` / ``health_max_ms``: ``GET /health`` of a live
  daemon (real socket) polled every 20 ms while two agents keep making hostile calls
  (``grep`` with ``(a+)+$`` on a line of ``a``, killed at the tool timeout, and
  ``calculator`` with ``(9**9999)**2000``); target p99 < 100 ms;
- ``hostile_greps`` / ``hostile_powers``: how many hostile calls ran meanwhile (a grep
  runs to its 3 s limit; the power is refused at once by the calculator's bound);
- ``read_file_ms`` / ``grep_ms``: mean time of one call in a worker process and in a
  thread (the old way), on a small workspace, and the difference (``*_overhead_ms``);
- ``tenant_*`` (issue 27): one tenant attacks with everything it is allowed while
  ``/health`` is polled every 20 ms and another tenant's agent keeps using the
  network: the attacker churns agents (create, run a command, delete: under root its
  uids must be reclaimed, from a range of 40), holds egress connections to its
  agents' cap (``[sandbox] egress_max_per_agent``) and past it, and runs the hostile
  grep and power. ``tenant_health_p99_ms`` (target under 100 ms), the agents churned,
  the connections the attacker held at most and was refused, and the victim's
  connections made and failed (target: none failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from agentd.client import Client
from agentd.config import SandboxConfig, Settings
from agentd.llm.scripted import enqueue
from agentd.testing.live import LiveServer, free_port
from agentd.tools import FILE_TOOLS, ToolContext
from agentd.tools.workers import WorkerPool


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


TOKEN = "bench-token-0123456789abcdef"


def liveness(seconds: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="agentd-bench-stall-"))
    settings = Settings(home=home, demo_agent=False, tool_timeout_s=3.0, tokens=[TOKEN],
                        database_url=f"sqlite:///{home / 'agentd.db'}")
    stop = threading.Event()
    latencies: list[float] = []
    calls = {"grepper": 0, "counter": 0}

    def poll() -> None:
        with httpx.Client(base_url=live.url, timeout=120) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.get("/health")
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    def attack(name: str, turn: dict[str, Any]) -> None:
        with Client(live.url, timeout=120, token=TOKEN) as client:
            n = 0
            while not stop.is_set():
                n += 1
                enqueue(turn, {"text": "done"}, agent=name)
                client.send(name, f"k{n}", "go")
                calls[name] += 1

    with LiveServer(settings) as live:
        with Client(live.url, token=TOKEN) as client:
            client.create_agent("grepper", model="scripted", tools=["grep", "write_file"])
            client.create_agent("counter", model="scripted", tools=["calculator"])
            enqueue({"tool_calls": [{"name": "write_file", "arguments": {
                "path": "line", "content": "a" * 30 + "!\n"}}]}, {"text": "ok"},
                agent="grepper")
            client.send("grepper", "setup", "go")
        threads = [threading.Thread(target=poll),
                   threading.Thread(target=attack, args=("grepper", {"tool_calls": [
                       {"name": "grep", "arguments": {"pattern": "(a+)+$"}}]})),
                   threading.Thread(target=attack, args=("counter", {"tool_calls": [
                       {"name": "calculator",
                        "arguments": {"expression": "(9**9999)**2000"}}]}))]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
    return {"health_requests": len(latencies),
            "health_p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
            "health_p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
            "health_max_ms": round(max(latencies) * 1000, 2),
            "hostile_greps": calls["grepper"], "hostile_powers": calls["counter"]}


#: Run in an agent's sandbox: ``n`` CONNECTs to ``target`` through its egress proxy,
#: each kept open; prints how many were let through and refused, then (with "hold")
#: keeps them until the file ``release`` shows up in the workspace.
HOLD = r"""
import os, socket, sys, time
host, port = os.environ["HTTP_PROXY"].split("//")[1].rsplit(":", 1)
target, n = sys.argv[1], int(sys.argv[2])
kept, ok, refused = [], 0, 0
for _ in range(n):
    s = socket.create_connection((host, int(port)), timeout=20)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    if b" 200 " in s.recv(4096):
        ok += 1
        kept.append(s)
    else:
        refused += 1
        s.close()
open("held", "w").write(f"{ok} {refused}")
while sys.argv[3:] == ["hold"] and not os.path.exists("release"):
    time.sleep(0.1)
print(ok, refused)
"""


def _shell_turn(command: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "shell", "arguments": {"command": command}}]}


def tenants(seconds: float, holding: int = 3) -> dict[str, Any]:
    """One tenant attacks with everything it may; /health and another tenant's agent
    are measured meanwhile (see the module's docstring)."""
    home = Path(tempfile.mkdtemp(prefix="agentd-bench-tenants-"))
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "http.server", "--bind",
                                 "127.0.0.1", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    target = f"127.0.0.1:{port}"
    settings = Settings(home=home, demo_agent=False, tool_timeout_s=3.0, tokens=[TOKEN],
                        database_url=f"sqlite:///{home / 'agentd.db'}",
                        sandbox=SandboxConfig(private_endpoints=[target], uid_count=40,
                                              uid_base=350_000))
    per_agent = settings.sandbox.egress_max_per_agent
    # (allowed in a tainted session too: the connections' files taint the workspace)
    allow = {"policy": {"network": ["127.0.0.1"],
                        "rules": [{"tool": t, "action": "allow", "tainted": taint}
                                  for t in ("shell", "grep", "write_file", "calculator")
                                  for taint in (False, True)]}}
    stop = threading.Event()
    latencies: list[float] = []
    counts = {"churned": 0, "churn_errors": 0, "victim_ok": 0, "victim_failed": 0,
              "greps": 0, "powers": 0, "peak_held": 0, "health_errors": 0}
    holders = [f"hold{i}" for i in range(holding)]
    fd_limit = [0]

    def agent_id(name: str) -> str:
        with sqlite3.connect(home / "agentd.db") as db:
            found: str = db.execute("SELECT id FROM agents WHERE name = ?",
                                    (name,)).fetchone()[0]
        return found

    def poll() -> None:
        with httpx.Client(base_url=live.url, timeout=10) as http:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    answer = http.get("/health")
                    answer.raise_for_status()
                    counts["peak_held"] = max(counts["peak_held"],
                                              answer.json().get("egress_connections", 0))
                except Exception:  # (what an exhausted descriptor table looks like)
                    counts["health_errors"] += 1
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    def churn() -> None:
        with Client(live.url, timeout=120, token=TOKEN) as client:
            n = 0
            while not stop.is_set():
                n += 1
                name = f"churn{n}"
                try:
                    client.create_agent(name, model="scripted", tools=["shell"], settings={
                        **allow, "tenant": "evil",
                        "script": [_shell_turn("id -u"), {"text": "done"}]})
                    client.send(name, "k", "go")
                    client.delete_agent(name)
                    counts["churned"] += 1
                except Exception:
                    counts["churn_errors"] += 1

    def hostile(name: str, turn: dict[str, Any], key: str) -> None:
        with Client(live.url, timeout=120, token=TOKEN) as client:
            n = 0
            while not stop.is_set():
                n += 1
                enqueue(turn, {"text": "done"}, agent=name)
                client.send(name, f"k{n}", "go")
                counts[key] += 1

    def hold(name: str) -> None:
        with Client(live.url, timeout=600, token=TOKEN) as client, \
                contextlib.suppress(Exception):
            client.send(name, "k", "go")

    def victim() -> None:
        with Client(live.url, timeout=120, token=TOKEN) as client:
            n = 0
            while not stop.is_set():
                n += 1
                enqueue(_shell_turn(f"python3 -c {shlex.quote(HOLD)} {target} 1"),
                        {"text": "done"}, agent="victim")
                try:
                    run = client.send("victim", f"k{n}", "go")
                    ok = run.get("status") == "completed" and (
                        home / "workspaces" / agent_id("victim") / "held"
                    ).read_text() == "1 0"
                except Exception:
                    ok = False
                counts["victim_ok" if ok else "victim_failed"] += 1

    with LiveServer(settings) as live:
        with Client(live.url, token=TOKEN) as client:
            for i, name in enumerate(holders):
                command = f"python3 -c {shlex.quote(HOLD)} {target} {per_agent + 8} hold"
                # (a grant of its own each: on main, a proxy of its own each)
                policy = {**allow["policy"], "network": ["127.0.0.1", f"h{i}.invalid"]}
                client.create_agent(name, model="scripted", tools=["shell"], settings={
                    "policy": policy, "tenant": "evil",
                    "script": [_shell_turn(command), {"text": "done"}]})
            client.create_agent("grepper", model="scripted", tools=["grep", "write_file"],
                                settings={**allow, "tenant": "evil"})
            client.create_agent("counter", model="scripted", tools=["calculator"],
                                settings={**allow, "tenant": "evil"})
            client.create_agent("victim", model="scripted", tools=["shell"],
                                settings={**allow, "tenant": "good"})
            enqueue({"tool_calls": [{"name": "write_file", "arguments": {
                "path": "line", "content": "a" * 30 + "!\n"}}]}, {"text": "ok"},
                agent="grepper")
            client.send("grepper", "setup", "go")
            fd_limit[0] = httpx.get(f"{live.url}/health").json().get("fd_limit", 0)
        threads = [threading.Thread(target=hold, args=(name,)) for name in holders]
        for thread in threads:
            thread.start()
        for name in holders:  # every holder holds its cap before the clock starts
            held = home / "workspaces" / agent_id(name) / "held"
            waited = time.monotonic() + 60
            while not held.exists() and time.monotonic() < waited:
                time.sleep(0.05)
        workers = [threading.Thread(target=poll), threading.Thread(target=churn),
                   threading.Thread(target=victim),
                   threading.Thread(target=hostile, args=("grepper", {"tool_calls": [
                       {"name": "grep", "arguments": {"pattern": "(a+)+$"}}]}, "greps")),
                   threading.Thread(target=hostile, args=("counter", {"tool_calls": [
                       {"name": "calculator",
                        "arguments": {"expression": "(9**9999)**2000"}}]}, "powers"))]
        for thread in workers:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in workers:
            thread.join()
        held_refused = [(home / "workspaces" / agent_id(n) / "held").read_text().split()
                        if (home / "workspaces" / agent_id(n) / "held").exists()
                        else ["0", "0"] for n in holders]
        for name in holders:
            (home / "workspaces" / agent_id(name) / "release").touch()
        for thread in threads:
            thread.join()
    upstream.kill()
    upstream.wait()
    return {"tenant_health_requests": len(latencies),
            "tenant_health_p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
            "tenant_health_p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
            "tenant_health_max_ms": round(max(latencies) * 1000, 2),
            "tenant_health_errors": counts["health_errors"],
            "tenant_fd_limit": fd_limit[0],
            "tenant_holders": holding, "tenant_held_by_holder": [" ".join(h) for h in held_refused],
            "tenant_agents_churned": counts["churned"],
            "tenant_churn_errors": counts["churn_errors"],
            "tenant_egress_per_agent": per_agent,
            "tenant_egress_held_peak": counts["peak_held"],
            "tenant_egress_let_through": sum(int(h) for h, _ in held_refused),
            "tenant_egress_refused": sum(int(r) for _, r in held_refused),
            "tenant_hostile_greps": counts["greps"], "tenant_hostile_powers": counts["powers"],
            "tenant_victim_connects_ok": counts["victim_ok"],
            "tenant_victim_connects_failed": counts["victim_failed"]}


async def overhead(rounds: int) -> dict[str, Any]:
    workspace = Path(tempfile.mkdtemp(prefix="agentd-bench-ws-"))
    for i in range(20):
        (workspace / f"f{i}.py").write_text("import os\n" * 200)
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      workspace=workspace)
    pool = WorkerPool(size=2)
    out: dict[str, Any] = {}
    try:
        for name, arguments in (("read_file", {"path": "f0.py"}),
                                ("grep", {"pattern": "os$"})):
            tool = FILE_TOOLS[name]
            await tool.call(arguments, ctx, 30, pool)  # the worker starts
            timings: dict[str, float] = {}
            for mode, workers in (("worker", pool), ("thread", None)):
                samples = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    await tool.call(arguments, ctx, 30, workers)
                    samples.append(time.perf_counter() - started)
                timings[mode] = statistics.mean(samples) * 1000
            out[f"{name}_worker_ms"] = round(timings["worker"], 3)
            out[f"{name}_thread_ms"] = round(timings["thread"], 3)
            out[f"{name}_overhead_ms"] = round(timings["worker"] - timings["thread"], 3)
    finally:
        await pool.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--scenario", choices=["all", "tools", "tenants"], default="all")
    parser.add_argument("--holders", type=int, default=3,
                        help="the attacking tenant's agents holding connections")
    args = parser.parse_args()
    result: dict[str, Any] = {"bench": "stall"}
    if args.scenario in ("all", "tools"):
        result |= {**asyncio.run(overhead(args.rounds)), **liveness(args.seconds)}
    if args.scenario in ("all", "tenants"):
        result |= tenants(args.seconds, args.holders)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
