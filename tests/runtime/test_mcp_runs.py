"""MCP tools in runs: the same policy, approval, taint and audit path as built-in
tools, against a real MCP server process; a server that cannot start is reported and
the run goes on."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.errors import InvalidInput

SERVER = Path(__file__).parents[1] / "tools" / "mcp_server.py"


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


async def _events(rt: Runtime, key: str = "k") -> list[Any]:
    _, session = await rt.get_session("a", key)
    return await rt.read_events(session.id)


def _server(name: str = "t") -> dict[str, Any]:
    """The test server as a stdio MCP server of an agent on the process backend: the
    agent's uid runs the system's Python with this venv's packages (the venv's own
    interpreter may sit under a home closed to other users; bubblewrap would show
    neither)."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 for the sandboxed server")
    site = [p for p in sys.path if p.endswith("site-packages")]
    return {"name": name, "command": ["/usr/bin/python3", str(SERVER), "stdio"],
            "env": {"PYTHONPATH": ":".join(site)}}


@pytest.mark.no_replay  # (MCP tools: a replay does not start the servers to learn their flags)
async def test_mcp_tools_run_under_policy_and_taint(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "sandbox": {"backend": "process"},
        "mcp": [_server(), {"name": "broken", "command": ["/nonexistent/mcp-server"]}],
        "script": [_call("t__add", a=2, b=3), _call("t__write_note", text="hi"),
                   {"text": "done"}]})
    sent = await runtime.send("a", "k", "go")
    run = await asyncio.wait_for(runtime.wait(sent.run.id), 60)
    assert run.status == "waiting_approval"
    events = await _events(runtime)
    unavailable = next(e for e in events if e.kind == "tools.unavailable")
    assert "broken" in unavailable.data["errors"][0]
    added = next(e for e in events if e.kind == "tool.finished")
    assert added.data["output"] == "5" and added.data["tainted"]
    [request] = await runtime.approvals.pending("a")
    assert request["name"] == "t__write_note"
    # Destructive by its annotations: asked; the taint also applies (it sends out).
    assert request["policy"]["rule"] in ("builtin:approval", "builtin:taint")
    await runtime.approvals.decide(request["approval_id"], "deny", reason="no notes")
    run = await asyncio.wait_for(runtime.wait(sent.run.id), 30)
    assert (run.status, run.output) == ("completed", "done")
    denied = [e for e in await _events(runtime) if e.kind == "tool.finished"][-1]
    assert denied.data["denied"] and "no notes" in denied.data["output"]


@pytest.mark.no_replay  # (MCP tools: a replay does not start the servers to learn their flags)
async def test_an_mcp_tools_image_reaches_the_model_as_an_image(runtime: Runtime) -> None:
    """An MCP server's image (a screenshot tool's, say) is an image for the model, kept
    by reference with the call's result, as a built-in tool's is; one that does not
    pass the decoders (the server's "PNG" is not one) is a note the model reads."""
    await runtime.create_agent(name="a", model="scripted", settings={
        "sandbox": {"backend": "process"}, "mcp": [{**_server(), "trusted": True}]})
    for key, tool in (("k", "t__photo"), ("bad", "t__picture")):
        sent = await runtime.send("a", key, f"/tool {tool} {{}}")
        run = await asyncio.wait_for(runtime.wait(sent.run.id), 60)
        assert run.status == "completed", run
        finished = next(e for e in await _events(runtime, key) if e.kind == "tool.finished")
        if key == "k":
            assert run.output is not None and run.output.endswith("[image image/png 3x2]")
            [part] = finished.data["parts"]
            assert (part["type"], part["width"], part["height"]) == ("image", 3, 2)
            assert "iVBOR" not in str(finished.data)  # a reference, not the bytes
        else:
            assert "parts" not in finished.data and not finished.data["is_error"]
            assert finished.data["output"].endswith(
                "[t__picture image 1: declared image/png, but the bytes are not one]")


@pytest.mark.no_replay  # (MCP tools: a replay does not start the servers to learn their flags)
async def test_an_mcp_call_carries_its_spans_traceparent(runtime: Runtime) -> None:
    """The call's _meta names its execute_tool span in the run's trace, so a server
    that traces continues it (issue 32)."""
    await runtime.create_agent(name="a", model="scripted", settings={
        "sandbox": {"backend": "process"}, "mcp": [_server()],
        "script": [_call("t__traceparent"), {"text": "done"}]})
    sent = await runtime.send("a", "k", "go")
    run = await asyncio.wait_for(runtime.wait(sent.run.id), 60)
    assert run.status == "completed", run
    finished = next(e for e in await _events(runtime) if e.kind == "tool.finished")
    spans = (await runtime.run_trace(run.id))["resourceSpans"][0]["scopeSpans"][0]["spans"]
    [tool] = [s for s in spans if s["name"] == "execute_tool t__traceparent"]
    assert finished.data["output"] == f"00-{tool['traceId']}-{tool['spanId']}-01"


@pytest.mark.parametrize(("mcp", "field"), [
    ([{"name": "x"}], "body.settings.mcp[0]"),
    ([{"name": "bad name!", "command": ["x"]}], "body.settings.mcp[0].name"),
    ([{"name": "x", "command": ["a"], "url": "http://h"}], "body.settings.mcp[0]"),
    ([{"name": "x", "url": "file:///etc"}], "body.settings.mcp[0].url"),
    ("not a list", "body.settings.mcp"),
])
async def test_bad_mcp_settings(runtime: Runtime, mcp: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await runtime.create_agent(name="a", model="scripted", settings={"mcp": mcp})
    assert caught.value.details["errors"][0]["field"].startswith(field)
