"""The MCP server door: each agent a tool of an MCP server at ``/mcp`` (streamable HTTP,
the official ``mcp`` SDK's server), its sessions readable as resources. See
:mod:`.server` and docs/protocols/mcp.md."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.routing import Route

from agentd.errors import AgentdError
from agentd.protocols.mcp.server import MCPDoor, session_uri
from agentd.server._http import add_error_shape, json_response

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


def install(app: FastAPI, door: MCPDoor) -> None:
    """Serve ``door`` at ``/mcp`` (its task group runs in the app's lifespan)."""
    app.router.routes.append(Route(PATH, endpoint=door, methods=["GET", "POST", "DELETE"],
                                   include_in_schema=False))
    add_error_shape(app, PATH, jsonrpc_error)
