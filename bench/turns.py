"""Turn throughput and latency of agentd, next to termo-agent, over real HTTP.

    python bench/turns.py                      # both sides, 16 clients, 10 s per phase
    python bench/turns.py --clients 32 --seconds 20
    python bench/turns.py --skip-termo --profile /tmp/agentd.prof
    python bench/turns.py --skip-termo --adapter   # + an adapter-backed agent (adapter_*)
    python bench/turns.py --url http://127.0.0.1:8000 --skip-termo   # a running daemon
    python bench/turns.py --rounds 6 --waited-only   # item 6's ratio on a shared machine
    python bench/turns.py --rounds 4 --waited-only --levels FULL,NORMAL   # + what fsync costs
    python bench/turns.py --skip-agentd --termo-url http://127.0.0.1:8123   # a running termo

N clients (closed loop, each on its own session, keep-alive connections) send turns to
the scripted echo model, first non-streamed (``stream: false``, the reply is the finished
run) then streamed (SSE, read to the ``done`` frame). By default the bench starts its own
daemon (``python -m agentd serve``) on a free port with a fresh AGENTD_HOME (other
AGENTD_* variables, such as the store, are inherited), and the termo-agent echo server of
``bench/termo_echo.py``, one after the other, never at once. After the load it reads the
sessions' event logs back and checks that every acknowledged turn has its ``message.user``
event. Progress goes to stderr; stdout gets one JSON line of figures.

On a shared machine one run's ratio moves by a sixth between runs of one build (the two
sides are measured a minute apart, and the machine's speed drifts): ``--rounds N``
measures both sides N times, alternating which goes first, and reports each figure's
median over the rounds, every round's own figures (``rounds``), each round's ratio of
server CPU per turn (``ratio_server_cpu_per_turn_rounds``) and their median as
``ratio_server_cpu_per_turn``.

Each side's ``server_sys_ms_per_turn`` is the kernel's part of its server CPU per turn
(/proc's system time: the sockets, the store's WAL writes and fsyncs, the threads
handing work to each other), the part ``bench/instructions.py``'s count cannot see.

``--levels FULL,NORMAL`` runs the agentd side once per SQLite durability level in each
round, a daemon of its own at each (``AGENTD_STORE``'s ``synchronous`` set over what the
bench inherited): the first level's figures under the plain keys, each other level's
with its suffix (``server_cpu_ms_per_turn_normal``, ``ratio_server_cpu_per_turn_normal``
and its ``_rounds``), so that what ``FULL``'s fsync costs is measured in the same rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from _load import (
    PhaseStats,
    ServerProcess,
    SseFrame,
    TurnResult,
    free_port,
    info,
    iter_sse,
    run_phase,
    wait_ready,
)
from agentd.settings.store import SQLITE_LEVELS

BENCH_DIR = Path(__file__).resolve().parent
NOTE = (
    "termo-agent keeps history in a dict and persists nothing per turn; agentd commits every "
    "event (message.user, run.*, message.assistant) to its store before acknowledging it, "
    "so the ratio is the price of durability plus the runtime's bookkeeping."
)
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
#: The adapter-backed agent's model (``--adapter``): allowed in the spawned daemon.
ADAPTER_MODEL = "adapter:_bench_adapter:echo"
SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}

# A frame's verdict: None (keep reading), "ok" (the run finished well) or an error text.
Classifier = Callable[[SseFrame], str | None]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _snippet(raw: bytes, limit: int = 200) -> str:
    return raw[:limit].decode("utf-8", errors="replace").strip()


@dataclass
class ConnectionCount:
    opened: int = 0


CONNECTIONS = ConnectionCount()


@dataclass
class Tally:
    """What one session should hold: turns acknowledged, and turns whose fate is unknown."""

    acked: int = 0
    ambiguous: int = 0


class Target:
    """One server under load. Subclasses say how a turn is sent and judged."""

    prefix = ""
    #: The phases a target has: non-streamed (False) and streamed (True).
    streams: tuple[bool, ...] = (False, True)

    def __init__(self, http: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> None:
        self.http = http
        self.base = base
        self.args = args
        if getattr(args, "waited_only", False):
            self.streams = tuple(s for s in self.streams if not s)
        self.tag = uuid.uuid4().hex[:8]
        self.tallies: dict[str, Tally] = {}
        self.counter = 0

    def keys(self, phase: str) -> list[str]:
        keys = [f"bench-{self.tag}-{phase}-{i}" for i in range(self.args.clients)]
        for key in keys:
            self.tallies.setdefault(key, Tally())
        return keys

    def content(self) -> str:
        self.counter += 1
        return f"hello {self.counter}"

    async def send(self, key: str, stream: bool) -> TurnResult:
        raise NotImplementedError

    async def phases(self, server: ServerProcess | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for stream in self.streams:
            label = f"{self.prefix or 'agentd_'}{'stream' if stream else 'plain'}"
            keys = self.keys("st" if stream else "ns")

            async def turn(index: int, keys: list[str] = keys, stream: bool = stream) -> TurnResult:
                return await self.send(keys[index], stream)

            if self.args.warmup > 0:
                info(f"{label}: warm-up {self.args.warmup:g}s")
                await run_phase(
                    f"{label} warm-up",
                    self.args.clients,
                    turn,
                    seconds=self.args.warmup,
                    server=server,
                )
            info(f"{label}: measuring, {self.args.clients} clients")
            opened = CONNECTIONS.opened
            stats: PhaseStats = await run_phase(
                label,
                self.args.clients,
                turn,
                seconds=self.args.seconds if self.args.turns is None else self.args.max_seconds,
                max_turns=self.args.turns,
                server=server,
            )
            figures = stats.figures(self.prefix, streamed=stream)
            # With keep-alive this stays at 0 (the warm-up opened the pool).
            figures[f"{self.prefix}{'stream_' if stream else ''}connections_opened"] = (
                CONNECTIONS.opened - opened
            )
            info(f"{label}: {orjson.dumps(figures).decode()}")
            out.update(figures)
        return out

    async def _plain(
        self,
        url: str,
        body: dict[str, Any],
        check: Callable[[Any], str | None],
        tally: Tally | None,
        *,
        headers: dict[str, str] | None = None,
    ) -> TurnResult:
        t0 = time.perf_counter()
        try:
            async with self.http.post(url, data=orjson.dumps(body),
                                      headers={**JSON_HEADERS, **(headers or {})}) as resp:
                raw = await resp.read()
                latency = _ms(t0)
                if tally is not None and 200 <= resp.status < 300:
                    tally.acked += 1
                if resp.status != 200:
                    return TurnResult(False, latency, error=f"HTTP {resp.status}: {_snippet(raw)}")
                problem = check(orjson.loads(raw))
                if problem:
                    return TurnResult(False, latency, error=problem)
                return TurnResult(True, latency)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            if tally is not None:
                tally.ambiguous += 1
            return TurnResult(False, _ms(t0), error=repr(exc))

    async def _streamed(
        self, url: str, body: dict[str, Any], classify: Classifier, tally: Tally | None,
        *, token: Callable[[SseFrame], bool] | None = None,
        headers: dict[str, str] | None = None,
    ) -> TurnResult:
        """One streamed turn. ``first_event_ms`` is the first frame's time, or with
        ``token`` the first frame it says carries text (first-token latency)."""
        t0 = time.perf_counter()
        first: float | None = None
        acked = False
        try:
            async with self.http.post(url, data=orjson.dumps(body),
                                      headers={**SSE_HEADERS, **(headers or {})}) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    return TurnResult(False, _ms(t0), error=f"HTTP {resp.status}: {_snippet(raw)}")
                if tally is not None:
                    tally.acked += 1
                acked = True
                ctype = resp.headers.get("Content-Type", "")
                if not ctype.startswith("text/event-stream"):
                    return TurnResult(False, _ms(t0), error=f"Content-Type {ctype!r}")
                verdict: str | None = None
                done_ms = 0.0
                async with contextlib.aclosing(iter_sse(resp.content)) as frames:
                    async for frame in frames:
                        if first is None and (token is None or token(frame)):
                            first = _ms(t0)
                        verdict = classify(frame)
                        if verdict is not None:
                            done_ms = _ms(t0)
                            break
                if verdict is None:
                    return TurnResult(False, _ms(t0), first, "stream ended without a done frame")
                # The stream must end after its done frame (and the connection be reusable).
                try:
                    rest = await asyncio.wait_for(resp.content.read(), self.args.drain_timeout)
                except TimeoutError:
                    resp.close()
                    return TurnResult(
                        False,
                        done_ms,
                        first,
                        f"stream still open {self.args.drain_timeout:g}s after its done frame",
                    )
                if rest.strip():
                    return TurnResult(False, done_ms, first, f"data after done: {_snippet(rest)}")
                if verdict != "ok":
                    return TurnResult(False, done_ms, first, verdict)
                return TurnResult(True, done_ms, first)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, ValueError) as exc:
            if tally is not None and not acked:
                tally.ambiguous += 1
            return TurnResult(False, _ms(t0), first, repr(exc))


class Agentd(Target):
    prefix = ""

    def __init__(self, http: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> None:
        super().__init__(http, base, args)
        self.agent = args.agent

    def _session_url(self, key: str) -> str:
        agent, key = quote(self.agent, safe=""), quote(key, safe="")
        return f"{self.base}/v1/agents/{agent}/sessions/{key}"

    def _messages_url(self, key: str) -> str:
        return f"{self._session_url(key)}/messages"

    async def send(self, key: str, stream: bool) -> TurnResult:
        body = {"content": self.content(), "stream": stream}
        tally = self.tallies[key]
        if stream:
            return await self._streamed(self._messages_url(key), body, _agentd_frame, tally)
        return await self._plain(self._messages_url(key), body, _agentd_run, tally)

    async def ensure_agent(self) -> None:
        url = f"{self.base}/v1/agents"
        body = {"name": self.agent, "model": "scripted"}
        async with self.http.post(url, data=orjson.dumps(body), headers=JSON_HEADERS) as resp:
            raw = await resp.read()
            if resp.status == 409:
                info(f"agent {self.agent!r} exists already")
            elif resp.status != 201:
                raise RuntimeError(f"POST /v1/agents: HTTP {resp.status}: {_snippet(raw, 500)}")
        async with self.http.get(f"{url}/{quote(self.agent, safe='')}") as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET agent: HTTP {resp.status}: {_snippet(raw, 500)}")
            agent = orjson.loads(raw)
        if not str(agent.get("model", "")).startswith("scripted"):
            raise RuntimeError(
                f"agent {self.agent!r} uses model {agent.get('model')!r}, not 'scripted'; "
                "pick another --agent"
            )

    async def count_user_messages(self, key: str) -> int:
        """Page through a session's event log and count its ``message.user`` events."""
        url = f"{self._session_url(key)}/events"
        after, count = 0, 0
        for _ in range(100_000):
            params = {"after": str(after), "limit": "1000"}
            async with self.http.get(url, params=params, headers=JSON_HEADERS) as resp:
                raw = await resp.read()
                if resp.status == 404:
                    return 0
                if resp.status != 200:
                    raise RuntimeError(f"GET events: HTTP {resp.status}: {_snippet(raw)}")
                page = orjson.loads(raw)
            events = page.get("events", [])
            count += sum(1 for e in events if e.get("kind") == "message.user")
            if not events:
                break
            seqs = [e["seq"] for e in events]
            if seqs != list(range(after + 1, after + 1 + len(seqs))):
                raise RuntimeError(f"session {key}: seqs not dense after {after}: {seqs[:5]}...")
            after = seqs[-1]
            last = page.get("last_seq")
            if isinstance(last, int) and after >= last:
                break
        return count

    async def verify(self) -> dict[str, Any]:
        """Every acknowledged turn must have its message.user event in the log."""
        keys = [k for k, t in self.tallies.items() if t.acked or t.ambiguous]
        if self.args.verify_sessions > 0:
            keys = keys[: self.args.verify_sessions]
        mismatches = 0
        for key in keys:
            tally = self.tallies[key]
            try:
                stored = await self.count_user_messages(key)
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
                info(f"durability: {key}: {exc!r}")
                mismatches += 1
                continue
            if not tally.acked <= stored <= tally.acked + tally.ambiguous:
                mismatches += 1
                info(
                    f"durability: {key}: {stored} message.user events, "
                    f"{tally.acked} turns acknowledged (+{tally.ambiguous} unknown)"
                )
        info(f"durability: {len(keys)} sessions checked, {mismatches} mismatches")
        return {"durability_checked": len(keys), "durability_mismatches": mismatches}


def _agentd_run(run: Any) -> str | None:
    if not isinstance(run, dict):
        return f"reply is not a run: {run!r:.200}"
    if run.get("status") != "completed":
        return f"run status {run.get('status')!r}, error {run.get('error')!r}"
    return None


def _agentd_frame(frame: SseFrame) -> str | None:
    if frame.event == "done":
        kind = (frame.json() or {}).get("kind")
        return "ok" if kind == "run.completed" else f"done frame of kind {kind!r}"
    if frame.event == "error":
        return f"error frame: {frame.data[:200]}"
    return None


class AdapterAgentd(Agentd):
    """The same daemon, an agent backed by an adapter (``bench/_bench_adapter.py``)."""

    prefix = "adapter_"

    def __init__(self, http: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> None:
        super().__init__(http, base, args)
        self.agent = f"{args.agent}-adapter"

    async def ensure_agent(self) -> None:
        body = {"name": self.agent, "model": ADAPTER_MODEL}
        async with self.http.post(f"{self.base}/v1/agents", data=orjson.dumps(body),
                                  headers=JSON_HEADERS) as resp:
            raw = await resp.read()
            if resp.status not in (201, 409):
                raise RuntimeError(f"POST /v1/agents (adapter): HTTP {resp.status}: "
                                   f"{_snippet(raw, 500)}")

    async def verify(self) -> dict[str, Any]:
        return {f"{self.prefix}{k}": v for k, v in (await super().verify()).items()}


class Termo(Target):
    prefix = "termo_"

    async def send(self, key: str, stream: bool) -> TurnResult:
        body = {"message": self.content(), "session_key": key, "stream": stream}
        url = f"{self.base}/api/send"
        if stream:
            return await self._streamed(url, body, _termo_frame, None)
        return await self._plain(url, body, _termo_reply, None)


def _termo_reply(reply: Any) -> str | None:
    if not isinstance(reply, dict) or not str(reply.get("response", "")).startswith("echo: "):
        return f"unexpected reply {reply!r:.200}"
    return None


def _termo_frame(frame: SseFrame) -> str | None:
    kind = (frame.json() or {}).get("type")
    if kind == "done":
        return "ok"
    if kind == "error":
        return f"error frame: {frame.data[:200]}"
    return None


# --------------------------------------------------------------------------- the two sides


def _http(args: argparse.Namespace) -> aiohttp.ClientSession:
    """A keep-alive client pool of ``--clients`` connections that counts its connects."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    trace = aiohttp.TraceConfig()

    async def on_connect(*_: object) -> None:
        CONNECTIONS.opened += 1

    trace.on_connection_create_end.append(on_connect)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.clients, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=args.timeout),
        headers=headers,
        trace_configs=[trace],
    )


def _inherited_store() -> dict[str, Any] | None:
    """The AGENTD_STORE the bench inherited, as an object (None: not set); a value that
    is not a JSON object raises ValueError."""
    inherited = os.environ.get("AGENTD_STORE")
    if not inherited:
        return None
    store = orjson.loads(inherited)
    if not isinstance(store, dict):
        raise ValueError("not a JSON object")
    return store


def _store_env(level: str | None) -> dict[str, str]:
    """AGENTD_STORE for a spawned daemon: the inherited one, with ``synchronous`` set to
    ``level`` when one is given (--levels; parse_args checked the inherited one)."""
    if level is None:
        return {}  # (os.environ's, as it is)
    store = _inherited_store() or {}
    return {"AGENTD_STORE": orjson.dumps({**store, "synchronous": level}).decode()}


async def bench_agentd(args: argparse.Namespace, workdir: Path,
                       level: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    daemon: ServerProcess | None = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        home = workdir / "agentd-home"
        home.mkdir()
        args.token = args.token or "bench-token-0123456789abcdef"
        env = {**os.environ, "AGENTD_HOME": str(home), "AGENTD_DEMO_AGENT": "false",
               "AGENTD_TOKEN": args.token, **_store_env(level)}
        if args.adapter:
            env["AGENTD_ADAPTERS"] = '{"allow": ["_bench_adapter:echo"]}'
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p)
        serve = ["-m", "agentd", "serve", "--host", "127.0.0.1", "--port", str(port)]
        prefix = [sys.executable]
        if args.profile:
            args.profile.unlink(missing_ok=True)
            prefix += ["-m", "cProfile", "-o", str(args.profile)]
        daemon = ServerProcess("agentd", prefix + serve, workdir / "agentd.log", env)
    try:
        if daemon is not None:
            daemon.start()
        async with _http(args) as http:
            health = await wait_ready(http, f"{base}/health", args.startup_timeout, daemon)
            out["store"] = health.get("store")
            # The durability level (docs/benchmarks.md, "Durability levels"): FULL's
            # fsyncs move every store-bound figure here.
            async with http.get(f"{base}/v1/overview") as resp:
                overview = orjson.loads(await resp.read()) if resp.status == 200 else {}
            out["store_synchronous"] = overview.get("store", {}).get("synchronous")
            out["agentd_version"] = health.get("version")
            info(f"agentd ready at {base}: {orjson.dumps(health).decode()}")
            target = Agentd(http, base, args)
            await target.ensure_agent()
            out.update(await target.phases(daemon))
            out.update(await target.verify())
            if args.adapter:
                adapted = AdapterAgentd(http, base, args)
                await adapted.ensure_agent()
                out.update(await adapted.phases(daemon))
                out.update(await adapted.verify())
    finally:
        if daemon is not None:
            # Stock uvicorn re-raises the signal it caught once it has shut down: a
            # re-raised SIGTERM kills the process before cProfile writes, while a SIGINT
            # becomes KeyboardInterrupt and the profile is written either way.
            sig = signal.SIGINT if args.profile else signal.SIGTERM
            code = daemon.stop(sig, timeout_s=args.stop_timeout)
            out["agentd_exit"] = code
            out["agentd_shutdown_s"] = (
                round(daemon.shutdown_s, 2) if daemon.shutdown_s is not None else None
            )
            if daemon.killed:
                out["agentd_killed"] = True
            info(f"agentd stopped ({sig.name}): exit {code}, log {daemon.log_path}")
            if args.profile:
                written = args.profile.exists()
                out["profile"] = str(args.profile) if written else None
                info(f"profile {'written to ' + str(args.profile) if written else 'NOT written'}")
    return out


async def bench_termo(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    server: ServerProcess | None = None
    if args.termo_url:
        # A server someone else runs (bench/instructions.py's, under callgrind): its
        # CPU is theirs to count, and it is left running.
        base = args.termo_url.rstrip("/")
    else:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, str(BENCH_DIR / "termo_echo.py"), "--port", str(port)]
        if args.termo_uvloop:
            cmd.append("--uvloop")
        server = ServerProcess("termo", cmd, workdir / "termo.log", dict(os.environ))
    try:
        if server is not None:
            server.start()
        async with _http(args) as http:
            health = await wait_ready(http, f"{base}/health", args.startup_timeout, server)
            out["termo_version"] = health.get("version")
            out.update(await Termo(http, base, args).phases(server))
    finally:
        if server is not None:
            code = server.stop(signal.SIGTERM, timeout_s=args.stop_timeout)
            info(f"termo stopped: exit {code}")
    return out


async def amain(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    out: dict[str, Any] = {
        "bench": "turns",
        "clients": args.clients,
        "seconds": args.seconds if args.turns is None else None,
        "turns_per_phase": args.turns,
        "warmup_s": args.warmup,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "client_loop": args.client_loop,
        "target": args.url or "spawned",
        # Other work on the machine skews every figure; this says how busy it was.
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }
    failed = False
    workdir = Path(tempfile.mkdtemp(prefix="agentd-bench-"))
    sides = [*_agentd_sides(args), ("termo", args.skip_termo, bench_termo)]
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(args.rounds):
            # Rounds alternate which side goes first, so that a machine that slows down
            # (or speeds up) over the run does not favour one side.
            figures: dict[str, Any] = {}
            for side, skip, run in (sides if number % 2 == 0 else sides[::-1]):
                if skip:
                    continue
                round_dir = workdir / f"{side}-{number}"
                round_dir.mkdir()
                try:
                    figures.update(await run(args, round_dir))
                except (RuntimeError, OSError, aiohttp.ClientError, TimeoutError) as exc:
                    failed = True
                    figures[f"{side}_failed"] = str(exc)[:2000]
                    info(f"{side} failed: {exc}")
            rounds.append(figures)
            if args.rounds > 1:
                info(f"round {number + 1} of {args.rounds}: " + orjson.dumps(
                    {k: figures.get(k) for k in _round_figures(args)}).decode())
    finally:
        if args.keep:
            info(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for figures in rounds:
        out.update(figures)
    if args.rounds > 1:
        _medians(out, rounds, _round_figures(args))
    ours, theirs = out.get("turns_per_s"), out.get("termo_turns_per_s")
    out["ratio_turns"] = round(ours / theirs, 3) if ours and theirs else None
    ours, theirs = out.get("stream_turns_per_s"), out.get("termo_stream_turns_per_s")
    out["ratio_stream_turns"] = round(ours / theirs, 3) if ours and theirs else None
    ours, native = out.get("adapter_turns_per_s"), out.get("turns_per_s")
    out["ratio_adapter_turns"] = round(ours / native, 3) if ours and native else None
    ours, native = out.get("adapter_server_cpu_ms_per_turn"), out.get("server_cpu_ms_per_turn")
    out["ratio_adapter_server_cpu_per_turn"] = (
        round(ours / native, 2) if ours and native else None)
    for suffix in _suffixes(args):  # (each --levels level's own ratio)
        ours, theirs = out.get(f"server_cpu_ms_per_turn{suffix}"), \
            out.get("termo_server_cpu_ms_per_turn")
        out[f"ratio_server_cpu_per_turn{suffix}"] = (
            round(ours / theirs, 2) if ours and theirs else None)
    if args.rounds > 1:
        # The figure to judge by on a shared machine: each round's own ratio (the two
        # sides measured minutes apart), their median and spread.
        for suffix in _suffixes(args):
            ratios = [round(r[f"server_cpu_ms_per_turn{suffix}"]
                            / r["termo_server_cpu_ms_per_turn"], 2)
                      for r in rounds
                      if r.get(f"server_cpu_ms_per_turn{suffix}")
                      and r.get("termo_server_cpu_ms_per_turn")]
            out[f"ratio_server_cpu_per_turn{suffix}_rounds"] = ratios
            out[f"ratio_server_cpu_per_turn{suffix}"] = (
                round(statistics.median(ratios), 3) if ratios else None)
    out["note"] = NOTE
    return out, failed


#: The figures a round reports (--rounds), and whose median the JSON line gives.
ROUND_FIGURES = ("turns_per_s", "server_cpu_ms_per_turn", "server_sys_ms_per_turn",
                 "p50_ms", "p99_ms", "stream_turns_per_s", "stream_server_cpu_ms_per_turn",
                 "termo_turns_per_s", "termo_server_cpu_ms_per_turn",
                 "termo_server_sys_ms_per_turn", "termo_stream_turns_per_s",
                 "termo_stream_server_cpu_ms_per_turn")


def _suffixes(args: argparse.Namespace) -> list[str]:
    """The key suffix of the agentd side's figures at each --levels level: none for the
    first (or with no --levels), ``_<level>`` for each other."""
    return ["", *(f"_{level.lower()}" for level in args.levels[1:])]


def _agentd_sides(args: argparse.Namespace) -> list[tuple[str, bool, Any]]:
    """The agentd side of a round: one daemon, or one per --levels level, the first
    level's figures under the plain keys and each other's with its suffix
    (``server_cpu_ms_per_turn_normal``)."""
    if not args.levels:
        return [("agentd", args.skip_agentd, bench_agentd)]
    sides: list[tuple[str, bool, Any]] = []
    for level, suffix in zip(args.levels, _suffixes(args), strict=True):

        async def run(run_args: argparse.Namespace, workdir: Path, level: str = level,
                      suffix: str = suffix) -> dict[str, Any]:
            figures = await bench_agentd(run_args, workdir, level)
            return {f"{key}{suffix}": value for key, value in figures.items()}

        sides.append((f"agentd-{level.lower()}", args.skip_agentd, run))
    return sides


def _round_figures(args: argparse.Namespace) -> tuple[str, ...]:
    extra = tuple(f"{key}{suffix}" for suffix in _suffixes(args)[1:]
                  for key in ROUND_FIGURES if not key.startswith("termo_"))
    return ROUND_FIGURES + extra


def _medians(out: dict[str, Any], rounds: list[dict[str, Any]],
             figures: tuple[str, ...] = ROUND_FIGURES) -> None:
    """Each of ``figures`` as its median over the rounds (the rest: the last round's),
    and every round's own figures under ``rounds``."""
    out["rounds"] = [{k: r.get(k) for k in figures if k in r} for r in rounds]
    for key in figures:
        values = [r[key] for r in rounds if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = round(statistics.median(values), 3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="agentd vs termo-agent turn throughput and latency (one JSON line out)"
    )
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument(
        "--turns",
        type=int,
        default=None,
        help="measure this many turns per phase instead of --seconds",
    )
    p.add_argument(
        "--max-seconds", type=float, default=600.0, help="cap on a --turns phase (default 600)"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per phase")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure both sides this many times, alternating which goes first; the "
        "figures are the rounds' medians and the ratio the median of each round's own",
    )
    p.add_argument(
        "--waited-only",
        action="store_true",
        help="only the non-streamed phase (item 6's figure), on both sides",
    )
    p.add_argument(
        "--levels",
        type=lambda text: [part.strip().upper() for part in text.split(",") if part.strip()],
        default=[],
        help="SQLite durability levels to run the agentd side at, each round, e.g. "
        "FULL,NORMAL: the first level's figures under the plain keys, each other's with "
        "its suffix (server_cpu_ms_per_turn_normal, ratio_server_cpu_per_turn_normal)",
    )
    p.add_argument("--url", help="use this running agentd instead of starting one")
    p.add_argument(
        "--token",
        default=os.environ.get("AGENTD_TOKEN") or None,
        help="bearer token for agentd (default $AGENTD_TOKEN)",
    )
    p.add_argument("--agent", default="bench", help="agent name (default bench)")
    p.add_argument("--skip-agentd", action="store_true", help="only measure termo-agent")
    p.add_argument("--skip-termo", action="store_true", help="only measure agentd")
    p.add_argument("--termo-url",
                   help="use this running termo-agent echo server (bench/termo_echo.py) "
                        "instead of starting one")
    p.add_argument(
        "--adapter",
        action="store_true",
        help="also measure an adapter-backed agent (adapter:_bench_adapter:echo, answering "
        "like the scripted echo) in the same daemon after the native one: adapter_* figures",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the spawned daemon under cProfile, writing this file",
    )
    p.add_argument(
        "--termo-uvloop",
        action="store_true",
        help="run the termo server on uvloop (its CLI uses plain asyncio)",
    )
    p.add_argument(
        "--client-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop of the load generator (auto: uvloop when installed)",
    )
    p.add_argument(
        "--verify-sessions",
        type=int,
        default=0,
        help="check the event logs of this many sessions (default 0: all)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=2.0,
        help="how long a stream may stay open after its done frame",
    )
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--stop-timeout", type=float, default=30.0)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (home, logs)")
    args = p.parse_args(argv)
    if args.clients < 1:
        p.error("--clients must be >= 1")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.turns is not None and args.turns < 1:
        p.error("--turns must be >= 1")
    if args.url and args.profile:
        p.error("--profile needs the spawned daemon, not --url")
    if args.url and args.levels:
        p.error("--levels needs the spawned daemon, not --url")
    unknown = [level for level in args.levels if level not in SQLITE_LEVELS]
    if unknown or len(set(args.levels)) != len(args.levels):
        p.error(f"--levels takes {' and '.join(SQLITE_LEVELS)}, each at most once, e.g. "
                "FULL,NORMAL")
    if args.levels:
        try:
            _inherited_store()
        except ValueError as exc:
            p.error(f"--levels sets AGENTD_STORE's synchronous, but the AGENTD_STORE "
                    f"inherited is not a JSON object ({exc})")
    if args.skip_agentd and args.skip_termo:
        p.error("nothing to do with both --skip-agentd and --skip-termo")
    if args.profile:
        args.profile = args.profile.resolve()
    for flag, url in (("--url", args.url), ("--termo-url", args.termo_url)):
        if url and not url.startswith(("http://127.0.0.1", "http://localhost")):
            p.error(f"{flag} must be on 127.0.0.1 / localhost")
    if args.termo_url and args.skip_termo:
        p.error("--termo-url names the termo-agent server to measure; not with --skip-termo")
    if args.termo_url and args.termo_uvloop:
        p.error("--termo-uvloop starts the termo server; not with --termo-url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_uvloop = args.client_loop == "uvloop" or (
        args.client_loop == "auto" and importlib.util.find_spec("uvloop") is not None
    )
    args.client_loop = "uvloop" if use_uvloop else "asyncio"
    if use_uvloop:
        import uvloop

        out, failed = uvloop.run(amain(args))
    else:
        out, failed = asyncio.run(amain(args))
    print(orjson.dumps(out).decode(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
