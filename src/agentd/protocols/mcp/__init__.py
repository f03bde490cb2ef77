"""The MCP server door: each agent a tool of an MCP server at ``/mcp`` (streamable HTTP,
the official ``mcp`` SDK's server), its sessions readable as resources. See
:mod:`.server` and docs/protocols/mcp.md.

``POST /mcp`` is served past FastAPI's routing (``add_fast_route``) by the door's front
(:mod:`._front`): a ``tools/call`` at a protocol version it knows (2025-11-25,
2026-07-28) runs through the SDK's ``serve_one`` and is framed as the SDK's transport
frames it, without the transport, dispatcher and task groups the SDK builds per
stateless request; every other request goes to the SDK as it came.

The SDK is imported on the door's first request (:class:`LazyMCPDoor`, through
:class:`agentd.protocols._lazy.Lazy`), not with the daemon: the route is mounted at
start-up, the server and its front are built when a request first reaches it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentd.doors.http import (
    add_error_shape,
    add_fast_route,
    is_json_body,
    json_response,
    loads_strict,
    read_body,
    replay,
)
from agentd.errors import AgentdError
from agentd.protocols._lazy import Lazy
from agentd.protocols.mcp._uris import session_uri
from agentd.security.resource import METADATA_PREFIX, metadata_path

if TYPE_CHECKING:
    from agentd.assembly import Runtime
    from agentd.protocols.mcp._front import MCPFront
    from agentd.protocols.mcp.server import MCPDoor

__all__ = ["LazyMCPDoor", "MCPDoor", "install", "install_resource", "session_uri"]

log = logging.getLogger(__name__)

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


def __getattr__(name: str) -> Any:
    if name != "MCPDoor":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from agentd.protocols.mcp.server import MCPDoor

    return MCPDoor


_Loaded = tuple["type[MCPDoor]", "type[MCPFront] | None"]
_Built = tuple["MCPDoor", "MCPFront | None"]


def _load() -> _Loaded:
    from agentd.protocols.mcp.server import MCPDoor

    try:
        # The front imports some of the SDK's private names (its transport's
        # framing): an SDK release without them costs the fast path, not the door
        # (tests/protocols/test_mcp_front.py fails then, saying so).
        from agentd.protocols.mcp._front import MCPFront
    except ImportError as exc:  # pragma: no cover - only with another SDK release
        log.warning("MCP door: no fast path for tools/call with this mcp SDK (%s); "
                    "every request goes through the SDK", exc)
        return MCPDoor, None
    return MCPDoor, MCPFront


class LazyMCPDoor:
    """The door at ``/mcp`` as the app mounts it: the SDK's server
    (:class:`~agentd.protocols.mcp.server.MCPDoor`) and the front of ``POST /mcp``
    (:class:`~agentd.protocols.mcp._front.MCPFront`) are built by the first request.
    """

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime
        self._lazy: Lazy[_Loaded, _Built] = Lazy(_load, self._build)

    def _build(self, loaded: _Loaded) -> _Built:
        door_type, front_type = loaded
        door = door_type(self._runtime)
        return door, None if front_type is None else front_type(door)

    async def load(self) -> _Built:
        """The SDK-backed server and its front (None with an SDK it cannot serve),
        built now unless they were."""
        return await self._lazy.get()

    async def close(self) -> None:
        """Stop the SDK's task group if a request started it."""
        built = self._lazy.built
        if built is not None:
            await built[0].close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door, _ = await self.load()
        await door(scope, receive, send)

    async def fast(self, scope: Scope, receive: Receive, send: Send, match: Any) -> None:
        """``POST /mcp``: to the front (``tools/call`` served there, the rest to the SDK
        as they came; its ``enabled = False`` sends them all to the SDK)."""
        door, front = await self.load()
        if front is not None:
            await front(scope, receive, send, match)
            return
        raw = await read_body(receive)  # pragma: no cover - only with another SDK
        if raw is None:  # pragma: no cover
            return
        if raw and is_json_body(scope):  # pragma: no cover
            loads_strict(raw)  # strict as the request layer is for every JSON body
        await door(scope, replay(raw, receive), send)  # pragma: no cover


def install_resource(app: FastAPI, runtime: Callable[[], Runtime], resource: str
                     ) -> list[str]:
    """Serve the door's metadata as an OAuth 2.0 protected resource (RFC 9728: at the
    well-known path of ``resource``, and at the bare well-known path where clients
    look first for a resource at a host's root); the paths, which need no token."""
    paths = sorted({metadata_path(resource), METADATA_PREFIX})

    async def metadata(request: Request) -> Response:
        found = runtime().mcp_resource
        if found is None:  # pragma: no cover - installed only with [mcp.oauth]
            return json_response({"error": {"code": "not_found", "message": "no "
                                             "protected resource here"}}, 404)
        response = json_response(found.metadata())
        response.headers["Cache-Control"] = "public, max-age=300"
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    for path in paths:
        app.router.routes.append(Route(path, endpoint=metadata, methods=["GET"],
                                       include_in_schema=False))
    return paths


def install(app: FastAPI, runtime: Callable[[], Runtime]) -> LazyMCPDoor:
    """Serve the door at ``/mcp`` (``runtime()`` gives the app's runtime) and return
    it: the app's lifespan closes it (its task group, if a request started one)."""
    sdk_log = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _StatelessNoise) for f in sdk_log.filters):
        sdk_log.addFilter(_StatelessNoise())
    door = app.state.mcp = LazyMCPDoor(runtime)
    app.router.routes.append(Route(PATH, endpoint=door, methods=["GET", "POST", "DELETE"],
                                   include_in_schema=False))
    add_fast_route(app, "POST", rf"^{PATH}$", door.fast)
    add_error_shape(app, PATH, jsonrpc_error)
    return door
