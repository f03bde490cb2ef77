"""agentd beside Letta and LangGraph's API server, on one stub model, one client loop.

    .venv/bin/python bench/peers.py                       # all three, 8 clients, 20 s a phase
    .venv/bin/python bench/peers.py --setup               # only build the peers' venvs
    .venv/bin/python bench/peers.py --skip-letta --clients 4 --seconds 10

The servers, one after the other, never at once:

- **agentd**: ``python -m agentd serve`` (fresh AGENTD_HOME, SQLite), an agent whose
  model is ``openai-compatible:stub`` with ``settings.base_url`` the stub's; a turn is
  ``POST /v1/agents/{name}/sessions/{key}/messages`` with ``wait: true``.
- **Letta** 0.11.7 (``letta server``, SQLite under a fresh HOME): an agent per session,
  its ``llm_config`` an OpenAI endpoint at the stub (context window 1M tokens, so it
  never summarises); a turn is ``POST /v1/agents/{id}/messages``.
- **LangGraph** (``langgraph dev``, the in-memory runtime): a graph of one node calling
  the stub through ``langchain-openai``'s ``ChatOpenAI`` (generated into the cache
  dir); a session is a thread; a turn is ``POST /threads/{id}/runs/wait``.

Letta and LangGraph run from venvs under ``.cache/peers`` built on first use (or with
``--setup``) from the pinned lists ``bench/peers_letta.txt`` and
``bench/peers_langgraph.txt``. Each server talks OpenAI Chat Completions to one
:class:`agentd.testing.StubLLMServer` in this process, which echoes ``stub: <last
user message>``; every answer is checked to be that echo, so an error is never counted
as a turn. Letta 0.11.7's agent loop takes only tool calls from its model, so a
request offering Letta's ``send_message`` tool gets a call of it carrying the same echo.

Per server: a warm-up, then two measured phases of N closed-loop clients (aiohttp,
keep-alive, each client on its own session): **short** (each client starts a new session
every ``--short-turns`` turns, so turns have 0-24 turns of history) and **long**
(sessions seeded with ``--long-from`` turns before the phase and left at
``--long-to``: 100-149 turns of history). Each client's first session of a phase starts
at its own point of that range, so that a slow server's few turns have the same spread
of history as a fast one's many. Sessions that need a request of their own to exist (a
Letta agent, a seeded session) are made before the phase, so that the phase measures
turns only. Logs are at WARNING where the server has a setting for it (agentd,
LangGraph; Letta 0.11.7 has none); LangGraph otherwise runs ``langgraph dev``'s
defaults (one run at a time; ``--langgraph-jobs`` changes that). Server CPU is the whole
process tree's (user + system, from ``/proc``). What each server persists is counted by
looking: the rows added to its SQLite file over the phase (agentd, Letta), or the
in-memory runtime's pickle files (LangGraph); one probe turn per server checks whether
its writes are there when the answer arrives. Progress goes to stderr; stdout gets one
JSON line, whose ``agentd_ahead`` says for each history length and figure whether
agentd beat every peer; the servers' logs of the last run are kept in
``.cache/peers/logs``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import hashlib
import math
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from _load import (
    LocalDaemon,
    ServerProcess,
    TurnResult,
    free_port,
    info,
    percentile,
    run_phase,
    wait_ready,
)
from agentd.testing.stub_llm import StubLLMServer, StubTurn

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TOKEN = "peers-bench-" + secrets.token_hex(8)
#: A seeded turn: a question and an answer of about a chat's size (as bench/history.py).
USER = ("Could you look at item {i} again and tell me what changed since the last time "
        "we talked about it, briefly?")
ANSWER = ("stub: Item {i} is as it was: the figures match the previous report, the open "
          "question is still the date, and nothing else changed since we last spoke.")
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
TIMEOUT = aiohttp.ClientTimeout(total=300)
PEER_PACKAGES = {
    "letta": ["letta", "letta-client", "openai", "sqlalchemy", "aiosqlite", "uvicorn"],
    "langgraph": ["langgraph-api", "langgraph-cli", "langgraph", "langgraph-runtime-inmem",
                  "langchain-openai", "openai", "uvicorn"],
}

GRAPH_PY = '''"""The graph bench/peers.py serves with `langgraph dev`: one node, the stub model."""

import os

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph

llm = ChatOpenAI(model="stub-model", base_url=os.environ["PEERS_STUB_URL"],
                 api_key="sk-stub", max_retries=0)


async def model(state: MessagesState) -> dict:
    return {"messages": [await llm.ainvoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("model", model)
builder.add_edge(START, "model")
builder.add_edge("model", END)
graph = builder.compile()
'''


# --------------------------------------------------------------------------- stub


class PeersStub(StubLLMServer):
    """The stub model. A request that offers Letta's ``send_message`` tool is answered
    with a call of it carrying the echo (Letta 0.11.7 refuses an answer that is not a
    tool call); every other request gets the plain echo."""

    def _answer(self, wire: Any, body: dict[str, Any], turn: StubTurn | None) -> Any:
        tools = body.get("tools") or []
        names = {t.get("function", {}).get("name") for t in tools if isinstance(t, dict)}
        if turn is None and "send_message" in names:
            echo = f"stub: {wire.last_user_text(body)}"
            turn = StubTurn(tool_calls=[{"name": "send_message", "arguments": {"message": echo}}])
        return super()._answer(wire, body, turn)


# --------------------------------------------------------------------------- processes


RUNNING: set[TreeServer] = set()


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of the process and its reaped children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = sum(int(f) for f in fields[11:15]) / ticks  # utime stime cutime cstime
        table[int(name)] = (int(fields[1]), cpu)
    return table


def _tree(root: int, table: dict[int, tuple[int, float]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


class TreeServer(ServerProcess):
    """A server in a session of its own whose CPU is its whole process tree's, stopped
    with its process group and every descendant."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict[str, str],
                 cwd: Path | None = None) -> None:
        super().__init__(name, cmd, log_path, env)
        self.cwd = cwd

    def start(self) -> None:
        info(f"starting {self.name}: {' '.join(self.cmd)}")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True)
        RUNNING.add(self)

    def pids(self) -> list[int]:
        return _tree(self.proc.pid, _proc_table()) if self.proc else []

    def cpu_s(self) -> float | None:
        if self.proc is None or self.exited():
            return None
        table = _proc_table()
        return sum(table[pid][1] for pid in _tree(self.proc.pid, table))

    def rss_mb(self) -> float | None:
        pages = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1) if pages else None

    def _signal(self, pids: list[int], sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        tree = self.pids()
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self._signal(tree, sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                info(f"{self.name} still running {timeout_s:.0f}s after {sig.name}; killing it")
                self.killed = True
        # Whatever is left of the tree (the leader past its grace, children that
        # ignored the signal or outlived their parent) is killed.
        self._signal([pid for pid in tree if Path(f"/proc/{pid}").exists()], signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.shutdown_s = time.monotonic() - t0
        RUNNING.discard(self)
        return self.proc.returncode


def _stop_all() -> None:
    for server in list(RUNNING):
        with contextlib.suppress(Exception):
            server.stop(timeout_s=5)


def _exit_on(sig: int, frame: object) -> None:
    del frame
    raise SystemExit(128 + sig)


# --------------------------------------------------------------------------- venvs


def _pins(kind: str) -> Path:
    return BENCH_DIR / f"peers_{kind}.txt"


def ensure_venv(cache: Path, kind: str, force: bool = False) -> Path:
    """The venv of ``kind`` (letta, langgraph) under ``cache``, built from its pinned
    list if missing or if the list changed since it was built."""
    venv = cache / kind
    pins = _pins(kind)
    digest = hashlib.sha256(pins.read_bytes()).hexdigest()
    marker = venv / ".peers-pins"
    if not force and marker.exists() and marker.read_text() == digest:
        return venv
    log_path = cache / f"{kind}-install.log"
    info(f"building {venv} from {pins.name} (a few minutes; pip's output: {log_path})")
    py = str(venv / "bin" / "python")
    with log_path.open("wb") as log:
        for cmd in ([sys.executable, "-m", "venv", "--clear", str(venv)],
                    [py, "-m", "pip", "install", "-U", "pip"],
                    [py, "-m", "pip", "install", "-r", str(pins)]):
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                raise SystemExit(f"{' '.join(cmd)} failed; the end of {log_path}:\n"
                                 + "\n".join(tail))
    marker.write_text(digest)
    return venv


def venv_versions(venv: Path, packages: list[str]) -> dict[str, str]:
    code = ("import json, sys, importlib.metadata as m\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code, *packages],
                          capture_output=True, check=True, timeout=60)
    versions: dict[str, str] = orjson.loads(done.stdout)
    return versions


# --------------------------------------------------------------------------- persistence


def table_counts(db: Path) -> dict[str, int]:
    """Rows in every ordinary table of a SQLite file (read while its server runs)."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND sql NOT LIKE 'CREATE VIRTUAL%'")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def sqlite_mode(db: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return {"journal_mode": journal}


def file_stats(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime_ns) of the files in ``folder``."""
    out: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(FileNotFoundError):
        for path in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                out[path.name] = (st.st_size, st.st_mtime_ns)
    return out


def row_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {t: after.get(t, 0) - before.get(t, 0) for t in after
            if after.get(t, 0) != before.get(t, 0)}


# --------------------------------------------------------------------------- peers


@dataclass
class Session:
    ident: str
    turns: int  # turns of history it holds


@dataclass
class PhaseRecord:
    histories: list[int] = field(default_factory=list)
    made_in_phase: int = 0


class Peer(ABC):
    """One server: how it starts, makes a session, takes a turn, and stores."""

    name = ""
    #: A fresh, empty session needs no request of its own (it is made by its first turn).
    implicit_fresh = False
    #: ``snapshot`` counts rows per table (a SQLite store), not files.
    counts_rows = True

    def __init__(self, args: argparse.Namespace, stub: StubLLMServer, work: Path) -> None:
        self.args = args
        self.stub = stub
        self.work = work
        self.http: aiohttp.ClientSession | None = None
        self.server: TreeServer | None = None
        self.base = ""
        self.made = 0

    @property
    def api(self) -> aiohttp.ClientSession:
        assert self.http is not None
        return self.http

    @abstractmethod
    async def start(self) -> None: ...

    async def stop(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    @abstractmethod
    async def new_session(self, seed: int) -> Session: ...

    @abstractmethod
    async def send(self, session: Session, content: str) -> str | None:
        """Take one turn; None if the answer is the stub's echo, else what went wrong."""

    @abstractmethod
    def snapshot(self) -> Any:
        """What the server has stored now (rows per table, or files)."""

    @abstractmethod
    def config(self) -> dict[str, Any]: ...

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.api.post(self.base + path, data=orjson.dumps(body), headers=JSON,
                                 timeout=TIMEOUT) as resp:
            raw = await resp.read()
        try:
            return resp.status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return resp.status, raw[:300].decode("utf-8", "replace")


def seed_messages(turns: int) -> list[tuple[str, str]]:
    return [(USER.format(i=i), ANSWER.format(i=i)) for i in range(turns)]


class AgentdPeer(Peer):
    name = "agentd"
    implicit_fresh = True
    AGENT = "peers"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.home = self.work / "agentd"
        self.daemon: LocalDaemon | None = None
        self.synchronous = "?"

    async def start(self) -> None:
        self.home.mkdir()
        daemon = LocalDaemon(self.home, TOKEN, {"OPENAI_API_KEY": "sk-stub"})
        old = daemon.server
        daemon.server = self.server = TreeServer(old.name, old.cmd, old.log_path, old.env)
        self.daemon = daemon
        await asyncio.to_thread(daemon.__enter__)
        self.base = daemon.base
        status, body = await self.post("/v1/agents", {
            "name": self.AGENT, "model": "openai-compatible:stub",
            "settings": {"base_url": self.stub.base_url}})
        if status != 201:
            raise RuntimeError(f"agentd: creating the agent: {status} {str(body)[:300]}")
        # The durability level the daemon runs at, as its own connection reports it.
        async with self.api.get(self.base + "/v1/overview", timeout=TIMEOUT,
                                headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            overview = orjson.loads(await resp.read())
        self.synchronous = str((overview.get("store") or {}).get("synchronous", "?"))

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.api.post(self.base + path, data=orjson.dumps(body), timeout=TIMEOUT,
                                 headers={**JSON, "Authorization": f"Bearer {TOKEN}"}) as resp:
            raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None

    async def new_session(self, seed: int) -> Session:
        if seed == 0:
            return Session(f"peers-{uuid.uuid4().hex[:12]}", 0)
        # Seeded through the LangGraph door's update_state: written, nothing run.
        status, thread = await self.post("/langgraph/threads", {"graph_id": self.AGENT})
        if status != 200:
            raise RuntimeError(f"agentd: creating a thread: {status} {str(thread)[:300]}")
        tid = thread["thread_id"]
        messages: list[dict[str, str]] = []
        for user, answer in seed_messages(seed):
            messages += [{"type": "human", "content": user}, {"type": "ai", "content": answer}]
        status, body = await self.post(f"/langgraph/threads/{quote(tid, safe='')}/state",
                                       {"values": {"messages": messages}})
        if status != 200:
            raise RuntimeError(f"agentd: seeding {tid}: {status} {str(body)[:300]}")
        return Session(f"lg:{tid}", seed)

    async def send(self, session: Session, content: str) -> str | None:
        path = f"/v1/agents/{self.AGENT}/sessions/{quote(session.ident, safe='')}/messages"
        status, body = await self.post(path, {"content": content, "wait": True})
        if status not in (200, 201) or not isinstance(body, dict):
            return f"HTTP {status}: {str(body)[:200]}"
        output = (body.get("run") or body).get("output")
        return None if output == f"stub: {content}" else f"answer {str(body)[:200]}"

    def snapshot(self) -> dict[str, int]:
        return table_counts(self.home / "agentd.db")

    def config(self) -> dict[str, Any]:
        return {"model": "openai-compatible:stub", "store": "SQLite",
                **sqlite_mode(self.home / "agentd.db"),
                "synchronous": self.synchronous,
                "api": "POST /v1/agents/{name}/sessions/{key}/messages {wait: true}"}


class LettaPeer(Peer):
    name = "letta"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.home = self.work / "letta-home"

    @property
    def db(self) -> Path:
        return self.home / ".letta" / "sqlite.db"

    async def start(self) -> None:
        venv = self.args.venvs["letta"]
        self.home.mkdir()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = _peer_env(HOME=str(self.home), OPENAI_API_KEY="sk-stub",
                        OPENAI_BASE_URL=self.stub.base_url)
        self.server = TreeServer(
            "letta", [str(venv / "bin" / "letta"), "server", "--host", "127.0.0.1",
                      "--port", str(port)], self.work / "letta.log", env,
            cwd=self.work)  # it writes openapi_letta.json where it runs
        self.server.start()
        await wait_ready(self.api, f"{self.base}/v1/health/", 240, self.server)

    async def new_session(self, seed: int) -> Session:
        self.made += 1
        stub = self.stub.base_url
        body: dict[str, Any] = {
            "name": f"peers-{self.made}",
            "llm_config": {"model": "stub-model", "model_endpoint_type": "openai",
                           "model_endpoint": stub, "context_window": 1_000_000,
                           "put_inner_thoughts_in_kwargs": True},
            "embedding_config": {"embedding_endpoint_type": "openai",
                                 "embedding_endpoint": stub,
                                 "embedding_model": "text-embedding-3-small",
                                 "embedding_dim": 1536, "embedding_chunk_size": 300},
            "memory_blocks": [{"label": "human", "value": "The user."},
                              {"label": "persona", "value": "A helpful assistant."}],
        }
        if seed:
            body["initial_message_sequence"] = [
                m for user, answer in seed_messages(seed)
                for m in ({"role": "user", "content": user},
                          {"role": "assistant", "content": answer})]
        status, agent = await self.post("/v1/agents/", body)
        if status != 200 or not isinstance(agent, dict):
            raise RuntimeError(f"letta: creating an agent: {status} {str(agent)[:300]}")
        return Session(agent["id"], seed)

    async def send(self, session: Session, content: str) -> str | None:
        status, body = await self.post(f"/v1/agents/{session.ident}/messages",
                                       {"messages": [{"role": "user", "content": content}]})
        if status != 200 or not isinstance(body, dict):
            return f"HTTP {status}: {str(body)[:200]}"
        said = [m.get("content") for m in body.get("messages") or []
                if m.get("message_type") == "assistant_message"]
        return None if said == [f"stub: {content}"] else f"answer {str(body)[:200]}"

    def snapshot(self) -> dict[str, int]:
        return table_counts(self.db)

    def config(self) -> dict[str, Any]:
        return {"model": "llm_config: openai endpoint at the stub, context_window 1M",
                "agent_type": "memgpt_v2_agent (the default)", "store": "SQLite",
                **sqlite_mode(self.db), "api": "POST /v1/agents/{id}/messages"}


class LangGraphPeer(Peer):
    name = "langgraph"
    implicit_fresh = True
    counts_rows = False

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.run_dir = self.work / "langgraph-run"
        self.flushes: list[float] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def store_dir(self) -> Path:
        return self.run_dir / ".langgraph_api"

    async def start(self) -> None:
        venv = self.args.venvs["langgraph"]
        app = self.args.cache / "langgraph-app"
        app.mkdir(parents=True, exist_ok=True)
        (app / "graph.py").write_text(GRAPH_PY)
        # Absolute paths: `langgraph dev` runs in a fresh folder of its own (where its
        # in-memory runtime keeps its pickles) and resolves the graph's path from there.
        (app / "langgraph.json").write_text(orjson.dumps(
            {"dependencies": [str(app)], "graphs": {"agent": f"{app / 'graph.py'}:graph"}}
        ).decode())
        self.run_dir.mkdir()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = _peer_env(PEERS_STUB_URL=self.stub.base_url, LANGSMITH_TRACING="false",
                        LANGCHAIN_TRACING_V2="false", LANGGRAPH_CLI_NO_ANALYTICS="1",
                        LOG_LEVEL="WARNING")  # langgraph_api's own, as agentd's
        self.server = TreeServer(
            "langgraph", [str(venv / "bin" / "langgraph"), "dev", "--no-browser", "--no-reload",
                          "--host", "127.0.0.1", "--port", str(port),
                          "--config", str(app / "langgraph.json"),
                          "--server-log-level", "WARNING",  # uvicorn's
                          *(["--n-jobs-per-worker", str(self.args.langgraph_jobs)]
                            if self.args.langgraph_jobs else [])],
            self.work / "langgraph.log", env, cwd=self.run_dir)
        self.server.start()
        await wait_ready(self.api, f"{self.base}/ok", 180, self.server)
        self._watch = asyncio.create_task(self._watch_flushes())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await super().stop()

    async def _watch_flushes(self) -> None:
        """When the in-memory runtime writes its pickles (its only persistence)."""
        last = await asyncio.to_thread(file_stats, self.store_dir)
        while True:
            await asyncio.sleep(0.2)
            now = await asyncio.to_thread(file_stats, self.store_dir)
            if now != last:
                # A flush writes its files one after another: changes less than 2 s
                # apart are one flush.
                at = time.monotonic()
                if not self.flushes or at - self.flushes[-1] > 2:
                    self.flushes.append(at)
                last = now

    async def new_session(self, seed: int) -> Session:
        tid = str(uuid.uuid4())
        if seed == 0:
            return Session(tid, 0)  # made by its first run (if_not_exists: create)
        status, body = await self.post("/threads", {"thread_id": tid,
                                                    "metadata": {"graph_id": "agent"}})
        if status != 200:
            raise RuntimeError(f"langgraph: creating a thread: {status} {str(body)[:300]}")
        messages: list[dict[str, str]] = []
        for user, answer in seed_messages(seed):
            messages += [{"type": "human", "content": user}, {"type": "ai", "content": answer}]
        status, body = await self.post(f"/threads/{tid}/state", {"values": {"messages": messages}})
        if status != 200:
            raise RuntimeError(f"langgraph: seeding {tid}: {status} {str(body)[:300]}")
        return Session(tid, seed)

    async def send(self, session: Session, content: str) -> str | None:
        status, body = await self.post(f"/threads/{session.ident}/runs/wait", {
            "assistant_id": "agent", "if_not_exists": "create",
            "input": {"messages": [{"role": "user", "content": content}]}})
        if status != 200 or not isinstance(body, dict):
            return f"HTTP {status}: {str(body)[:200]}"
        last = (body.get("messages") or [{}])[-1]
        ok = last.get("type") == "ai" and last.get("content") == f"stub: {content}"
        return None if ok else f"answer {str(body)[-200:]}"

    async def checkpoints(self, session: Session) -> int:
        """How many checkpoints the thread holds (its state's history)."""
        status, body = await self.post(f"/threads/{session.ident}/history", {"limit": 1000})
        if status != 200 or not isinstance(body, list):
            raise RuntimeError(f"langgraph: thread history: {status} {str(body)[:300]}")
        return len(body)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return file_stats(self.store_dir)

    def config(self) -> dict[str, Any]:
        return {"model": "ChatOpenAI(base_url=stub) in a one-node StateGraph",
                "runtime": "in-memory (langgraph dev --no-reload)",
                "n_jobs_per_worker": self.args.langgraph_jobs or "1 (langgraph dev's default)",
                "api": "POST /threads/{id}/runs/wait"}


def _peer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
           and not k.startswith(("AGENTD_", "LANGSMITH_", "LANGCHAIN_", "LETTA_"))}
    return {**env, **extra}


# --------------------------------------------------------------------------- phases


async def make_pool(peer: Peer, seeds: list[int]) -> list[Session]:
    """Sessions holding ``seeds`` turns each, made now (before a phase) where making
    one takes a request of its own."""
    gate = asyncio.Semaphore(4)

    async def one(seed: int) -> Session:
        async with gate:
            return await peer.new_session(seed)

    t0 = time.monotonic()
    pool = list(await asyncio.gather(*(one(seed) for seed in seeds)))
    if any(seeds) or not peer.implicit_fresh:
        info(f"{peer.name}: {len(seeds)} sessions made ({min(seeds)}-{max(seeds)} turns)"
             f" in {time.monotonic() - t0:.1f}s")
    return pool


def staggered(lo: int, hi: int, clients: int, spare: int) -> list[int]:
    """Seeds for a phase's sessions: each client's first session starts at its own point
    of ``lo``..``hi - 1`` (spread evenly), the spares at ``lo``; so that a slow server's
    turns have the same spread of history as a fast one's. ``pop()`` takes the first
    sessions first."""
    span = hi - lo
    first = [lo + (2 * i + 1) * span // (2 * clients) for i in range(clients)]
    return [lo] * spare + first[::-1]


async def phase(peer: Peer, name: str, clients: int, seconds: float, lo: int, hi: int,
                pool: list[Session]) -> tuple[Any, PhaseRecord]:
    """Closed-loop turns on sessions holding ``lo``..``hi - 1`` turns of history."""
    record = PhaseRecord()
    sessions: list[Session | None] = [None] * clients
    counter = 0

    async def turn(i: int) -> TurnResult:
        nonlocal counter
        session = sessions[i]
        if session is None or session.turns >= hi:
            if pool:
                session = pool.pop()
            else:
                session = await peer.new_session(lo)
                if lo or not peer.implicit_fresh:
                    record.made_in_phase += 1
            sessions[i] = session
        counter += 1
        content = f"{name} turn {counter} from client {i}"
        t0 = time.perf_counter()
        try:
            error = await peer.send(session, content)
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = repr(exc)
        ms = (time.perf_counter() - t0) * 1000
        if error is None:
            record.histories.append(session.turns)
            session.turns += 1
        return TurnResult(ok=error is None, latency_ms=ms, error=error)

    stats = await run_phase(f"{peer.name} {name}", clients, turn, seconds=seconds,
                            server=peer.server)
    return stats, record


def figures(stats: Any, record: PhaseRecord, stub: StubLLMServer, rows: Any,
            server: TreeServer | None) -> dict[str, Any]:
    out = stats.figures("", streamed=False)
    # client_cpu_util: this process's CPU (the clients and the stub) over the phase.
    hist = sorted(record.histories)
    out["history_turns"] = ({"min": hist[0], "p50": int(percentile(hist, 50) or 0),
                             "max": hist[-1]} if hist else None)
    out["sessions_made_in_phase"] = record.made_in_phase
    calls = [r for r in stub.requests if "messages" in r]
    if calls and stats.turns:
        out["model_calls_per_turn"] = round(len(calls) / stats.turns, 2)
        out["model_request_messages_p50"] = int(
            percentile(sorted(len(r["messages"]) for r in calls), 50) or 0)
        out["model_request_kb_p50"] = round(
            (percentile(sorted(len(orjson.dumps(r)) for r in calls), 50) or 0) / 1024, 1)
    if isinstance(rows, dict) and stats.turns:
        out["rows_per_turn"] = {t: round(n / stats.turns, 2) for t, n in sorted(rows.items())}
    if server is not None:
        out["server_rss_mb"] = server.rss_mb()
    return out


async def probe(peer: Peer) -> dict[str, Any]:
    """Are a turn's writes in the store when its answer arrives?"""
    session = await peer.new_session(0)
    error = await peer.send(session, "probe: first turn")
    if error:
        return {"error": error}
    session.turns += 1
    if isinstance(peer, LangGraphPeer):
        checkpoints = await peer.checkpoints(session)
        tries = 0
        while tries < 3:  # a turn whose answer met the periodic flush is tried again
            tries += 1
            before = await asyncio.to_thread(peer.snapshot)
            error = await peer.send(session, "probe: second turn")
            at_answer = await asyncio.to_thread(peer.snapshot)
            if error:
                return {"error": error}
            if at_answer == before:
                break
        checkpoints = (await peer.checkpoints(session) - checkpoints) / tries
        gaps = [b - a for a, b in zip(peer.flushes, peer.flushes[1:], strict=False)]
        return {"persisted_at_answer": at_answer != before,
                "checkpoints_in_memory_per_turn": checkpoints,
                "flushes_seen": len(peer.flushes),
                "flush_interval_s_p50": round(percentile(sorted(gaps), 50) or 0, 1) or None,
                "files": {k: v[0] for k, v in sorted(at_answer.items())}}
    before = await asyncio.to_thread(peer.snapshot)
    error = await peer.send(session, "probe: second turn")
    at_answer = await asyncio.to_thread(peer.snapshot)
    if error:
        return {"error": error}
    await asyncio.sleep(1.5)
    later = await asyncio.to_thread(peer.snapshot)
    now, settled = row_deltas(before, at_answer), row_deltas(before, later)
    return {"rows_at_answer": now, "rows_1_5s_later": settled,
            "committed_before_answer": bool(now) and now == settled}


def persists(name: str, measured: dict[str, Any], probe_out: dict[str, Any]) -> str:
    """What the server persists per turn, in words, from what was counted."""
    if name == "langgraph":
        at = probe_out.get("persisted_at_answer")
        every = probe_out.get("flush_interval_s_p50")
        per = probe_out.get("checkpoints_in_memory_per_turn")
        n = f"{per:g}" if isinstance(per, float | int) else "?"
        return (f"nothing per turn: the run and its {n} checkpoints live in memory"
                + ("" if at is False else " (a write was seen at the answer)")
                + f"; the whole store is pickled to .langgraph_api every {every or '?'} s")
    rows = (measured.get("long") or measured.get("short") or {}).get("rows_per_turn") or {}
    parts = [f"{n:g} {t}" for t, n in sorted(rows.items(), key=lambda kv: -kv[1]) if n >= 0.5]
    total = sum(n for n in rows.values())
    when = ("committed before answering" if probe_out.get("committed_before_answer")
            else "NOT all committed when the answer arrives")
    return f"{total:.0f} rows per turn ({' + '.join(parts)}), {when}"


async def measure(peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    clients, seconds = args.clients, args.seconds
    out: dict[str, Any] = {}
    try:
        await peer.start()
        out["config"] = await asyncio.to_thread(peer.config)
        warm_pool = await make_pool(peer, [0] * clients)
        warm, _ = await phase(peer, "warm-up", clients, args.warmup, 0, args.short_turns,
                              warm_pool)
        rate = warm.turns / warm.elapsed_s if warm.elapsed_s else 1.0
        info(f"{peer.name}: warm-up {warm.turns} turns, {rate:.1f}/s")
        plans = [("short", 0, args.short_turns), ("long", args.long_from, args.long_to)]
        for name, lo, hi in plans:
            expected = rate * seconds * 1.5 + clients
            spare = 0 if lo == 0 and peer.implicit_fresh else min(
                math.ceil(expected / (hi - lo)), 500)
            pool = await make_pool(peer, staggered(lo, hi, clients, spare))
            before = await asyncio.to_thread(peer.snapshot)
            peer.stub.clear()
            stats, record = await phase(peer, name, clients, seconds, lo, hi, pool)
            after = await asyncio.to_thread(peer.snapshot)
            rows = row_deltas(before, after) if peer.counts_rows else None
            out[name] = figures(stats, record, peer.stub, rows, peer.server)
            rate = max(stats.turns / stats.elapsed_s, 0.5) if stats.elapsed_s else rate
            info(f"{peer.name} {name}: {out[name]['turns_per_s']} turns/s, p50 "
                 f"{out[name]['p50_ms']} ms, p99 {out[name]['p99_ms']} ms, "
                 f"{out[name]['server_cpu_ms_per_turn']} ms CPU/turn, history "
                 f"{out[name]['history_turns']}, errors {out[name]['errors']}")
        probe_out = await probe(peer)
        out["probe"] = probe_out
        out["persists"] = persists(peer.name, out, probe_out)
    except Exception as exc:  # one server failing does not lose the others' figures
        info(f"{peer.name} failed: {exc!r}")
        out["error"] = repr(exc)[:500]
        if peer.server is not None:
            info(f"{peer.name} log tail:\n{peer.server.log_tail()}")
    finally:
        await peer.stop()
        # The server's log outlives the run's temporary folder, for a look afterwards.
        if peer.server is not None:
            logs = args.cache / "logs"
            logs.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copyfile(peer.server.log_path, logs / f"{peer.name}.log")
    return out


def ahead(servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Is agentd ahead of every measured peer, per history length and figure?"""
    mine = servers.get("agentd") or {}
    others = [v for k, v in servers.items() if k != "agentd" and "error" not in v]
    out: dict[str, Any] = {}
    for length in ("short", "long"):
        a = mine.get(length)
        peers = [o[length] for o in others if o.get(length)]
        if not a or not peers:
            continue
        verdict: dict[str, bool] = {}
        for key, higher in (("turns_per_s", True), ("p50_ms", False), ("p99_ms", False),
                            ("server_cpu_ms_per_turn", False)):
            values = [p[key] for p in peers if p.get(key) is not None]
            if a.get(key) is None or not values:
                continue
            verdict[key] = a[key] > max(values) if higher else a[key] < min(values)
        out[length] = verdict
    out["everywhere"] = bool(out) and all(all(v.values()) for v in out.values())
    return out


def agentd_revision() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or None
    return None


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from agentd.version import __version__

    kinds: list[type[Peer]] = []
    if not args.skip_agentd:
        kinds.append(AgentdPeer)
    if not args.skip_letta:
        kinds.append(LettaPeer)
    if not args.skip_langgraph:
        kinds.append(LangGraphPeer)
    versions: dict[str, Any] = {"agentd": __version__, "agentd_commit": agentd_revision(),
                                "python": platform.python_version()}
    for kind, venv in args.venvs.items():
        versions[kind] = await asyncio.to_thread(venv_versions, venv, PEER_PACKAGES[kind])
    servers: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentd-peers-") as tmp, PeersStub() as stub:
        # Idle connections are dropped before any server's own keep-alive timeout
        # (uvicorn's is 5 s), so that a turn never goes out on one the server is closing.
        connector = aiohttp.TCPConnector(limit=args.clients + 8, keepalive_timeout=2)
        async with aiohttp.ClientSession(connector=connector) as http:
            for kind in kinds:
                work = Path(tmp) / kind.name
                work.mkdir()
                peer = kind(args, stub, work)
                peer.http = http
                info(f"--- {kind.name}")
                servers[kind.name] = await measure(peer, args)
    return {
        "bench": "peers", "clients": args.clients, "seconds": args.seconds,
        "short_sessions_turns": args.short_turns,
        "long_sessions_turns": [args.long_from, args.long_to],
        "model": "agentd.testing.StubLLMServer, OpenAI Chat Completions, echo",
        "versions": versions, "servers": servers, "agentd_ahead": ahead(servers),
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up")
    parser.add_argument("--short-turns", type=int, default=25,
                        help="a short session's length: a new one every N turns")
    parser.add_argument("--long-from", type=int, default=100,
                        help="turns a long session is seeded with")
    parser.add_argument("--long-to", type=int, default=150,
                        help="turns at which a long session is left for a new one")
    parser.add_argument("--langgraph-jobs", type=int, default=None,
                        help="langgraph dev --n-jobs-per-worker (default: not set, so "
                             "langgraph dev runs one run at a time, which was faster here "
                             "than one per client)")
    parser.add_argument("--skip-agentd", action="store_true")
    parser.add_argument("--skip-letta", action="store_true")
    parser.add_argument("--skip-langgraph", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "peers",
                        help="where the peers' venvs and the LangGraph app live")
    parser.add_argument("--setup", action="store_true",
                        help="(re)build the peers' venvs from bench/peers_*.txt and exit")
    args = parser.parse_args()
    if args.long_to <= args.long_from or args.short_turns < 1 or args.clients < 1:
        parser.error("need --long-to > --long-from, --short-turns >= 1, --clients >= 1")
    args.cache = args.cache_dir.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)
    atexit.register(_stop_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on)
    # Ctrl-C stops the bench (and its servers) even if started from a shell that
    # left SIGINT ignored for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    wanted = [k for k, skip in (("letta", args.skip_letta), ("langgraph", args.skip_langgraph))
              if args.setup or not skip]
    args.venvs = {kind: ensure_venv(args.cache, kind, force=args.setup) for kind in wanted}
    if args.setup:
        info(f"venvs ready: {', '.join(str(v) for v in args.venvs.values())}")
        return 0
    try:
        result = asyncio.run(amain(args))
    except (KeyboardInterrupt, SystemExit):
        info("interrupted: stopping the servers")
        raise
    finally:
        _stop_all()
    print(orjson.dumps(result).decode())
    return 1 if any("error" in v for v in result["servers"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
