"""Instructions a turn costs the daemon, counted by callgrind: a figure that does not
move with the machine's load.

    .venv/bin/python bench/instructions.py                        # echo, openai, anthropic
    .venv/bin/python bench/instructions.py --paths openai --lengths 10,3000
    PYTHONPATH=<worktree>/src .venv/bin/python bench/instructions.py   # another build

CPU time per turn, what the other benches report, is the figure that matters, but on
a shared two-core machine it moves by a tenth or more between runs of one build; two
builds compared that way need a quiet machine and many rounds. Callgrind counts the
instructions the daemon runs in user space (not the kernel's: system calls are
invisible to it), the same count for the same work whatever else runs, so an A/B of a
change to the daemon's own code reads off at once (within about 1.5 %: event-loop
turns and batch sizes still vary a little).

The daemon (``python -m agentd serve``, fresh AGENTD_HOME, SQLite at ``synchronous =
NORMAL``, logs at WARNING, ``PYTHONHASHSEED=0``) runs under ``valgrind --tool=callgrind
--instr-atstart=no``, so start-up is not counted; instrumentation is switched on
(``callgrind_control -i on``) after the warm-up turns and off after the measured ones,
which are sent one after another by one client. Paths:

- ``echo``: the scripted model, ``wait: true`` (the durable echo turn);
- ``echo_stream``: the same turn streamed (SSE to the run's end);
- ``echo_load``: the waited echo turn under load, as bench/turns.py sends it
  (``--clients`` closed-loop clients, 16 by default, each on its own session) to a
  daemon at the store's default durability (``synchronous = FULL``: the writer thread
  and its group commits); ``--turns`` a client, after as many warm-up turns;
- ``openai``, ``anthropic``: ``openai:gpt-4.1-mini`` and ``anthropic:claude-sonnet-4-5``
  pointed at :class:`agentd.testing.StubLLMServer` (prompt-cache simulation off, in
  this process), each request the one its official SDK builds, compaction and auto-recall off, each
  session seeded with ``length`` turns through the Agent Protocol door as
  bench/history.py seeds them.

Prints one JSON line: ``instructions[path][length]`` per turn (the echo path's length
is its own session's, 0 at the start). Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

import _history_paths
from _load import free_port, info
from history import ANSWER, MODELS, USER, turn

TOKEN = "instructions-bench-token-0123456789"
#: The paths on the scripted model (their length is their own session's).
ECHO = ("echo", "echo_stream", "echo_load")
BENCH = Path(__file__).resolve().parent


def _daemon(home: Path, port: int, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {**os.environ, "AGENTD_HOME": str(home), "AGENTD_DEMO_AGENT": "false",
            "AGENTD_TOKEN": TOKEN, "AGENTD_LOG_LEVEL": "WARNING",
            "AGENTD_STORE": '{"synchronous":"NORMAL"}', "PYTHONHASHSEED": "0", **env}
    log = (home.parent / "daemon.log").open("wb")
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out}", sys.executable, "-m", "agentd", "serve",
         "--host", "127.0.0.1", "--port", str(port)],
        env=full, stdout=log, stderr=subprocess.STDOUT)


def _ready(base: str, proc: subprocess.Popen[bytes], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the daemon exited under valgrind")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the daemon did not come up under valgrind")


def _total(out: Path) -> int:
    annotated = subprocess.run(["callgrind_annotate", str(out)], capture_output=True,
                               text=True, check=True).stdout
    match = re.search(r"([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS", annotated)
    if match is None:
        raise RuntimeError("callgrind_annotate printed no total")
    return int(match.group(1).replace(",", ""))


def _load(base: str, clients: int, turns: int) -> int:
    """bench/turns.py's waited phase against the daemon at ``base``: ``turns`` turns
    for each of ``clients`` clients; the turns it sent."""
    sent = subprocess.run(
        [sys.executable, str(BENCH / "turns.py"), "--url", base, "--token", TOKEN,
         "--skip-termo", "--waited-only", "--warmup", "0", "--clients", str(clients),
         "--turns", str(turns * clients), "--verify-sessions", "1"],
        capture_output=True, check=True)
    figures = orjson.loads(sent.stdout)
    if figures.get("errors") or not figures.get("turns"):
        raise RuntimeError(f"the load failed: {sent.stderr.decode()[-2000:]}")
    return int(figures["turns"])


def measure(path: str, length: int, turns: int, warm: int, stub: Any,
            clients: int = 16) -> int:
    """Instructions per measured turn of one path at one history length."""
    with tempfile.TemporaryDirectory(prefix="agentd-instr-") as tmp:
        home, out, port = Path(tmp) / "home", Path(tmp) / "callgrind.out", free_port()
        home.mkdir()
        env = {"OPENAI_API_KEY": "sk-stub", "ANTHROPIC_API_KEY": "stub-key"}
        if path == "echo_load":
            env["AGENTD_STORE"] = '{"synchronous": "FULL"}'
        proc = _daemon(home, port, out, env)
        base = f"http://127.0.0.1:{port}"
        try:
            _ready(base, proc)
            if path == "echo_load":
                _load(base, clients, warm)
                subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)],
                               capture_output=True, check=True)
                turns = _load(base, clients, turns)
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)],
                               capture_output=True, check=True)
                return _after(proc, out, turns)
            with httpx.Client(base_url=base, timeout=600,
                              headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                if path in ECHO:
                    agent, key = "i-echo", "s"
                    api.post("/v1/agents", json={"name": agent, "model": "scripted"}
                             ).raise_for_status()
                else:
                    agent = f"h-{path}"
                    url = stub.base_url if path == "openai" else stub.root_url
                    api.post("/v1/agents", json={
                        "name": agent, "model": MODELS[path], "settings": {
                            "base_url": url, "memory": {"compaction": {"auto": False},
                                                        "auto_recall": False}}}
                             ).raise_for_status()
                    key = _history_paths.seed(api, agent, length, USER, ANSWER)
                for i in range(warm):
                    _turn(api, path, agent, key, f"warm {i}")
                subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)],
                               capture_output=True, check=True)
                for i in range(turns):
                    _turn(api, path, agent, key, f"turn {i} of {length}")
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)],
                               capture_output=True, check=True)
        finally:
            _stop(proc)
        return round(_total(out) / turns)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(2)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _after(proc: subprocess.Popen[bytes], out: Path, turns: int) -> int:
    """Instructions per turn once the daemon has stopped (callgrind writes then)."""
    _stop(proc)
    return round(_total(out) / turns)


def _turn(api: httpx.Client, path: str, agent: str, key: str, content: str) -> None:
    if path not in ECHO:
        turn(api, agent, key, content, "wait")
        return
    if path == "echo_stream":
        with api.stream("POST", f"/v1/agents/{agent}/sessions/{key}/messages",
                        json={"content": content, "stream": True}) as reply:
            reply.raise_for_status()
            text = "".join(reply.iter_text())
        if f"echo: {content}" not in text or "event: done" not in text:
            raise RuntimeError(f"unexpected stream {text[:300]}")
        return
    reply = api.post(f"/v1/agents/{agent}/sessions/{key}/messages",
                     json={"content": content, "wait": True})
    reply.raise_for_status()
    if reply.json().get("output") != f"echo: {content}":
        raise RuntimeError(f"unexpected answer {reply.text[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default="echo,openai,anthropic")
    parser.add_argument("--lengths", default="10,300,3000",
                        help="history lengths for the provider paths (default 10,300,3000)")
    parser.add_argument("--turns", type=int, default=40, help="measured turns (default 40)")
    parser.add_argument("--warm", type=int, default=10, help="warm-up turns (default 10)")
    parser.add_argument("--clients", type=int, default=16,
                        help="echo_load's clients (default 16); --turns and --warm a client")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Debian's valgrind package)")
    from agentd.testing import StubLLMServer

    figures: dict[str, dict[str, int]] = {}
    t0 = time.monotonic()
    with StubLLMServer(prompt_cache=False) as stub:
        for path in args.paths.split(","):
            lengths = [0] if path in ECHO else [int(x) for x in args.lengths.split(",")]
            for length in lengths:
                figures.setdefault(path, {})[str(length)] = value = measure(
                    path, length, args.turns, args.warm, stub, args.clients)
                info(f"{path} at {length} turns: {value:,} instructions a turn")
    ratios = {path: round(max(v.values()) / min(v.values()), 3)
              for path, v in figures.items() if len(v) > 1}
    print(orjson.dumps({
        "bench": "instructions", "turns": args.turns, "instructions": figures,
        "ratio": ratios, "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"cpus": len(os.sched_getaffinity(0)),
                    "python": platform.python_version()}}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
