"""Daemon start-up: how long ``agentd serve`` takes to answer, and what importing the
server costs.

1. ``import_s``: the median over ``--runs`` fresh interpreters of the wall time of
   ``import agentd.server.daemon`` (the module ``agentd serve`` runs), timed inside the
   interpreter (its own start-up not counted).
2. ``ready_s``: the median over ``--runs`` starts of the real daemon
   (``python -m agentd serve`` on a fresh SQLite home each time) of the time from
   spawning the process to its first 200 on ``GET /health`` (polled every 10 ms).
   The daemon is stopped (SIGTERM) after each start.
3. ``first_a2a_s`` / ``first_mcp_s``: on each started daemon, once healthy (and an
   agent created), the latency of the A2A door's first request (the agent's card) and
   then of the MCP door's first (``tools/list``): each includes importing that door's
   SDK; ``second_*`` is the same request again.
4. ``sdk_loaded_at_ready``: whether the A2A and MCP SDKs (``a2a``, ``mcp``) were in
   ``sys.modules`` after the import (they load on a door's first use:
   docs/design-notes.md).

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from _load import free_port, info
from agentd.security.tokens import read_token

_IMPORT = ("import time, sys; t = time.perf_counter(); import agentd.server.daemon; "
           "d = time.perf_counter() - t; "
           "print(d, int('a2a' in sys.modules), int('mcp' in sys.modules))")


def _import_once() -> tuple[float, bool, bool]:
    out = subprocess.run([sys.executable, "-c", _IMPORT], check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[0]), out[1] == "1", out[2] == "1"


def _timed(send: object) -> float:
    started = time.perf_counter()
    response: httpx.Response = send()  # type: ignore[operator]
    took = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return took


def _doors(base: str, home: Path) -> dict[str, float]:
    """The doors' first and second requests on a daemon that has served neither."""
    with httpx.Client(base_url=base, timeout=60.0, headers={
            "Authorization": f"Bearer {read_token(home)}"}) as http:
        made = http.post("/v1/agents", json={"name": "echo"})
        if made.status_code != 201:
            raise RuntimeError(f"creating the agent: {made.status_code} {made.text}")
        mcp = {"Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25"}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        out = {}
        for attempt in ("first", "second"):
            out[f"{attempt}_a2a_s"] = _timed(
                lambda: http.get("/a2a/echo/.well-known/agent-card.json"))
        for attempt in ("first", "second"):
            out[f"{attempt}_mcp_s"] = _timed(lambda: http.post("/mcp", json=body,
                                                               headers=mcp))
        return out


def _ready_once(home: Path) -> tuple[float, dict[str, float]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_HOME=str(home))
    url = f"http://127.0.0.1:{port}/health"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agentd", "serve", "--port", str(port)],
                            env=env, cwd=home.parent, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(timeout=2.0) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {proc.returncode}")
                try:
                    if http.get(url).status_code == 200:
                        ready = time.perf_counter() - started
                        return ready, _doors(f"http://127.0.0.1:{port}", home)
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - started > 120:
                    raise RuntimeError("the daemon did not answer /health in 120 s")
                time.sleep(0.01)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    imports = []
    loaded = {"a2a": False, "mcp": False}
    for i in range(args.runs):
        took, a2a, mcp = _import_once()
        imports.append(took)
        loaded["a2a"] |= a2a
        loaded["mcp"] |= mcp
        info(f"import {i + 1}: {took:.3f} s")
    ready = []
    doors: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="agentd-startup-") as tmp:
        for i in range(args.runs):
            took, door = _ready_once(Path(tmp) / f"home{i}")
            ready.append(took)
            for key, value in door.items():
                doors.setdefault(key, []).append(value)
            info(f"start {i + 1}: healthy after {took:.3f} s; doors "
                 + ", ".join(f"{k} {v:.3f}" for k, v in door.items()))
    print(orjson.dumps({
        "bench": "startup", "runs": args.runs,
        "import_s": round(statistics.median(imports), 3),
        "ready_s": round(statistics.median(ready), 3),
        "ready_min_s": round(min(ready), 3), "ready_max_s": round(max(ready), 3),
        **{key: round(statistics.median(values), 3) for key, values in doors.items()},
        "sdk_loaded_at_ready": loaded,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }).decode())


if __name__ == "__main__":
    main()
