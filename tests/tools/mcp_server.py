"""A real MCP server for the MCP client tests, built with the SDK's server API.

Run it as ``python tests/tools/mcp_server.py stdio`` (a stdio subprocess) or
``python tests/tools/mcp_server.py http --port N`` (streamable HTTP on 127.0.0.1:N/mcp).
With ``http --legacy`` it refuses the 2026 protocol's ``server/discover``, so a client
falls back to the ``initialize`` handshake and a stateful HTTP session, as with the
servers of protocol 2025.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations

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


@server.tool(annotations=READ_ONLY)
def traceparent(ctx: Context[Any, Any]) -> str:
    """The W3C traceparent the call's _meta carried (empty if none)."""
    meta = ctx.request_context.meta or {}
    value = meta.get("traceparent") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else ""


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


#: A real PNG, 3 x 2 pixels (a screenshot, as far as a test needs one).
PHOTO = ("iVBORw0KGgoAAAANSUhEUgAAAAMAAAACCAIAAAASFvFNAAAAFUlEQVR4nGM8ISfHwMDAwMDAxAAD"
         "ABMuAQhqwGVhAAAAAElFTkSuQmCC")


@server.tool(annotations=READ_ONLY)
def photo() -> CallToolResult:
    """Some text and a real image."""
    return CallToolResult(content=[TextContent(text="a photo"),
                                   ImageContent(data=PHOTO, mime_type="image/png")])


@server.tool(annotations=READ_ONLY)
def structured() -> CallToolResult:
    """Structured content only."""
    return CallToolResult(content=[], structured_content={"answer": 42, "unit": "none"})


def legacy_only(app: Any) -> Any:
    """An ASGI wrapper refusing ``server/discover``, as servers of protocol 2025 do."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        messages = [await receive()]
        while messages[-1].get("more_body"):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("method") == "server/discover":
            answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"),
                                 "error": {"code": -32601, "message": "Method not found"}})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer.encode()})
            return None
        replay = iter(messages)

        async def again() -> Any:
            return next(replay, None) or await receive()

        return await app(scope, again, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--legacy", action="store_true",
                        help="(http) refuse server/discover, as servers of protocol 2025 do")
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    elif args.legacy:
        app = legacy_only(server.streamable_http_app())
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
