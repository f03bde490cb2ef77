"""The FastAPI application: routes, auth, errors, and the runtime's lifespan."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agentd import __version__
from agentd.config import Settings
from agentd.runtime import Runtime
from agentd.security.tokens import BOOTSTRAP, ensure_token
from agentd.server import routes
from agentd.server._http import (
    BearerAuth,
    BodyLimit,
    TokenCheck,
    content_length,
    install_error_handlers,
    json_response,
)
from agentd.server.routes._deps import runtime_of
from agentd.server.schemas import Health

__all__ = ["create_app"]


_MESSAGE_PATH = re.compile(r"^/v1/agents/([^/]+)/sessions/(.+)/messages$")


class AgentdApp(FastAPI):
    """FastAPI, with the message route (the hot path) served before the middleware
    stack when the request carries a Content-Length within the limit; everything
    else, chunked message bodies included, takes the ordinary way."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _MESSAGE_PATH.match(scope["path"])
            length = content_length(scope)
            if match is not None and length is not None and (
                    0 <= length <= self.state.max_body_bytes):
                await routes.sessions.serve_message(self, scope, receive, send,
                                                    match.group(1), match.group(2))
                return
        await super().__call__(scope, receive, send)

def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. The runtime opens in the lifespan unless one is passed in."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = await Runtime.open(settings) if runtime is None else runtime
        app.state.runtime = rt
        try:
            yield
        finally:
            if owned:
                await rt.close()

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI's native OpenTelemetry hooks cost ~15% of a turn even with no
        # exporter; they are on only when asked for (AGENTD_TELEMETRY=true).
        on = settings.telemetry
        extra["telemetry"] = {"tracing": on, "metrics": on, "logs": on,
                              "operation_spans": on}
    app = AgentdApp(
        **extra,
        title="agentd",
        version=__version__,
        description="An operating system for AI agents: durable agents and sessions "
                    "behind one streaming HTTP API.",
        lifespan=lifespan,
        # Parse a JSON body that comes with no Content-Type at all.
        strict_content_type=False,
    )
    if runtime is not None:
        # Usable without the lifespan too (ASGITransport, lifespan="off").
        app.state.runtime = runtime
    install_error_handlers(app)
    tokens = settings.named_tokens()
    if not tokens:
        tokens[BOOTSTRAP] = ensure_token(settings.home)
    check = TokenCheck(tokens, settings.public_paths, required=settings.auth_enabled)
    app.state.token_check = check
    app.state.admin_tokens = (None if settings.admin_tokens is None
                              else frozenset(settings.admin_tokens))
    app.state.max_body_bytes = settings.max_body_bytes
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(BearerAuth, check=check)

    @app.get("/health", response_model=Health, tags=["status"])
    async def health(request: Request) -> Response:
        """Liveness and what the daemon runs on. Public by default."""
        return json_response(await runtime_of(request).health())

    # The message route is the hot path: its router goes first (routes match in order).
    app.include_router(routes.sessions.router)
    app.include_router(routes.agents.router)
    app.include_router(routes.run_list.router)
    app.include_router(routes.runs.router)
    app.include_router(routes.checkpoints.router)
    app.include_router(routes.usage.router)
    app.include_router(routes.kernel.router)
    app.include_router(routes.approvals.router)
    app.include_router(routes.tools.router)
    app.include_router(routes.feed.router)
    app.include_router(routes.events.router)
    return app
