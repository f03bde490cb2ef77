"""A real MCP server for the MCP client tests, built with the SDK's server API.

Run it as ``python tests/tools/mcp_server.py stdio`` (a stdio subprocess) or
``python tests/tools/mcp_server.py http --port N`` (streamable HTTP on 127.0.0.1:N/mcp).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, ToolAnnotations

server: MCPServer[Any] = MCPServer("agentd-test", log_level="WARNING")

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


@server.tool(annotations=READ_ONLY)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=False,
                                         open_world_hint=False))
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def write_note(text: str) -> str:
    """Pretend to write a note somewhere outside."""
    return f"noted: {text}"


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def crash() -> str:
    """Kill the server process mid-call."""
    os._exit(1)


@server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=False))
def flaky(marker: str) -> str:
    """Crash the server the first time (creating ``marker``), answer afterwards."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed once")
        os._exit(1)
    return "survived"


@server.tool()
def fail() -> str:
    """Always fail (an isError result)."""
    raise ToolError("the tool failed on purpose")


@server.tool(annotations=READ_ONLY)
def big() -> str:
    """Return 1 MB of text."""
    return "x" * 1_000_000


@server.tool(annotations=READ_ONLY)
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool(annotations=READ_ONLY)
def env(name: str) -> str | None:
    """The value of an environment variable in the server, or null."""
    return os.environ.get(name)


@server.tool(annotations=READ_ONLY)
def header(name: str, ctx: Context) -> str | None:
    """The value of an HTTP request header (streamable HTTP only), or null."""
    headers = ctx.headers or {}
    return headers.get(name.lower())


@server.tool(annotations=READ_ONLY)
def picture() -> CallToolResult:
    """An image and no text."""
    data = base64.b64encode(b"\x89PNG" + b"\0" * 96).decode()
    return CallToolResult(content=[ImageContent(data=data, mime_type="image/png")])


@server.tool(annotations=READ_ONLY)
def structured() -> CallToolResult:
    """Structured content only."""
    return CallToolResult(content=[], structured_content={"answer": 42, "unit": "none"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
