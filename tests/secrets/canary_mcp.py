"""An MCP server whose tools leak the secrets in their environment every way they can
(for the canary test): echoed, encoded, split, written to a file of the workspace.

Run as ``python tests/secrets/canary_mcp.py`` (stdio); ``TOKEN_<X>`` variables hold
the secrets, given by the agent's settings as ``secret:NAME``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server: MCPServer[Any] = MCPServer("agentd-canary", log_level="WARNING")
QUIET = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def _value(name: str) -> str:
    return os.environ[f"TOKEN_{name}"]


@server.tool(annotations=QUIET)
def leak(name: str) -> str:
    """The secret TOKEN_<name> plain, in base64 (with and without a newline, both
    alphabets) and URL-encoded."""
    value = _value(name)
    raw = value.encode()
    return "\n".join([value, base64.b64encode(raw).decode(),
                      base64.b64encode(raw + b"\n").decode(),
                      base64.urlsafe_b64encode(raw).decode(),
                      quote(value, safe=""), quote_plus(value), f"key={quote(value)}"])


@server.tool(annotations=QUIET)
def split(name: str) -> str:
    """The secret in two halves (not caught: the halves are not the value)."""
    value = _value(name)
    return f"{value[:len(value) // 2]} | {value[len(value) // 2:]}"


@server.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=False))
def write(names: list[str], path: str) -> str:
    """Write each secret, one a line, then their base64, to ``path`` (the workspace)."""
    values = [_value(n) for n in names]
    lines = [*values, *(base64.b64encode(v.encode()).decode() for v in values)]
    Path(path).write_text("\n".join(lines) + "\n")
    return f"wrote {len(lines)} lines to {path}"


if __name__ == "__main__":
    server.run("stdio")
