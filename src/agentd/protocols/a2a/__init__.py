"""The A2A door: each agent an A2A server (spec 1.0, and 0.3 on the same endpoint),
with the official ``a2a-sdk``'s types and JSON-RPC dispatcher.

=========================================  ==========================================
``GET  /a2a/{agent}/.well-known/agent-card.json``  the agent's card (needs the token)
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
front (:mod:`._rpc`): each cost a turn more CPU than the rest of the door. See
docs/protocols/a2a.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils import constants
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentd import __version__
from agentd.errors import AgentdError
from agentd.protocols.a2a._handler import A2AHandler
from agentd.protocols.a2a._rpc import JsonRpcFront
from agentd.runtime import Runtime
from agentd.server._http import add_error_shape, add_fast_route, json_response
from agentd.server.access import require_agent

__all__ = ["PREFIX", "A2AHandler", "agent_card", "install"]

PREFIX = "/a2a"
CARD_PATH = constants.AGENT_CARD_WELL_KNOWN_PATH  # /.well-known/agent-card.json
_PARSE_ERROR, _INVALID_REQUEST, _INTERNAL = -32700, -32600, -32603
_NOT_FOUND = -32001  # A2A's TaskNotFoundError: the closest code for "no such agent"


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


def agent_card(name: str, base_url: str) -> AgentCard:
    """The card of the agent ``name`` served under ``base_url`` (the daemon's URL as
    the request reached it). It names the agent and nothing of its instructions,
    tools or settings, and says the endpoint takes the daemon's bearer token."""
    url = f"{base_url.rstrip('/')}{PREFIX}/{quote(name, safe='')}"
    return AgentCard(
        name=name,
        description=f"The agentd agent {name!r}: send it a message, it answers.",
        version=__version__,
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC",
                           protocol_version=constants.PROTOCOL_VERSION_1_0),
            AgentInterface(url=url, protocol_binding="JSONRPC",
                           protocol_version=constants.PROTOCOL_VERSION_0_3)],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False,
                                       extended_agent_card=False),
        security_schemes={"bearer": SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer", description="a daemon token"))},
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="message", name="message",
                           description="Any request in words; the reply is text.",
                           tags=["agentd"])],
    )


class _ContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, plus the agent the path names and the request's scope
    (whose ``state.token`` names the token behind it)."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["agent"] = request.path_params["agent"]
        context.state["scope"] = request.scope
        return context


def install(app: FastAPI, runtime: Any) -> None:
    """Serve the door on ``app``; ``runtime()`` gives the app's runtime (opened in its
    lifespan, after this is called)."""
    handler = A2AHandler(runtime)
    builder = _ContextBuilder()
    front = JsonRpcFront(handler, JsonRpcDispatcher(
        request_handler=handler, context_builder=builder, enable_v0_3_compat=True),
        builder)

    async def endpoint(request: Request) -> Response:
        rt: Runtime = runtime()
        # An unknown agent (or one outside the token's scope): 404 in JSON-RPC's
        # shape, before the SDK reads anything.
        await require_agent(request, request.path_params["agent"])
        await rt.find_agent(request.path_params["agent"])
        return await front(request)

    async def serve(scope: Scope, receive: Receive, send: Send, match: Any) -> None:
        scope["path_params"] = {"agent": match.group(1)}
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async def card(request: Request) -> Response:
        rt: Runtime = runtime()
        await require_agent(request, request.path_params["agent"])
        agent = await rt.stored_agent(request.path_params["agent"])
        return json_response(agent_card_to_dict(agent_card(agent.name,
                                                           str(request.base_url))))

    app.router.routes.append(Route(f"{PREFIX}/{{agent}}{CARD_PATH}", endpoint=card,
                                   methods=["GET"], include_in_schema=False))
    app.router.routes.append(Route(f"{PREFIX}/{{agent}}", endpoint=endpoint,
                                   methods=["POST"], include_in_schema=False))
    add_fast_route(app, "POST", rf"^{PREFIX}/([^/]+)$", serve)
    add_error_shape(app, PREFIX, jsonrpc_error)
