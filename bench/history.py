"""What a turn costs the daemon as the conversation grows: CPU per turn against the
length of the session's history, on the provider path (and, with ``--paths``, the
adapter path and the protocol doors).

    .venv/bin/python bench/history.py                          # 10, 300, 3000 turns
    .venv/bin/python bench/history.py --lengths 10,300 --turns 20
    .venv/bin/python bench/history.py --providers openai --modes wait
    .venv/bin/python bench/history.py --paths adapter,langgraph,openai
    .venv/bin/python bench/history.py --peer stub             # the tests' stub as the model

A real daemon (``python -m agentd serve``, SQLite, fresh AGENTD_HOME) talks to a
model server over the real wire formats, each request the one its official SDK
builds (``agentd.llm.providers._wire``): by default
``bench/_lean_peer.py`` in a process of its own, which reads a request at once and
decodes only its last message, as a provider's servers (on other machines) cost the
daemon nothing; with ``--peer stub``, :class:`agentd.testing.StubLLMServer` in this
process (prompt-cache simulation off), whose parsing of a long request into Python
objects on the same two cores shows on the daemon's own CPU (``_lean_peer``'s
docstring): ``openai:gpt-4.1-mini`` (Chat
Completions) and ``anthropic:claude-sonnet-4-5`` (Messages), both catalogued, so the
context is fitted to their windows (1M and 200k tokens: the whole session fits) and
their usage priced. Compaction is off, as is auto-recall. For each provider, history
length and mode (first each turn waited for, ``wait: true``; then each streamed, SSE
to the run's end), sessions are seeded with that many turns (a user message and the
agent's answer each, written through the LangGraph door's ``update_state``: nothing is
run), each gets a turn to warm it, then a batch of turns one after another from one
client (a tenth of the length, at least 10, so that the history stays within about 10 %
of it), until ``--turns`` turns were measured. The daemon's CPU (user + system, its
process's CPU-time clock) over those turns, divided by them, is the figure; seeding
and warming are not counted, nor what they leave the daemon to do (each batch starts
once the daemon is idle: ``LocalDaemon.settle``). Every turn's answer is checked to
be the stub's echo of its message.

``--paths`` picks what is measured: ``provider`` (the above; the default),
``adapter``, ``langgraph``, ``openai`` (see ``bench/_history_paths.py``: an
adapter-backed agent, the Agent Protocol door's runs and thread state, the OpenAI
doors' ways of continuing a conversation, each on the scripted model or a reply
function whose own work is constant). ``--modes`` picks among each path's modes
(default: all of them).

Prints one JSON line: ``cpu_ms_per_turn[provider][mode][length]``, the largest
ratio between two lengths of one provider and mode (``max_ratio``), and the CPU per
turn at 300 turns at most (``max_at_300``); ``detail[provider][mode]``: per length, the
kernel's part of that CPU (``<length>_sys_ms``) and the size of the last model request's
body (``<length>_request_kb``, as the model server received it); for the other paths,
``paths[path][mode][length]`` (ms of daemon CPU per turn; per call for
``get_state`` and ``chat_read``; null for a mode that failed, with why in ``paths_errors``),
``paths_ratio[path][mode]`` and ``paths_max_ratio``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

import _history_paths
from _load import LocalDaemon, ServerProcess, free_port, info
from agentd.testing import StubLLMServer

TOKEN = "history-bench-" + secrets.token_hex(8)
MODELS = {"openai": "openai:gpt-4.1-mini", "anthropic": "anthropic:claude-sonnet-4-5"}
#: A seeded turn: short, so that 3,000 of them fit claude-sonnet-4-5's 200k window by
#: agentd's estimate (which counts about 60 tokens for such a turn).
USER = "How is item {i} doing today?"
ANSWER = "stub: Item {i} is fine, nothing changed."


def turn(api: httpx.Client, agent: str, key: str, content: str, mode: str) -> None:
    path = f"/v1/agents/{agent}/sessions/{quote(key, safe='')}/messages"
    if mode == "wait":
        reply = api.post(path, json={"content": content, "wait": True}, timeout=120)
        reply.raise_for_status()
        run = reply.json()
        output = (run.get("run") or run).get("output")
        if output != f"stub: {content}":
            raise RuntimeError(f"unexpected answer {str(run)[:300]}")
        return
    done = False
    with api.stream("POST", path, json={"content": content, "stream": True},
                    headers={"Accept": "text/event-stream"}, timeout=120) as reply:
        reply.raise_for_status()
        event = ""
        for line in reply.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("run.completed", "run.failed",
                                                        "done"):
                data = orjson.loads(line[5:])
                if event == "run.failed":
                    raise RuntimeError(f"run failed: {str(data)[:300]}")
                done = True
    if not done:
        raise RuntimeError("the stream ended before the run did")


def batch_of(length: int) -> int:
    """Turns measured on one session: few enough that its history stays within about
    10 % of ``length`` (a new session is seeded for the next batch)."""
    return max(10, length // 10)


#: What the figures are made of, by provider, mode and length: the kernel's share of
#: the CPU (sockets: the body sent over loopback; page faults) and the size of the
#: model request's body (what grows with the history by the wire protocol's nature).
DETAIL: dict[str, dict[str, dict[str, float]]] = {}


class LeanPeer:
    """``bench/_lean_peer.py`` in a process of its own (:class:`ServerProcess`, its
    output in ``log_dir``), on a free port; entered once it answers."""

    def __init__(self, log_dir: Path, ready_s: float = 30.0) -> None:
        self.port = free_port()
        self.ready_s = ready_s
        script = Path(__file__).resolve().parent / "_lean_peer.py"
        self.server = ServerProcess("lean peer", [sys.executable, str(script), str(self.port)],
                                    log_dir / "lean_peer.log", dict(os.environ))

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def __enter__(self) -> LeanPeer:
        self.server.start()
        deadline = time.monotonic() + self.ready_s
        while True:
            try:
                httpx.get(f"{self.root_url}/stats", timeout=2).raise_for_status()
                return self
            except httpx.HTTPError:
                if self.server.exited() or time.monotonic() > deadline:
                    self.server.stop()
                    raise RuntimeError("bench/_lean_peer.py did not start; log tail:\n"
                                       + self.server.log_tail()) from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def end_batch(self) -> float | None:
        """The size of the batch's last model request's body, in KB."""
        size = httpx.get(f"{self.root_url}/stats", timeout=10).json()["last_request_bytes"]
        return round(size / 1024, 1) if size else None


class StubPeer:
    """:class:`StubLLMServer` in this process, its prompt-cache simulation off; what
    it keeps of each request is dropped after every batch (a long session's requests
    would fill gigabytes)."""

    def __init__(self) -> None:
        self._stub = StubLLMServer(prompt_cache=False)

    def __enter__(self) -> StubPeer:
        self._stub.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stub.__exit__(*exc)

    @property
    def root_url(self) -> str:
        return self._stub.root_url

    @property
    def base_url(self) -> str:
        return self._stub.base_url

    def end_batch(self) -> float | None:
        """The size of the batch's last model request's body, in KB; the stub then
        forgets the batch's requests."""
        requests = self._stub.requests
        kb = round(len(orjson.dumps(requests[-1])) / 1024, 1) if requests else None
        self._stub.clear()
        return kb


Peer = LeanPeer | StubPeer


def measure(daemon: LocalDaemon, api: httpx.Client, provider: str, lengths: list[int],
            turns: int, modes: list[str], peer: Peer | None = None
            ) -> dict[str, dict[str, float]]:
    """ms of daemon CPU per turn, by mode and length. The lengths take turns, a batch
    each, so that the machine's drift (two shared cores) falls on all of them alike."""
    agent = f"h-{provider}"
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        cpu = dict.fromkeys(lengths, 0.0)
        kernel = dict.fromkeys(lengths, 0.0)
        done = dict.fromkeys(lengths, 0)
        kb: dict[int, float | None] = dict.fromkeys(lengths)
        while any(done[n] < turns for n in lengths):
            for length in lengths:
                if done[length] >= turns:
                    continue
                # Seeding and the warm-up turn are not measured, nor what they leave
                # the daemon to do (the WAL's checkpoint of the seeding's writes).
                key = _history_paths.seed(api, agent, length, USER, ANSWER)
                turn(api, agent, key, "warm up", "wait")
                daemon.settle()
                count = min(batch_of(length), turns - done[length])
                before, sys_before = daemon.server.cpu_s(), daemon.server.sys_s()
                for i in range(count):
                    turn(api, agent, key, f"{mode} turn {done[length] + i} of {length}", mode)
                after, sys_after = daemon.server.cpu_s(), daemon.server.sys_s()
                assert before is not None and after is not None
                assert sys_before is not None and sys_after is not None
                cpu[length] += after - before
                kernel[length] += sys_after - sys_before
                done[length] += count
                kb[length] = peer.end_batch() if peer is not None else None
        detail = DETAIL.setdefault(provider, {}).setdefault(mode, {})
        for length in lengths:
            value = out.setdefault(mode, {})[str(length)] = round(cpu[length] * 1000 / turns, 3)
            detail[f"{length}_sys_ms"] = round(kernel[length] * 1000 / turns, 3)
            size = kb[length]
            if size is not None:
                detail[f"{length}_request_kb"] = size
            info(f"{provider} {mode} at {length} turns: {value} ms of daemon CPU per turn")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="10,300,3000",
                        help="history lengths, in turns (default 10,300,3000)")
    parser.add_argument("--turns", type=int, default=40, help="measured turns per phase")
    parser.add_argument("--providers", default="openai,anthropic")
    parser.add_argument("--peer", choices=("lean", "stub"), default="lean",
                        help="the model server: bench/_lean_peer.py in a process of its "
                        "own (default), or agentd.testing.StubLLMServer in this one")
    parser.add_argument("--paths", default="provider",
                        help="provider, adapter, langgraph, openai (default provider)")
    parser.add_argument("--modes", default=None,
                        help="the modes to measure, of every path (default: all: "
                        "provider wait,stream; the others' in bench/_history_paths.py)")
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    providers = args.providers.split(",")
    paths = args.paths.split(",")
    unknown = set(paths) - {"provider", *_history_paths.MODES}
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}")
    chosen = args.modes.split(",") if args.modes else None
    modes = [m for m in ("wait", "stream") if chosen is None or m in chosen]
    figures: dict[str, dict[str, dict[str, float]]] = {}
    others: dict[str, dict[str, dict[str, float | None]]] = {}
    errors: list[str] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentd-history-") as tmp, \
            (LeanPeer(Path(tmp)) if args.peer == "lean" else StubPeer()) as peer:
        env = {"OPENAI_API_KEY": "sk-stub", "ANTHROPIC_API_KEY": "stub-key"}
        if "openai" in paths:
            env.update(_history_paths.OPENAI_LIMITS)
        if "adapter" in paths:
            env["AGENTD_ADAPTERS"] = _history_paths.ADAPTER_ALLOW
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(Path(__file__).resolve().parent),
                            os.environ.get("PYTHONPATH", "")) if p)
        with LocalDaemon(Path(tmp), TOKEN, env) as daemon, httpx.Client(
                base_url=daemon.base, headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60) as api:
            for provider in providers if "provider" in paths else ():
                base = peer.base_url if provider == "openai" else peer.root_url
                created = api.post("/v1/agents", json={
                    "name": f"h-{provider}", "model": MODELS[provider],
                    "settings": {"base_url": base,
                                 "memory": {"compaction": {"auto": False},
                                            "auto_recall": False}}})
                if created.status_code != 201:
                    raise RuntimeError(f"creating the agent: {created.text[:300]}")
                figures[provider] = measure(daemon, api, provider, lengths, args.turns,
                                            modes, peer)
            _history_paths.create_agents(api, paths)
            for path in paths:
                if path == "provider":
                    continue
                path_modes = [m for m in _history_paths.MODES[path]
                              if chosen is None or m in chosen]
                for length in lengths:
                    for mode, value in _history_paths.measure(
                            daemon, api, path, length, args.turns, path_modes,
                            errors).items():
                        others.setdefault(path, {}).setdefault(mode, {})[
                            str(length)] = value
    ratios = [max(v.values()) / min(v.values()) for by_mode in figures.values()
              for v in by_mode.values() if min(v.values()) > 0]
    at_300 = [v["300"] for by_mode in figures.values() for v in by_mode.values()
              if "300" in v]
    paths_ratio = {path: {mode: round(max(ok) / min(ok), 2)
                          for mode, v in by_mode.items()
                          if len(ok := [x for x in v.values() if x is not None]) == len(v)
                          and min(ok) > 0}
                   for path, by_mode in others.items()}
    every = [r for by_mode in paths_ratio.values() for r in by_mode.values()]
    result: dict[str, Any] = {
        "bench": "history", "peer": args.peer, "lengths": lengths, "turns": args.turns,
        "cpu_ms_per_turn": figures,
        "detail": DETAIL,
        "max_ratio": round(max(ratios), 2) if ratios else None,
        "max_at_300": max(at_300) if at_300 else None,
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"cpus": len(os.sched_getaffinity(0)),
                    "python": platform.python_version()},
    }
    if others:
        result.update(paths=others, paths_ratio=paths_ratio,
                      paths_max_ratio=max(every) if every else None, paths_errors=errors)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
