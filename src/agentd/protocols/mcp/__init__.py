"""The MCP server door: each agent a tool of an MCP server at ``/mcp`` (streamable HTTP,
the official ``mcp`` SDK's server), its sessions readable as resources. See
:mod:`.server` and docs/protocols/mcp.md.

``POST /mcp`` is served past FastAPI's routing (``add_fast_route``) by the door's front
(:mod:`._front`): a ``tools/call`` at a protocol version it knows (2025-11-25,
2026-07-28) runs through the SDK's ``serve_one`` and is framed as the SDK's transport
frames it, without the transport, dispatcher and task groups the SDK builds per
stateless request; every other request goes to the SDK as it came."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.routing import Route

from agentd.errors import AgentdError
from agentd.protocols.mcp.server import MCPDoor, session_uri
from agentd.server._http import add_error_shape, add_fast_route, json_response

try:
    # The front imports some of the SDK's private names (its transport's framing):
    # an SDK release without them costs the fast path, not the door
    # (tests/protocols/test_mcp_front.py fails then, saying so).
    from agentd.protocols.mcp._front import MCPFront
except ImportError as exc:  # pragma: no cover - only with another SDK release
    MCPFront = None  # type: ignore[assignment,misc]
    _FRONT_MISSING = str(exc)

__all__ = ["MCPDoor", "install", "session_uri"]

PATH = "/mcp"
#: JSON-RPC's codes for what the request layer refuses before the SDK sees a request.
_PARSE_ERROR, _INVALID_REQUEST, _INTERNAL = -32700, -32600, -32603


def jsonrpc_error(error: AgentdError, headers: dict[str, str] | None = None) -> Response:
    """An error of the request layer (401, 413, malformed JSON) as a JSON-RPC error
    response, with the HTTP status the streamable HTTP transport gives it."""
    code = (_PARSE_ERROR if error.status == 422 else
            _INTERNAL if error.status >= 500 else _INVALID_REQUEST)
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": None, "error": {
        "code": code, "message": error.message, "data": {"code": error.code}}}
    response = json_response(body, 400 if error.status == 422 else error.status)
    if headers:
        response.headers.update(headers)
    return response


class _StatelessNoise(logging.Filter):
    """The SDK logs ``Terminating session: None`` at INFO when each stateless request
    ends: a line in the daemon's log for every MCP call, saying nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Terminating session: None"


def install(app: FastAPI, door: MCPDoor) -> None:
    """Serve ``door`` at ``/mcp`` (its task group runs in the app's lifespan)."""
    sdk_log = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _StatelessNoise) for f in sdk_log.filters):
        sdk_log.addFilter(_StatelessNoise())
    app.router.routes.append(Route(PATH, endpoint=door, methods=["GET", "POST", "DELETE"],
                                   include_in_schema=False))
    # POSTs go to the front (``tools/call`` served there, the rest to the SDK as they
    # came); app.state.mcp_front.enabled = False sends them all to the SDK.
    if MCPFront is None:
        logging.getLogger(__name__).warning(
            "MCP door: no fast path for tools/call with this mcp SDK (%s); every "
            "request goes through the SDK", _FRONT_MISSING)
    else:
        front = app.state.mcp_front = MCPFront(door)
        add_fast_route(app, "POST", rf"^{PATH}$", front)
    add_error_shape(app, PATH, jsonrpc_error)
