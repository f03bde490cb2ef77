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
  bench/history.py seeds them;
- ``get_load``: a request on one of FastAPI's routes: the same clients as
  ``echo_load``, each sending an authenticated ``GET /v1/agents/i-get`` (a pydantic
  reply) on its own kept-alive connection, ``--turns`` requests a client (the message
  route skips FastAPI's router and its dependencies: this is not a turn's HTTP share);
- ``termo``: the other side of item 6's ratio, bench/turns.py's termo-agent echo server
  (``bench/termo_echo.py``, nothing persisted) under the same load as ``echo_load``.
  Its ratio to ``echo_load`` is item 6's ratio in user-space instructions: a figure no
  neighbour on the machine moves, though it leaves out the kernel's share (the
  writer's ``pwrite`` and ``fdatasync``, the sockets), which CPU time counts.

Prints one JSON line: ``instructions[path][length]`` per turn (the echo path's length
is its own session's, 0 at the start). With ``--threads`` callgrind counts each thread
apart (``--separate-threads=yes``) and ``threads[path][length]`` splits the figure: the
main thread's (the event loop) first, then every other thread that ran anything, most
first (under load, the SQLite writer's is the second). Needs valgrind (Debian's
package).
"""

from __future__ import annotations

import argparse
import asyncio
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
#: The paths with no history length of their own (measured once, at 0).
UNSEEDED = (*ECHO, "get_load", "termo")
BENCH = Path(__file__).resolve().parent


def _valgrind(out: Path, threads: bool) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            *(["--separate-threads=yes"] if threads else []),
            f"--callgrind-out-file={out}"]


def _termo(home: Path, port: int, out: Path, threads: bool) -> subprocess.Popen[bytes]:
    """bench/turns.py's termo-agent echo server (bench/termo_echo.py) under callgrind."""
    log = (home.parent / "termo.log").open("wb")
    return subprocess.Popen(
        [*_valgrind(out, threads), sys.executable, str(BENCH / "termo_echo.py"),
         "--port", str(port)],
        env={**os.environ, "PYTHONHASHSEED": "0"}, stdout=log, stderr=subprocess.STDOUT)


def _daemon(home: Path, port: int, out: Path, env: dict[str, str],
            threads: bool = False) -> subprocess.Popen[bytes]:
    full = {**os.environ, "AGENTD_HOME": str(home), "AGENTD_DEMO_AGENT": "false",
            "AGENTD_TOKEN": TOKEN, "AGENTD_LOG_LEVEL": "WARNING",
            "AGENTD_STORE": '{"synchronous":"NORMAL"}', "PYTHONHASHSEED": "0", **env}
    log = (home.parent / "daemon.log").open("wb")
    return subprocess.Popen(
        [*_valgrind(out, threads), sys.executable, "-m", "agentd", "serve",
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


def thread_totals(out: Path) -> list[int]:
    """The instructions of each thread callgrind counted apart (``--separate-threads``
    writes ``<out>-NN``, one file a thread, NN its number; 1 is the main thread), read
    from each file's ``totals:`` line: the main thread's first, then the others that
    ran anything, most first."""
    found: dict[int, int] = {}
    for part in out.parent.glob(f"{out.name}-*"):
        number = part.name.rsplit("-", 1)[1]
        if not number.isdigit():
            continue
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                found[int(number)] = int(line.split(":", 1)[1])
                break
    if 1 not in found:
        raise RuntimeError(f"callgrind wrote no main thread's file beside {out}")
    main = found.pop(1)
    return [main, *sorted((n for n in found.values() if n), reverse=True)]


def _counted_after(proc: subprocess.Popen[bytes], out: Path, turns: int, threads: bool
                   ) -> tuple[int, list[int] | None]:
    """Instructions a turn, and with ``threads`` each thread's (:func:`thread_totals`),
    once the daemon has stopped (callgrind writes then)."""
    _stop(proc)
    if not threads:
        return round(_total(out) / turns), None
    totals = thread_totals(out)
    return round(sum(totals) / turns), [round(n / turns) for n in totals]


def _load(base: str, clients: int, turns: int, termo: bool = False) -> int:
    """bench/turns.py's waited phase against the daemon at ``base`` (``termo``: the
    termo-agent echo server there): ``turns`` turns for each of ``clients`` clients;
    the turns it sent."""
    side = (["--skip-agentd", "--termo-url", base] if termo else
            ["--url", base, "--token", TOKEN, "--skip-termo", "--verify-sessions", "1"])
    sent = subprocess.run(
        [sys.executable, str(BENCH / "turns.py"), *side, "--waited-only", "--warmup", "0",
         "--clients", str(clients), "--turns", str(turns * clients)],
        capture_output=True, check=True)
    figures = orjson.loads(sent.stdout)
    prefix = "termo_" if termo else ""
    if figures.get(f"{prefix}errors") or not figures.get(f"{prefix}turns"):
        raise RuntimeError(f"the load failed: {sent.stderr.decode()[-2000:]}")
    return int(figures[f"{prefix}turns"])


async def _gets_on(port: int, path: str, requests: int) -> None:
    """``requests`` GETs of ``path`` one after another on one kept-alive connection,
    each answer read whole; an answer other than 200 is an error."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ask = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
    try:
        for _ in range(requests):
            writer.write(ask)
            head = await reader.readuntil(b"\r\n\r\n")
            status, *fields = head.decode("latin-1").split("\r\n")
            length = next((int(f.split(":", 1)[1]) for f in fields
                           if f.lower().startswith("content-length:")), None)
            if length is None:
                raise RuntimeError(f"GET {path}: no content-length in {head[:200]!r}")
            body = await reader.readexactly(length)
            if status.split(" ")[1:2] != ["200"]:
                raise RuntimeError(f"GET {path}: {status}: {body[:200]!r}")
    finally:
        writer.close()


def gets(port: int, path: str, clients: int, requests: int) -> int:
    """``get_load``'s load: ``clients`` connections at once, ``requests`` GETs each;
    the requests sent."""
    async def run() -> None:
        await asyncio.gather(*(_gets_on(port, path, requests) for _ in range(clients)))
    asyncio.run(run())
    return clients * requests


def measure(path: str, length: int, turns: int, warm: int, stub: Any,
            clients: int = 16, threads: bool = False) -> tuple[int, list[int] | None]:
    """Instructions per measured turn of one path at one history length, and with
    ``threads`` each thread's (:func:`thread_totals`)."""
    with tempfile.TemporaryDirectory(prefix="agentd-instr-") as tmp:
        home, out, port = Path(tmp) / "home", Path(tmp) / "callgrind.out", free_port()
        home.mkdir()
        env = {"OPENAI_API_KEY": "sk-stub", "ANTHROPIC_API_KEY": "stub-key"}
        if path == "echo_load":
            env["AGENTD_STORE"] = '{"synchronous": "FULL"}'
        proc = (_termo(home, port, out, threads) if path == "termo"
                else _daemon(home, port, out, env, threads))
        base = f"http://127.0.0.1:{port}"
        try:
            _ready(base, proc)
            if path == "get_load":
                httpx.post(f"{base}/v1/agents", json={"name": "i-get", "model": "scripted"},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600
                           ).raise_for_status()
                gets(port, "/v1/agents/i-get", clients, warm)
                subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)],
                               capture_output=True, check=True)
                sent = gets(port, "/v1/agents/i-get", clients, turns)
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)],
                               capture_output=True, check=True)
                return _counted_after(proc, out, sent, threads)
            if path in ("echo_load", "termo"):
                termo = path == "termo"
                _load(base, clients, warm, termo)
                subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)],
                               capture_output=True, check=True)
                turns = _load(base, clients, turns, termo)
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)],
                               capture_output=True, check=True)
                return _counted_after(proc, out, turns, threads)
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
        return _counted_after(proc, out, turns, threads)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(2)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    parser.add_argument("--threads", action="store_true",
                        help="count each thread apart: threads[path][length], the event "
                             "loop's first")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Debian's valgrind package)")
    from agentd.testing import StubLLMServer

    figures: dict[str, dict[str, int]] = {}
    by_thread: dict[str, dict[str, list[int]]] = {}
    t0 = time.monotonic()
    with StubLLMServer(prompt_cache=False) as stub:
        for path in args.paths.split(","):
            lengths = [0] if path in UNSEEDED else [int(x) for x in args.lengths.split(",")]
            for length in lengths:
                value, each = measure(path, length, args.turns, args.warm, stub,
                                      args.clients, args.threads)
                figures.setdefault(path, {})[str(length)] = value
                if each is not None:
                    by_thread.setdefault(path, {})[str(length)] = each
                info(f"{path} at {length} turns: {value:,} instructions a turn"
                     + (f" (by thread: {', '.join(f'{n:,}' for n in each)})" if each else ""))
    ratios = {path: round(max(v.values()) / min(v.values()), 3)
              for path, v in figures.items() if len(v) > 1}
    print(orjson.dumps({
        "bench": "instructions", "turns": args.turns, "instructions": figures,
        "ratio": ratios, **({"threads": by_thread} if args.threads else {}),
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"cpus": len(os.sched_getaffinity(0)),
                    "python": platform.python_version()}}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
