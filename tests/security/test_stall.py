"""No tool call stalls the daemon.

A real daemon (LiveServer: the app on a real socket) runs one hostile call per case,
for every built-in tool: catastrophic regular expressions, huge powers, huge and
nested arguments, many files, a command line the analyser chokes on. While it runs, a
second client polls ``/health`` and another agent completes turns; every answer must be
right, and the hostile call must end with a clear result. Where a call runs until its
limit by design (a backtracking pattern), the watchers must have been answered while it
ran: requests sent after it started and answered before it ended (an order of events,
not a measured latency; bench/stall.py measures). Before the worker processes,
``grep`` with ``(a+)+$`` or ``calculator`` with ``(9**9999)**2000`` held the GIL for
as long as they ran: every client of the daemon waited (and the tool timeout could
not stop them).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from tests.conftest import wait_until

from agentd.client import Client
from agentd.config import Settings
from agentd.errors import ModelError, ToolError
from agentd.llm.messages import ToolCallDelta
from agentd.llm.model import StreamAccumulator
from agentd.llm.scripted import clear_queue, enqueue
from agentd.sandbox.backends import Limits
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import EgressRules
from agentd.testing.live import LiveServer
from agentd.tools import NET_TOOLS, ToolContext, ToolRegistry
from agentd.tools.mcp import MCPTool
from agentd.tools.workers import WorkerPool

#: The daemon's token.
TOKEN = "stall-test-token-0123456789"
#: The tool timeout of this daemon: the hard limit of a hostile call.
LIMIT_S = 5.0
#: What the watchers must get while a call that runs to its limit runs (counts: a
#: daemon whose event loop the call holds answers none of them until it ends).
HEALTH_DURING = 3
TURNS_DURING = 1


async def ticks_while(call: Awaitable[Any]) -> tuple[asyncio.Future[Any], int]:
    """Await ``call`` while counting the 10 ms ticks the event loop completes before it
    is done; the finished call and the count. A call that holds the loop lets at most
    one tick through (the one under way when it took the loop); one run off the loop
    lets them all."""
    task = asyncio.ensure_future(call)
    ticks = 0
    while not task.done():
        await asyncio.sleep(0.01)
        ticks += 1
    return task, ticks



@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("stall")
    settings = Settings(home=home, demo_agent=False, tool_timeout_s=LIMIT_S,
                        tokens=[TOKEN], database_url=f"sqlite:///{home / 'agentd.db'}")
    with LiveServer(settings) as live:
        with Client(live.url, token=TOKEN) as client:
            client.create_agent("calm", model="scripted", tools=[])
            client.create_agent("reader", model="scripted", tools=["read_file"], settings={
                "script": [{"tool_calls": [{"name": "read_file",
                                            "arguments": {"path": "note"}}]},
                           {"text": "read"}]})
        workspace = live.settings.workspaces_dir / _agent_id(live, "reader")
        workspace.mkdir(parents=True, exist_ok=True)
        (workspace / "note").write_text("hello\n")
        yield live
    clear_queue()


class Watch:
    """Polls /health and sends turns to a calm agent in two threads: ``calm`` (no
    tools, it echoes) or ``reader`` (one read_file call a turn, in a tool worker)."""

    def __init__(self, url: str, agent: str = "calm") -> None:
        self.url = url
        self.agent = agent
        # (sent, answered) by the same wall clock as the daemon's event times.
        self.health: list[tuple[float, float]] = []
        self.turns: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, daemon=True),
                         threading.Thread(target=self._talk, daemon=True)]

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while not self._stop.is_set():
                sent = time.time()
                response = http.get("/health")
                self.health.append((sent, time.time()))
                if response.status_code != 200:
                    self.failures.append(f"/health answered {response.status_code}")
                time.sleep(0.02)

    def _talk(self) -> None:
        with Client(self.url, timeout=120, token=TOKEN) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                sent = time.time()
                run = client.send(self.agent, f"turn-{n}", f"hello {n}")
                self.turns.append((sent, time.time()))
                expected = f"echo: hello {n}" if self.agent == "calm" else "read"
                if run["status"] != "completed" or run["output"] != expected:
                    self.failures.append(f"calm turn {n}: {run['status']} {run['output']}")

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def check(self) -> None:
        assert not self.failures, self.failures
        assert self.health and self.turns, "the watchers got no answer at all"

    def answered_while(self, started: float, finished: float) -> tuple[int, int]:
        """The /health answers and turns sent after ``started`` and answered before
        ``finished``."""
        def inside(pairs: list[tuple[float, float]]) -> int:
            return sum(1 for sent, answered in pairs if started < sent and answered < finished)
        return inside(self.health), inside(self.turns)


def _attack(live: LiveServer, tool: str, arguments: dict[str, Any],
            prepare: Callable[[Path], None] | None = None, *, calls: int = 1,
            calm: str = "calm", to_the_limit: bool = False,
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a hostile call (``calls`` of them at once) while the watchers run; the run
    and its session's events. ``to_the_limit``: the call runs until the tool timeout
    by design, and the watchers must have been answered while it ran."""
    name = f"hostile-{tool}-{time.monotonic_ns()}"
    with Client(live.url, timeout=120, token=TOKEN) as client:
        client.create_agent(name, model="scripted", tools=[tool])
        if prepare is not None:
            workspace = live.settings.workspaces_dir / _agent_id(live, name)
            workspace.mkdir(parents=True, exist_ok=True)
            prepare(workspace)
        # Queued in process (the daemon runs here): arguments bigger than an API body.
        enqueue({"tool_calls": [{"name": tool, "arguments": arguments}] * calls},
                {"text": "done"}, agent=name)
        if calm != "calm":
            client.send(calm, f"warm-{name}", "warm up")  # its worker is started
        with Watch(live.url, calm) as watch:
            run_id = client.send(name, "k", "go", wait=False)["id"]
            run = wait_until(lambda: (r := client.get_run(run_id))["status"] in (
                "completed", "failed", "waiting_approval") and r,
                what=f"the hostile run {run_id} ending", interval=0.1)
            time.sleep(0.3)  # the watchers get a last look after the call ended
        watch.check()
        events = client.events(name, "k")
        if to_the_limit:
            at = {e["kind"]: datetime.fromisoformat(e["at"]).timestamp() for e in events}
            health, turns = watch.answered_while(at["tool.started"], at["tool.finished"])
            assert health >= HEALTH_DURING and turns >= TURNS_DURING, (
                f"while the call ran, {health} /health answers and {turns} turns")
        return run, events


def _agent_id(live: LiveServer, name: str) -> str:
    with sqlite3.connect(live.settings.home / "agentd.db") as db:
        row = db.execute("SELECT id FROM agents WHERE name = ?", (name,)).fetchone()
    return str(row[0])


def _finished(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["data"] for e in events if e["kind"] == "tool.finished")


def _file(name: str, content: bytes) -> Callable[[Path], None]:
    def prepare(workspace: Path) -> None:
        (workspace / name).write_bytes(content)
    return prepare


def _many_files(count: int, width: int = 1) -> Callable[[Path], None]:
    def prepare(workspace: Path) -> None:
        folder = workspace / "many"
        folder.mkdir()
        for i in range(count):
            (folder / f"{'a' * width}{i}").touch()
    return prepare


#: (case id, tool, arguments, what prepares the workspace, a word of the result)
CATALOGUE: list[tuple[str, str, dict[str, Any], Callable[[Path], None] | None, str]] = [
    ("calculator-power-tower", "calculator", {"expression": "(9**9999)**2000"}, None,
     "more than"),
    ("calculator-exponent", "calculator", {"expression": "9**9**9"}, None, "too large"),
    ("calculator-round", "calculator", {"expression": "round(1, -999999999)"}, None,
     "digits"),
    ("calculator-nesting", "calculator", {"expression": "-" * 990 + "1"}, None,
     "nested"),
    ("current_time-huge-zone", "current_time", {"timezone": "A/" * 50_000}, None,
     "unknown time zone"),
    ("read_file-deep-path", "read_file", {"path": "a/" * 5000}, None, "too deep"),
    ("write_file-huge-content", "write_file", {"path": "x", "content": "x" * 5_000_000},
     None, "the limit is"),
    ("write_files-many-changes", "write_files",
     {"files": [{"path": f"f{i}", "content": "x"} for i in range(20_000)]}, None,
     "give 1 to 100 files"),
    ("edit_file-every-byte-matches", "edit_file", {"path": "big", "old": "a", "new": "b"},
     _file("big", b"a" * 4_000_000), "occurs 4000000 times"),
    ("list_files-many-files", "list_files", {"path": "many"}, _many_files(3000),
     "more entries not shown"),
    ("glob-backtracking-pattern", "glob", {"pattern": "**/" + "*a" * 60 + "b"},
     _many_files(300, width=200), "(no match)"),
    ("grep-redos", "grep", {"pattern": "(a+)+$"}, _file("line", b"a" * 27 + b"!\n"),
     "timed out"),
    ("grep-redos-nested", "grep", {"pattern": "^(([a-z])+.)+[A-Z]([a-z])+$"},
     _file("line", b"a" * 40 + b"\n"), "timed out"),
    ("http_fetch-huge-url", "http_fetch", {"url": "http://" + "a" * 2_000_000}, None,
     "denied"),
    ("a2a_call-huge-url", "a2a_call", {"url": "http://" + "a" * 2_000_000, "message": "hi"},
     None, "denied"),
    ("git-huge-arguments", "git", {"command": "log", "args": ["x" * 64] * 140_000},
     None, "the limit is"),
]


@pytest.mark.parametrize(("tool", "arguments", "prepare", "expected"),
                         [pytest.param(*case[1:], id=case[0]) for case in CATALOGUE])
def test_hostile_call_does_not_stall(server: LiveServer, tool: str,
                                     arguments: dict[str, Any],
                                     prepare: Callable[[Path], None] | None,
                                     expected: str) -> None:
    run, events = _attack(server, tool, arguments, prepare,
                          to_the_limit=expected == "timed out")
    assert run["status"] == "completed", run
    result = _finished(events)
    assert expected in result["output"], result["output"][:300]
    if expected != "more entries not shown" and expected != "(no match)":
        assert result["is_error"], result["output"][:300]


def test_an_agent_cannot_take_every_worker(server: LiveServer) -> None:
    """Ten backtracking greps in one step (read-only calls run together) use the
    agent's share of the workers; another agent's read_file turns still answer."""
    run, events = _attack(server, "grep", {"pattern": "(a+)+$"},
                          _file("line", b"a" * 27 + b"!\n"), calls=10, calm="reader",
                          to_the_limit=True)
    assert run["status"] == "completed", run
    outputs = [e["data"]["output"] for e in events if e["kind"] == "tool.finished"]
    assert len(outputs) == 10 and all("timed out" in o for o in outputs), outputs


def test_command_the_analyser_chokes_on_is_asked_about(server: LiveServer) -> None:
    """``$((`` repeated makes the analyser's rewriting quadratic: tens of seconds in
    one regular-expression call. It is judged in a worker, stopped at the limit, and
    the call is asked about (fail closed), not run."""
    run, events = _attack(server, "shell", {"command": "$((" * 12_000})
    assert run["status"] == "waiting_approval", run
    requested = next(e["data"] for e in events if e["kind"] == "approval.requested")
    assert requested["policy"]["action"] == "ask"
    assert requested["policy"]["rule"] == "builtin:unjudged"
    assert "could not judge" in requested["reason"]
    assert not any(e["kind"] == "tool.started" for e in events)


async def test_mcp_schema_pattern_is_checked_in_a_worker() -> None:
    """An MCP server's input schema may carry a ``pattern`` that backtracks on the
    model's argument (``jsonschema`` uses Python's ``re``). The check runs in a worker,
    stopped at the limit, while the event loop keeps ticking."""
    schema = {"type": "object", "properties": {"text": {"type": "string",
                                                        "pattern": "^(a+)+$"}}}
    tool = MCPTool(name="m", description="", fn=lambda: None, parameters=schema,
                   server="s", remote_name="m", _connection=None,  # never reached
                   _validator=Draft202012Validator(schema))
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e")
    pool = WorkerPool(size=1)
    try:
        # It runs until its 2 s limit: a loop held that long would tick once at most.
        done, ticks = await ticks_while(tool.call({"text": "a" * 40 + "!"}, ctx, 2.0, pool))
        with pytest.raises(ToolError) as caught:
            done.result()
        assert caught.value.code == "tool_timeout"
        assert ticks >= 3, ticks
        with pytest.raises(ToolError) as wrong:
            await tool.call({"text": "b"}, ctx, 30.0, pool)
        assert wrong.value.code == "tool_bad_arguments"
    finally:
        await pool.close()


#: A page that names ``punycode`` as its charset, served by another process (the
#: egress check refuses the daemon's own ports, and this test is the daemon).
PUNYCODE_SERVER = """
import contextlib, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Page(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"a" * 500_000 + b"-" + b"b" * 499_999
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=punycode")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stops at max_bytes
            self.wfile.write(body)

httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"""


@pytest.fixture
def punycode_port() -> Iterator[int]:
    server = subprocess.Popen([sys.executable, "-c", PUNYCODE_SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()


async def test_http_fetch_does_not_decode_a_page_in_quadratic_time(punycode_port: int
                                                                   ) -> None:
    """The page names its charset; ``punycode`` decodes in pure Python in quadratic
    time, on the event loop (http_fetch is async): minutes for a megabyte."""
    port = punycode_port
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      sandbox=Sandbox(backend=None, limits=Limits(),
                                      network=("127.0.0.1",),
                                      rules=EgressRules.of([f"127.0.0.1:{port}"])))
    out = await NET_TOOLS["http_fetch"].call(
        {"url": f"http://127.0.0.1:{port}/", "max_bytes": 1_000_000}, ctx, 60.0)
    # Shown as UTF-8, not decoded as punycode (which would turn "-bbb..." into the
    # code points it encodes, minutes later).
    assert "HTTP 200" in out and "aaaa-bbbb" in out


def test_arguments_nested_too_deeply_for_the_event_log_are_bad_output() -> None:
    """orjson parses 1024 levels of a model's arguments but writes only 255: such a
    call used to fail the commit of its own events. It is the model's bad output."""
    accumulator = StreamAccumulator()
    accumulator.add(ToolCallDelta(index=0, id="c1", name="read_file",
                                  arguments='{"path": ' + "[" * 600 + "]" * 600 + "}"))
    with pytest.raises(ModelError) as caught:
        accumulator.message()
    assert caught.value.code == "model_bad_output"


OPERATOR_MODULE = """
import os
from agentd.tools import ToolContext, tool

@tool(isolated=True)
def where_am_i(ctx: ToolContext, flag: str = "") -> int:
    \"\"\"An operator's tool marked isolated: it runs in a worker process.\"\"\"
    if flag:
        ctx.untrusted = flag
    return os.getpid()

@tool(isolated=True)
def hog() -> int:
    \"\"\"Asks for more memory than a worker may have.\"\"\"
    return len(bytearray(3 << 30))
"""


async def test_an_operators_isolated_tool_runs_in_a_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment's tool module (``tool_modules``) found on the daemon's path."""
    (tmp_path / "stall_operator_tools.py").write_text(OPERATOR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    where_am_i = ToolRegistry({}).load_module("stall_operator_tools")
    assert where_am_i == ["hog", "where_am_i"]
    module = importlib.import_module("stall_operator_tools")
    t = module.where_am_i
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e")
    pool = WorkerPool(size=1, memory_mb=1024)
    try:
        pid = await t.call({"flag": "from a page"}, ctx, 30.0, pool)
        assert pid != os.getpid() and ctx.untrusted == "from a page"
        assert await t.call({}, ctx, 30.0, None) == os.getpid()  # no pool: in a thread
        with pytest.raises(ToolError) as caught:
            await t.call({"flag": 3}, ctx, 30.0, pool)
        assert caught.value.code == "tool_bad_arguments"  # validated in the worker
        with pytest.raises(ToolError) as hogged:
            await module.hog.call({}, ctx, 30.0, pool)
        assert hogged.value.code == "tool_out_of_memory"  # RLIMIT_AS
    finally:
        await pool.close()
