"""`secret:NAME` in an MCP server's environment and headers: resolved as its
connection is made (a real stdio server in the sandbox, a real HTTP server), each use
audited, the value redacted out of what the server's tools print; a name the agent
has none of is refused at settings time (422, nothing written) or, deleted since,
leaves that server out of the run with a clear message. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import free_port
from tests.tools.test_mcp import start_http_server, stop_http_server

from agentd.assembly import Runtime
from agentd.errors import AgentNotFound, InvalidInput

SERVER = Path(__file__).parents[1] / "tools" / "mcp_server.py"


def _call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


def _stdio(env: dict[str, str]) -> dict[str, Any]:
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 for the sandboxed server")
    site = [p for p in sys.path if p.endswith("site-packages")]
    return {"name": "t", "command": ["/usr/bin/python3", str(SERVER), "stdio"],
            "env": {"PYTHONPATH": ":".join(site), **env}}


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    proc = start_http_server(port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_http_server(proc)


async def _set(rt: Runtime, name: str, value: str, tenant: str = "default",
               agent: str | None = None) -> None:
    await rt.secrets.set(name=name, value=value, tenant=tenant, agent=agent,
                         actor="test", role="admin")


async def _run(rt: Runtime, agent: str = "a") -> tuple[Any, list[Any]]:
    sent = await rt.send(agent, "k", "go")
    run = await asyncio.wait_for(rt.wait(sent.run.id), 60)
    _, session = await rt.get_session(agent, "k")
    return run, await rt.read_events(session.id)


async def test_a_stdio_servers_environment_gets_the_value_the_log_its_name(
        runtime: Runtime) -> None:
    value = "mcp-env-" + secrets.token_hex(12)
    await _set(runtime, "MCP_TOKEN", value)
    await runtime.create_agent(name="a", model="scripted", settings={
        "sandbox": {"backend": "process"}, "mcp": [_stdio({"TOKEN": "secret:MCP_TOKEN"})],
        "script": [_call("t__env", name="TOKEN"), {"text": "done"}]})
    run, events = await _run(runtime)
    assert run.status == "completed", run
    [finished] = [e for e in events if e.kind == "tool.finished"]
    # The server printed the value it was given; the log holds the secret's name.
    assert finished.data["output"] == "[secret:MCP_TOKEN]", finished.data
    assert value not in repr([e.data for e in events])
    await runtime.identity.audit.flush()
    uses = await runtime.identity.audit.page(action="secret.use")
    assert [(u.resource, u.details["use"], u.actor) for u in uses] == [
        ("secret:default/MCP_TOKEN", "mcp:t env TOKEN", "agent:a")]


async def test_an_http_servers_header_gets_the_value(runtime: Runtime, http_url: str
                                                     ) -> None:
    value = "mcp-hdr-" + secrets.token_hex(12)
    await _set(runtime, "HDR", value)
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [{"name": "web", "url": http_url,
                 "headers": {"X-Agentd-Test": "Bearer secret:HDR"}}],
        "script": [_call("web__header", name="x-agentd-test"), {"text": "done"}]})
    run, events = await _run(runtime)
    assert run.status == "completed", run
    [finished] = [e for e in events if e.kind == "tool.finished"]
    assert finished.data["output"] == "Bearer [secret:HDR]", finished.data
    assert value not in repr([e.data for e in events])


@pytest.mark.parametrize("where", ["missing", "other tenant", "other agent"])
async def test_a_secret_the_agent_has_none_of_is_refused_at_settings_time(
        runtime: Runtime, where: str) -> None:
    if where == "other tenant":
        # (the secret is the default tenant's; the agent is acme's)
        await _set(runtime, "K", "value-of-k-1234", tenant="default", agent=None)
        tenant_settings: dict[str, Any] = {"tenant": "acme"}
    elif where == "other agent":
        await runtime.create_agent(name="b", model="scripted")
        await _set(runtime, "K", "value-of-k-1234", agent="b")
        tenant_settings = {}
    else:
        tenant_settings = {}
    with pytest.raises(InvalidInput, match="secret 'K' not found for agent 'a'") as caught:
        await runtime.create_agent(name="a", model="scripted", settings={
            **tenant_settings, "mcp": [_stdio({"TOKEN": "secret:K"})]})
    assert caught.value.details["errors"][0]["field"] == "body.settings.mcp.0.env.TOKEN"
    with pytest.raises(AgentNotFound):
        await runtime.stored_agent("a")


async def test_a_secret_deleted_since_leaves_the_server_out_saying_why(
        runtime: Runtime) -> None:
    await _set(runtime, "GONE", "soon-gone-value-1")
    await runtime.create_agent(name="a", model="scripted", settings={
        "sandbox": {"backend": "process"}, "mcp": [_stdio({"TOKEN": "secret:GONE"})],
        "script": [{"text": "done"}]})
    await runtime.secrets.delete(name="GONE", tenant="default", agent=None, actor="t",
                                 role="admin")
    run, events = await _run(runtime)
    assert run.status == "completed", run
    [unavailable] = [e for e in events if e.kind == "tools.unavailable"]
    assert unavailable.data["errors"] == [
        "MCP server 't' not started: secret 'GONE' not found for agent 'a'"]
