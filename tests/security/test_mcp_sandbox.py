"""An agent's stdio MCP server runs in the agent's sandbox, not as the daemon.

The attack this closes: an agent (or anyone who could set its settings) named a stdio
command in ``settings.mcp`` and the daemon started it as a plain child: root, the
host's files, the daemon's environment and network. Here the command is a small MCP
server (standard library only) that reports what it can reach, started through the
whole runtime path: agent settings, a run, the MCP manager, the sandbox.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.sandbox.backends import BubblewrapBackend

pytestmark = pytest.mark.skipif(BubblewrapBackend.unavailable() is not None,
                                reason="bubblewrap does not work here")

#: A minimal MCP server over stdio (JSON-RPC lines), with one tool that looks around.
SERVER = r'''
import json, os, socket, sys

def probe(port):
    seen = {"uid": os.getuid(), "env": sorted(os.environ), "cwd": os.getcwd()}
    for name, path in (("shadow", "/etc/shadow"), ("daemon_db", sys.argv[1])):
        try:
            open(path, "rb").read(1)
            seen[name] = "read"
        except OSError as exc:
            seen[name] = type(exc).__name__
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        seen["loopback"] = "connected"
    except OSError as exc:
        seen["loopback"] = type(exc).__name__
    seen["home_visible"] = os.path.exists(os.path.dirname(sys.argv[1]))
    return seen

for line in sys.stdin:
    msg = json.loads(line)
    method, ident = msg.get("method"), msg.get("id")
    if ident is None:
        continue  # a notification
    if method == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"],
                  "capabilities": {"tools": {}},
                  "serverInfo": {"name": "probe", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "probe", "description": "look around",
                             "inputSchema": {"type": "object", "properties": {
                                 "port": {"type": "integer"}}, "required": ["port"]}}]}
    elif method == "tools/call":
        text = json.dumps(probe(msg["params"]["arguments"]["port"]))
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    elif method == "ping":
        result = {}
    else:
        reply = {"jsonrpc": "2.0", "id": ident,
                 "error": {"code": -32601, "message": "method not found"}}
        print(json.dumps(reply), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}), flush=True)
'''


@pytest.fixture
def listener() -> Iterator[int]:
    """A socket on the host's loopback, standing for the daemon's API."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_a_stdio_server_is_confined_like_the_shell(settings: Settings,
                                                         listener: int) -> None:
    settings.sandbox = settings.sandbox.model_copy(update={"backend": "bubblewrap"})
    os.environ["AGENTD_TEST_SECRET"] = "hunter2"
    rt = await Runtime.open(settings)
    try:
        db = str(settings.home / "agentd.db")
        agent = await rt.create_agent(name="m", model="scripted", settings={
            "script": [{"tool_calls": [{"name": "probe__probe",
                                        "arguments": {"port": listener}}]},
                       {"text": "done"}],
            "mcp": [{"name": "probe", "command": ["python3", "server.py", db],
                     "trusted": True}],
            # (server.py is written from outside, which taints the session: allowed
            # anyway, since the wall under test is the sandbox, not the policy)
            "policy": {"rules": [{"tool": "probe__*", "action": "allow",
                                  "tainted": True},
                                 {"tool": "probe__*", "action": "allow"}]}})
        workspace = rt.workspace_of(agent)
        workspace.mkdir(parents=True, exist_ok=True)
        (workspace / "server.py").write_text(SERVER)
        sent = await rt.send("m", "k", "go")
        run = await rt.wait(sent.run.id)
        events = await rt.store.read_events(sent.session.id)
        assert run.status == "completed", json.dumps([e.data for e in events][-1])
        [finished] = [e for e in events if e.kind == "tool.finished"]
        assert not finished.data["is_error"], finished.data
        seen: dict[str, Any] = json.loads(finished.data["output"])
        assert seen["uid"] != 0 and seen["uid"] != os.getuid()
        assert seen["shadow"] in ("PermissionError", "FileNotFoundError")
        assert seen["daemon_db"] == "FileNotFoundError" and not seen["home_visible"]
        assert seen["loopback"] in ("ConnectionRefusedError", "OSError")  # its own lo
        assert seen["cwd"] == "/workspace"
        assert not [k for k in seen["env"] if k.startswith("AGENTD") or "SECRET" in k]
    finally:
        os.environ.pop("AGENTD_TEST_SECRET", None)
        await rt.close()
