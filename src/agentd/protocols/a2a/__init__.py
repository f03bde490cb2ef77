"""The A2A door: each agent an A2A server (spec 1.0, and 0.3 on the same endpoint),
with the official ``a2a-sdk``'s types and JSON-RPC dispatcher.

=========================================  ==========================================
``GET  /a2a/{agent}/.well-known/agent-card.json``  the agent's card (needs the token)
``GET  /.well-known/agent-card.json``      the card of ``[a2a] public_card``, if one is
                                           named: public (and so is that agent's own
                                           card), as A2A discovery expects
``POST /a2a/{agent}``                      JSON-RPC: SendMessage, SendStreamingMessage,
                                           GetTask, ListTasks, CancelTask,
                                           SubscribeToTask (and 0.3's message/send,
                                           message/stream, tasks/get, tasks/cancel,
                                           tasks/resubscribe)
=========================================  ==========================================

A task is a run and a context is a session (:mod:`._handler`); the daemon's auth layer
checks the bearer token before the SDK sees a request, and answers a refusal (401,
413, an unknown agent, or one outside the token's scope: the same) as a JSON-RPC
error. The endpoint is served past FastAPI's routing (``add_fast_route``), and a turn
(1.0's SendMessage, SendStreamingMessage) past the SDK's dispatcher, by the door's
front (:mod:`._rpc`): each cost a turn more CPU than the rest of the door. The SDK is
imported on the door's first request (:mod:`._door`, built through
:class:`agentd.protocols._lazy.Lazy`), not with the daemon. See docs/protocols/a2a.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentd.assembly import Runtime
from agentd.doors.access import require_agent
from agentd.doors.http import add_error_shape, add_fast_route, json_response
from agentd.errors import AgentdError, NotFound
from agentd.protocols._lazy import Lazy

if TYPE_CHECKING:
    from types import ModuleType

    from agentd.protocols.a2a._door import A2ADoor, agent_card
    from agentd.protocols.a2a._handler import A2AHandler

__all__ = ["PREFIX", "A2AHandler", "agent_card", "install"]

PREFIX = "/a2a"
#: The SDK's ``AGENT_CARD_WELL_KNOWN_PATH``, written out so that mounting the route
#: does not import the SDK (tests/server/test_startup.py checks they agree).
CARD_PATH = "/.well-known/agent-card.json"
_PARSE_ERROR, _INVALID_REQUEST, _INTERNAL = -32700, -32600, -32603
#: The SDK's ``constants.VERSION_HEADER`` (as :data:`CARD_PATH`): a client naming a
#: 0.x version gets the card the SDK prints for both versions at once.
VERSION_HEADER = "A2A-Version"
_NOT_FOUND = -32001  # A2A's TaskNotFoundError: the closest code for "no such agent"
#: Names this package exports from its SDK-backed modules, imported when first read.
_LAZY_NAMES = {"A2AHandler": "agentd.protocols.a2a._handler",
               "agent_card": "agentd.protocols.a2a._door"}


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def jsonrpc_error(error: AgentdError, headers: dict[str, str] | None = None) -> Response:
    """An error of the request layer (401, 413, malformed JSON, an unknown agent) as a
    JSON-RPC error response, with the HTTP status it has on the native API."""
    code = (_PARSE_ERROR if error.status == 422 else
            _NOT_FOUND if error.status == 404 else
            _INTERNAL if error.status >= 500 else _INVALID_REQUEST)
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": None, "error": {
        "code": code, "message": error.message, "data": {"code": error.code}}}
    response = json_response(body, 400 if error.status == 422 else error.status)
    if headers:
        response.headers.update(headers)
    return response


def _load() -> ModuleType:
    from agentd.protocols.a2a import _door

    return _door


def install(app: FastAPI, runtime: Any, *, public_card: str | None = None) -> None:
    """Serve the door on ``app``; ``runtime()`` gives the app's runtime (opened in its
    lifespan, after this is called). The routes are mounted now; the SDK-backed door
    behind them is built on the first request that reaches it. ``public_card`` names
    the agent whose card the host's own ``/.well-known/agent-card.json`` serves, and
    whose own card path needs no token either (the app makes both paths public); None:
    the host's path is not found."""
    door: Lazy[ModuleType, A2ADoor] = Lazy(_load, lambda module: module.build(runtime))
    app.state.a2a = door

    async def endpoint(request: Request) -> Response:
        rt: Runtime = runtime()
        # An unknown agent (or one outside the token's scope): 404 in JSON-RPC's
        # shape, before the SDK reads anything (or is even imported).
        await require_agent(request, request.path_params["agent"])
        await rt.find_agent(request.path_params["agent"])
        return await (await door.get()).front(request)

    async def serve(scope: Scope, receive: Receive, send: Send, match: Any) -> None:
        scope["path_params"] = {"agent": match.group(1)}
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async def card_of(request: Request, name: str) -> Response:
        agent = await runtime().stored_agent(name)  # (unknown or deleted: 404)
        built = await door.get()
        return json_response(built.card(agent.name, str(request.base_url),
                                        request.headers.get(VERSION_HEADER)))

    async def card(request: Request) -> Response:
        name = request.path_params["agent"]
        if name != public_card:
            await require_agent(request, name)
        return await card_of(request, name)

    async def host_card(request: Request) -> Response:
        if public_card is None:
            raise NotFound("no agent card here: this daemon serves one card per agent "
                           f"at {PREFIX}/<agent>{CARD_PATH} ([a2a] public_card names "
                           "an agent to serve here)", code="agent_card_not_found")
        # Public by the operator's choice: no token, so no scope to check.
        return await card_of(request, public_card)

    app.router.routes.append(Route(f"{PREFIX}/{{agent}}{CARD_PATH}", endpoint=card,
                                   methods=["GET"], include_in_schema=False))
    app.router.routes.append(Route(CARD_PATH, endpoint=host_card, methods=["GET"],
                                   include_in_schema=False))
    app.router.routes.append(Route(f"{PREFIX}/{{agent}}", endpoint=endpoint,
                                   methods=["POST"], include_in_schema=False))
    add_fast_route(app, "POST", rf"^{PREFIX}/([^/]+)$", serve)
    add_error_shape(app, PREFIX, jsonrpc_error)
