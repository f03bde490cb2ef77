"""MCP tools against a real MCP server (tests/tools/mcp_server.py), over stdio and HTTP."""

from __future__ import annotations

import asyncio
import functools
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter
from pydantic import ValidationError
from tests.conftest import eventually, free_port, wait_for_port

from agentd.errors import InvalidInput, ToolError
from agentd.sandbox.backends import Limits, ProcessBackend, prepare_workspace
from agentd.sandbox.limits import SANDBOX_PATH
from agentd.sandbox.process import Child
from agentd.tools import Tool, ToolContext, ToolOutput
from agentd.tools.mcp import MAX_RESULT, MCPManager, MCPServer, MCPTool, _exposed_name
from agentd.tools.mcp_stdio import Spawner, StderrTail, sandboxed_stdio

SERVER = Path(__file__).with_name("mcp_server.py")
CTX = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e")


def bounded(seconds: float) -> Callable[[Callable[..., Awaitable[None]]],
                                        Callable[..., Awaitable[None]]]:
    """No bug may hang the suite: the test fails after ``seconds``."""
    def wrap(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> None:
            async with asyncio.timeout(seconds):
                await fn(*args, **kwargs)
        return run
    return wrap


def sandbox_python() -> str:
    """A Python the sandbox's uid may run, with this one's packages (the venv's own
    interpreter may live under a home closed to other users)."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        pytest.skip("no /usr/bin/python3 for the sandboxed server")
    return str(system)


def stdio(name: str = "t", *, env: dict[str, str] | None = None, **kwargs: Any
          ) -> MCPServer:
    site = [p for p in sys.path if p.endswith("site-packages")]
    return MCPServer(name=name, command=[sandbox_python(), str(SERVER), "stdio"],
                     env={"PYTHONPATH": ":".join(site), **(env or {})}, **kwargs)


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


async def call(tools: list[Tool], tool_name: str, **arguments: Any) -> Any:
    return await by_name(tools)[tool_name].call(arguments, CTX, 30.0)


async def failure(awaitable: Awaitable[Any]) -> ToolError:
    with pytest.raises(ToolError) as info:
        await awaitable
    return info.value


def gone(pid: int) -> bool:
    """The process has exited and been reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def state(manager: MCPManager, server: str = "t") -> dict[str, Any]:
    [entry] = [s for s in manager.status() if s["server"] == server]
    return entry


class SandboxedManager(MCPManager):
    """The manager as the runtime uses it: stdio servers start through a spawner (here
    the process backend, so that the tests can see and kill the server's host pid)."""

    def __init__(self, spawn: Spawner, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spawn = spawn

    async def tools(self, owner: str, servers: Sequence[MCPServer], *,
                    failures: list[str] | None = None,
                    spawn: Spawner | None = None) -> list[Tool]:
        return await super().tools(owner, servers, failures=failures,
                                   spawn=spawn or self.spawn)


def process_spawner(workspace: Path) -> Spawner:
    backend = ProcessBackend()
    prepare_workspace(workspace)

    async def spawn(server: MCPServer) -> Child:
        assert server.command is not None
        return await backend.spawn(server.command, workspace=workspace, env=server.env,
                                   limits=Limits(cpu_s=600, wall_s=600))

    return spawn


@pytest.fixture
def spawner(tmp_path: Path) -> Spawner:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return process_spawner(workspace)


@pytest.fixture
async def manager(spawner: Spawner) -> AsyncIterator[MCPManager]:
    m = SandboxedManager(spawner, connect_timeout_s=20)
    yield m
    await m.close()


def start_http_server(port: int, legacy: bool = False) -> subprocess.Popen[bytes]:
    """Start the test server on ``port``; return once it accepts connections."""
    argv = [sys.executable, str(SERVER), "http", "--port", str(port)]
    proc = subprocess.Popen(argv + ["--legacy"] * legacy,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, what="the HTTP MCP server")
    except BaseException:
        stop_http_server(proc)
        raise
    return proc


def stop_http_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    proc = start_http_server(port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_http_server(proc)


# -- configuration ----------------------------------------------------------------


def test_server_config_needs_exactly_one_transport() -> None:
    with pytest.raises(ValidationError, match="exactly one of command"):
        MCPServer(name="x")
    with pytest.raises(ValidationError, match="exactly one of command"):
        MCPServer(name="x", command=["srv"], url="http://localhost/mcp")
    with pytest.raises(ValidationError, match="env and cwd apply to a command"):
        MCPServer(name="x", url="http://localhost/mcp", env={"A": "b"})
    with pytest.raises(ValidationError, match="headers apply to a url"):
        MCPServer(name="x", command=["srv"], headers={"A": "b"})
    with pytest.raises(ValidationError, match="http"):
        MCPServer(name="x", url="file:///etc/passwd")
    with pytest.raises(ValidationError):
        MCPServer(name="has space", command=["srv"])
    with pytest.raises(ValidationError):
        MCPServer(name="x" * 33, command=["srv"])
    with pytest.raises(ValidationError):
        MCPServer(name="x", command=["srv"], surprise=True)  # type: ignore[call-arg]


def test_exposed_names_are_valid_openai_tool_names() -> None:
    assert _exposed_name("fs", "read_file") == "fs__read_file"
    assert _exposed_name("fs", "dir.list/all") == "fs__dir_list_all"
    long_a, long_b = _exposed_name("fs", "a" * 80), _exposed_name("fs", "a" * 81)
    assert len(long_a) == len(long_b) == 64 and long_a != long_b
    clash = _exposed_name("fs", "x.y", taken={"fs__x_y"})
    assert clash != "fs__x_y" and clash.startswith("fs__x_y_")


# -- stdio -------------------------------------------------------------------------


@bounded(30)
async def test_stdio_tools_metadata_and_calls(manager: MCPManager) -> None:
    tools = await manager.tools("agent1", [stdio()])
    named = by_name(tools)
    assert {"t__add", "t__echo", "t__write_note", "t__slow", "t__crash"} <= set(named)
    assert all(isinstance(t, MCPTool) for t in tools)

    add = named["t__add"]
    assert add.description == "Add two integers."
    assert add.spec.parameters["properties"]["a"]["type"] == "integer"
    assert (add.read_only, add.idempotent, add.needs_approval, add.sends_out) == (
        True, True, False, False)  # read-only and closed-world
    echo = named["t__echo"]  # idempotent, not destructive, closed world
    assert (echo.read_only, echo.idempotent, echo.needs_approval, echo.sends_out) == (
        False, True, False, False)
    note = named["t__write_note"]  # destructive, open world by default
    assert (note.read_only, note.idempotent, note.needs_approval, note.sends_out) == (
        False, False, True, True)
    slow = named["t__slow"]  # no annotations: the MCP defaults are the cautious ones
    assert (slow.read_only, slow.needs_approval, slow.sends_out) == (False, True, True)
    assert all(t.untrusted_output and not t.needs_network for t in tools)
    assert add.timeout_s == 60.0

    assert await call(tools, "t__add", a=2, b=3) == "5"
    assert await call(tools, "t__echo", text="héllo") == "héllo"
    results = await asyncio.gather(*(call(tools, "t__add", a=i, b=1) for i in range(5)))
    assert results == ["1", "2", "3", "4", "5"]


@bounded(30)
async def test_stdio_results_errors_and_limits(manager: MCPManager) -> None:
    tools = await manager.tools("agent1", [stdio(trusted=True, tools=[
        "add", "fail", "big", "picture", "photo", "structured"])])
    assert sorted(t.name for t in tools) == ["t__add", "t__big", "t__fail", "t__photo",
                                             "t__picture", "t__structured"]
    assert not any(t.untrusted_output for t in tools)
    assert by_name(tools)["t__add"].sends_out is False  # trusted, read-only

    bad = await failure(call(tools, "t__add", a="two"))
    assert bad.code == "tool_bad_arguments"
    assert "a: 'two' is not of type 'integer'" in bad.message
    assert "'b' is a required property" in bad.message

    failed = await failure(call(tools, "t__fail"))
    assert failed.code == "mcp_tool_error"
    assert "the tool failed on purpose" in failed.message

    big = await call(tools, "t__big")
    assert big.startswith("x" * 1000)
    assert MAX_RESULT < len(big) < MAX_RESULT + 200
    assert big.endswith("[MCP result truncated: 1000000 characters in all]")

    # Images come back as images too (the run checks them: this one is no PNG).
    picture = await call(tools, "t__picture")
    assert isinstance(picture, ToolOutput)
    assert picture.text == "[image: image/png, 100 bytes]"
    assert [(i.data, i.media_type) for i in picture.images] == [
        (b"\x89PNG" + b"\0" * 96, "image/png")]
    photo = await call(tools, "t__photo")
    assert isinstance(photo, ToolOutput) and photo.text.startswith("a photo\n[image: ")
    assert photo.images[0].data.startswith(b"\x89PNG\r\n")
    assert await call(tools, "t__structured") == '{"answer": 42, "unit": "none"}'

    with pytest.raises(InvalidInput, match="has no tool"):
        await manager.tools("agent1", [stdio(tools=["add", "nosuch"])])


@bounded(30)
async def test_stdio_server_sees_only_the_environment_it_is_given(
        manager: MCPManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTD_TEST_SECRET", "hunter2")
    tools = await manager.tools("agent1", [stdio(env={"GIVEN": "yes"})])
    assert await call(tools, "t__env", name="GIVEN") == "yes"
    assert await call(tools, "t__env", name="AGENTD_TEST_SECRET") == '{"result": null}'
    assert await call(tools, "t__env", name="PATH") == SANDBOX_PATH


@bounded(30)
async def test_connections_are_reused_per_owner_and_closed(manager: MCPManager) -> None:
    first = await manager.tools("agent1", [stdio()])
    again = await manager.tools("agent1", [stdio()])
    other = await manager.tools("agent2", [stdio()])
    pid1 = int(await call(first, "t__pid"))
    assert int(await call(again, "t__pid")) == pid1
    pid2 = int(await call(other, "t__pid"))
    assert pid2 != pid1
    assert sorted(s["owner"] for s in manager.status()) == ["agent1", "agent2"]

    in_flight = asyncio.create_task(call(first, "t__slow", seconds=25))
    await asyncio.sleep(0.3)
    await manager.close("agent1")
    closed_mid_call = await failure(in_flight)
    assert closed_mid_call.code == "mcp_unavailable"
    assert "was closed while t__slow was running" in closed_mid_call.message
    assert gone(pid1) and not gone(pid2)
    assert [s["owner"] for s in manager.status()] == ["agent2"]
    closed = await failure(call(first, "t__pid"))
    assert closed.code == "mcp_unavailable"

    await manager.close()
    assert gone(pid2)
    assert manager.status() == []


@bounded(30)
async def test_a_timed_out_call_restarts_the_server(manager: MCPManager) -> None:
    tools = await manager.tools("agent1", [stdio(timeout_s=1)])
    old = int(await call(tools, "t__pid"))
    timeout = await failure(call(tools, "t__slow", seconds=30))
    assert timeout.code == "tool_timeout"
    assert state(manager)["state"] == "restarting"

    assert await call(tools, "t__add", a=1, b=1) == "2"
    assert int(await call(tools, "t__pid")) != old
    assert state(manager)["state"] == "connected"
    assert state(manager)["restarts"] == 1
    # The wedged process is stopped, not left behind.
    await eventually(lambda: gone(old), what="the wedged process gone")


@bounded(30)
async def test_a_timeout_lets_other_calls_in_flight_finish(manager: MCPManager) -> None:
    tools = await manager.tools("agent1", [stdio(timeout_s=3)])
    old = int(await call(tools, "t__pid"))
    wedged = asyncio.create_task(call(tools, "t__slow", seconds=30))
    await asyncio.sleep(1.5)
    # Still running when the other call times out, on the process being retired.
    other = asyncio.create_task(call(tools, "t__slow", seconds=2))
    assert (await failure(wedged)).code == "tool_timeout"
    assert not gone(old)
    assert await other == "slept 2.0"
    await eventually(lambda: gone(old), what="the old process gone")
    assert int(await call(tools, "t__pid")) != old


@bounded(30)
async def test_a_killed_server_fails_the_call_in_flight_and_is_restarted(
        manager: MCPManager) -> None:
    tools = await manager.tools("agent1", [stdio()])
    pid = int(await call(tools, "t__pid"))

    in_flight = asyncio.create_task(call(tools, "t__slow", seconds=25))
    await asyncio.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    died = await failure(in_flight)  # (not the tool timeout, not "slept 25")
    assert died.code == "mcp_server_died"
    assert "outcome is unknown" in died.message
    assert state(manager)["state"] == "restarting"

    assert await call(tools, "t__add", a=2, b=2) == "4"
    new_pid = int(await call(tools, "t__pid"))
    assert new_pid != pid

    # Killed while idle: noticed, and the next call gets a new server.
    os.kill(new_pid, signal.SIGKILL)
    await eventually(lambda: state(manager)["state"] == "restarting", what="a restart")
    assert await call(tools, "t__add", a=3, b=3) == "6"
    assert state(manager)["restarts"] == 2
    assert state(manager)["last_error"] == "the server process exited"


@bounded(30)
async def test_a_crash_mid_call_and_the_retry_of_idempotent_tools(
        manager: MCPManager, tmp_path: Path) -> None:
    # (the marker lives in the workspace: the sandboxed server may write only there)
    tools = await manager.tools("agent1", [stdio()])
    crashed = await failure(call(tools, "t__crash"))
    assert crashed.code == "mcp_server_died"
    assert "'t' died while t__crash was running" in crashed.message

    # flaky is idempotent: it crashes the server once, and the call is made again.
    marker = tmp_path / "ws" / "flaky"
    assert await call(tools, "t__flaky", marker="flaky") == "survived"  # (its cwd)
    assert marker.exists()
    assert state(manager)["restarts"] == 2


@bounded(35)
async def test_too_many_crashes_leave_the_server_dead(manager: MCPManager) -> None:
    tools = await manager.tools("agent1", [stdio()])
    for _ in range(4):  # the first start, then the three restarts allowed in 60 s
        assert (await failure(call(tools, "t__crash"))).code == "mcp_server_died"
    dead = await failure(call(tools, "t__add", a=1, b=1))  # no new process tried
    assert dead.code == "mcp_unavailable"
    assert "not restarted again" in dead.message
    assert "the server process exited" in dead.message
    status = state(manager)
    assert status["state"] == "dead"
    assert status["restarts"] == 3

    revived = await manager.tools("agent1", [stdio()])  # a new load starts afresh
    assert await call(revived, "t__add", a=1, b=1) == "2"
    assert state(manager)["state"] == "connected"


@bounded(30)
async def test_servers_that_cannot_start_are_reported(manager: MCPManager) -> None:
    missing = await failure(manager.tools("agent1", [MCPServer(name="nope",
                                                               command=["/nonexistent"])]))
    assert missing.code == "mcp_unavailable"
    assert "MCP server 'nope' could not start" in missing.message
    assert "No such file or directory" in missing.message

    script = "import sys; sys.stderr.write('cannot read config.toml\\n'); sys.exit(3)"
    broken = await failure(manager.tools("agent1", [
        MCPServer(name="broken", command=[sandbox_python(), "-c", script])]))
    assert broken.code == "mcp_unavailable"
    assert "MCP server 'broken' could not start" in broken.message
    assert "cannot read config.toml" in broken.message

    quick = SandboxedManager(manager.spawn, connect_timeout_s=1)
    try:
        silent = await failure(quick.tools("agent1", [
            MCPServer(name="silent", command=[sandbox_python(), "-c",
                                              "import sys; sys.stdin.read()"])]))
        assert silent.code == "mcp_unavailable"
        assert "did not finish its handshake within 1s" in silent.message
    finally:
        await quick.close()


@bounded(30)
async def test_stderr_written_as_the_connection_ends_is_kept(spawner: Spawner,
                                                             tmp_path: Path) -> None:
    """The race in which CI once lost a server's "No such file or directory": the
    server writes to stderr as it exits, and the connection ends before the loop has
    read that (the end of its stdout, or a write to its closed stdin, comes first); the
    reader of stderr is cancelled with the connection. Here the loop is held (a blocking
    ``select``) from before the server writes until its bytes are in the pipe, and the
    connection is then cancelled: what it wrote is still in the tail."""
    workspace = tmp_path / "ws"
    script = ("import os, sys, time\n"
              "sys.stdin.readline()\n"
              "open('got', 'w').close()\n"
              "while not os.path.exists('go'): time.sleep(0.01)\n"
              "sys.stderr.write('cannot read config.toml\\n'); sys.stderr.flush()\n"
              "sys.exit(3)\n")
    child = await spawner(MCPServer(name="late", command=[sandbox_python(), "-c", script]))
    tail = StderrTail()
    with anyio.CancelScope() as scope:
        async with sandboxed_stdio(child, tail) as (_, write):
            await write.send(SessionMessage(jsonrpc_message_adapter.validate_json(
                b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')))
            await eventually(lambda: (workspace / "got").exists(),
                             what="the server reading its first line")
            (workspace / "go").touch()
            # The loop is held here: the reader of stderr waits, and cannot read.
            readable, _, _ = select.select([child.stderr.fd], [], [], 20)
            assert readable, "the server wrote nothing to stderr"
            scope.cancel()
    assert "cannot read config.toml" in tail.tail()


# -- streamable HTTP ---------------------------------------------------------------


@bounded(30)
async def test_http_tools_and_calls(manager: MCPManager, http_url: str) -> None:
    server = MCPServer(name="web", url=http_url, headers={"X-Agentd-Test": "token-123"})
    tools = await manager.tools("agent1", [server])
    named = by_name(tools)
    assert named["web__add"].read_only
    assert await call(tools, "web__add", a=20, b=22) == "42"
    assert await call(tools, "web__header", name="X-Agentd-Test") == "token-123"
    big = await call(tools, "web__big")  # a 2 MB message: above the SDK's default limit
    assert big.endswith("[MCP result truncated: 1000000 characters in all]")
    assert state(manager, "web") == {
        "server": "web", "owner": "agent1", "transport": "http", "state": "connected",
        "protocol": "2026-07-28", "restarts": 0, "last_error": None, "tools": len(tools)}


@pytest.mark.parametrize("legacy", [False, True], ids=["protocol-2026", "protocol-2025"])
@bounded(40)
async def test_http_server_restarted_or_down(manager: MCPManager, legacy: bool) -> None:
    port = free_port()
    proc = await asyncio.to_thread(start_http_server, port, legacy)
    try:
        tools = await manager.tools("agent1", [
            MCPServer(name="web", url=f"http://127.0.0.1:{port}/mcp")])
        assert await call(tools, "web__echo", text="one") == "one"
        protocol = state(manager, "web")["protocol"]
        assert protocol.startswith("2025-") if legacy else protocol.startswith("2026-")

        # Down: a call fails quickly, and is not said to have maybe run.
        proc.kill()
        await asyncio.to_thread(proc.wait, 5)
        down = await failure(call(tools, "web__write_note", text="two"))
        assert down.code == "mcp_unavailable"
        assert "could not connect" in down.message

        # Back: calls work again.
        proc = await asyncio.to_thread(start_http_server, port, legacy)
        assert await call(tools, "web__write_note", text="three") == "noted: three"
        assert state(manager, "web")["state"] == "connected"
        assert state(manager, "web")["restarts"] == 2

        # Restarted between two calls: with protocol 2025 the next call finds its
        # session gone, and is made on a new one (the server ran nothing, so this is
        # safe for any tool); protocol 2026 has no sessions to lose.
        await asyncio.to_thread(stop_http_server, proc)
        proc = await asyncio.to_thread(start_http_server, port, legacy)
        assert await call(tools, "web__write_note", text="four") == "noted: four"
        assert state(manager, "web")["restarts"] == (3 if legacy else 2)
    finally:
        await asyncio.to_thread(stop_http_server, proc)


@bounded(20)
async def test_http_server_not_listening(manager: MCPManager) -> None:
    down = await failure(manager.tools("agent1", [
        MCPServer(name="down", url=f"http://127.0.0.1:{free_port()}/mcp")]))
    assert down.code == "mcp_unavailable"
    assert "MCP server 'down' could not connect" in down.message
