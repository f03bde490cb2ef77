"""OAuth for agents' MCP servers: a person's login, its callback, the status, logout
(``agentd.secrets.oauth``; docs/security.md, "OAuth for MCP servers").

=====================================================  =================================
``POST   /v1/agents/{name}/mcp/{server}/login``        start a login: the link to open
``DELETE /v1/agents/{name}/mcp/{server}/login``        forget the tokens (revoked first)
``GET    /v1/agents/{name}/mcp``                       which servers are authorized
``GET    /v1/mcp/oauth/callback``                      where the authorization server
                                                       sends the person back (public:
                                                       the ``state`` is the credential)
=====================================================  =================================

Starting a login and logging out need a person's token that may use the agent (a
viewer may not), and for tokens shared by the tenant (``oauth.tokens = "tenant"``) a
scope of the whole tenant, as the tenant's secrets do. The callback finishes only the
login its ``state`` names, once, before it expires, and only if the token that
started it still exists and may still use the agent: the tokens go to that agent (or
its tenant), whatever else the request says.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import HTMLResponse, Response

from agentd.doors.access import refused, require_agent, require_right, whole_tenant
from agentd.doors.http import actor, model_response
from agentd.errors import AgentdError, Conflict, Forbidden, NotFound
from agentd.secrets.oauth import CALLBACK_PATH, Flow
from agentd.security.identity import Principal
from agentd.server.routes._deps import ERRORS, runtime_of

__all__ = ["CALLBACK", "callback_router", "router"]

#: The callback's path (public: the app lists it so).
CALLBACK = CALLBACK_PATH

router = APIRouter(prefix="/v1/agents/{name}/mcp", tags=["mcp"])
callback_router = APIRouter(tags=["mcp"])

ServerName = Annotated[str, Path(min_length=1, max_length=32,
                                 pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
                                 description="The MCP server's name in the agent's settings.")]


class LoginIn(BaseModel):
    """Nothing to give: where the person comes back is the daemon's own callback
    (``public_url``), never a URL a request names."""

    model_config = ConfigDict(extra="forbid")


class LoginOut(BaseModel):
    agent: str
    server: str
    authorization_url: str
    issuer: str
    scope: str | None
    tokens: str
    redirect_uri: str
    expires_at: str


class ServerAuth(BaseModel):
    server: str
    url: str
    tokens: str
    authorized: bool
    login_pending: bool
    issuer: str | None
    scope: str | None
    expires_at: str | None
    refreshable: bool
    authorized_at: str | None


class ServersAuth(BaseModel):
    servers: list[ServerAuth]


class Authorized(BaseModel):
    agent: str
    server: str
    scope: str | None
    tokens: str
    expires_at: str | None


def _principal_data(principal: Principal) -> dict[str, Any]:
    return {"name": principal.name, "role": principal.role, "source": principal.source,
            "tenant": principal.tenant}


def _shared_tokens(request: Request, principal: Principal, tenant: str, shared: bool,
                   what: str) -> None:
    if shared and not whole_tenant(principal, tenant):
        error = Forbidden(f"token {principal.label!r} may not {what} the MCP tokens tenant "
                          f"{tenant!r} shares: that needs a scope of the whole tenant (its "
                          f"scope is {principal.access.describe})")
        refused(request, error)
        raise error


@router.post("/{server}/login", status_code=201, response_model=LoginOut,
             responses=ERRORS(401, 403, 404, 422, 502))
async def start_login(name: str, server: ServerName, request: Request,
                      body: LoginIn | None = None) -> Response:
    """Start the authorization of an agent's MCP server (OAuth 2.1, the
    authorization-code flow with PKCE): the link a person opens to sign in and consent.
    The server comes back to the daemon's callback; the tokens are then kept, sealed,
    in the secrets store (never answered)."""
    principal = require_right(request, "use", "authorizing an MCP server")
    actor(request.scope, "authorizing an MCP server")
    await require_agent(request, name)
    runtime = runtime_of(request)
    record = await runtime.stored_agent(name)
    tenant, entry = runtime.mcp_oauth.server(record, server)
    _shared_tokens(request, principal, tenant,
                   entry.oauth is not None and entry.oauth.tokens == "tenant", "replace")
    started = await runtime.mcp_oauth.start(tenant=tenant, agent=name, server=entry,
                                            principal=_principal_data(principal))
    return model_response(LoginOut, started, 201)


@router.get("", response_model=ServersAuth, responses=ERRORS(401, 404, 422))
async def servers_auth(name: str, request: Request) -> Response:
    """The agent's MCP servers that take OAuth tokens: whether each is authorized, the
    scope and expiry of its tokens (never a token), whether a login is under way."""
    require_right(request, "read", "reading MCP servers' authorization")
    await require_agent(request, name)
    runtime = runtime_of(request)
    record = await runtime.stored_agent(name)
    tenant, entries = runtime.mcp_oauth.servers(record)
    found = await runtime.mcp_oauth.status(tenant=tenant, agent=name, servers=entries)
    return model_response(ServersAuth, {"servers": found})


@router.delete("/{server}/login", status_code=204, responses=ERRORS(401, 403, 404, 422))
async def logout(name: str, server: ServerName, request: Request) -> Response:
    """Forget the server's tokens (revoked at its authorization server first, where it
    can) and any login under way; 404 ``mcp_not_authorized`` when there were none."""
    principal = require_right(request, "use", "logging an MCP server out")
    await require_agent(request, name)
    runtime = runtime_of(request)
    record = await runtime.stored_agent(name)
    tenant, entry = runtime.mcp_oauth.server(record, server)
    if entry.oauth is None:
        raise NotFound(f"MCP server {server!r} of agent {name!r} takes no OAuth tokens",
                       code="mcp_not_authorized")
    _shared_tokens(request, principal, tenant, entry.oauth.tokens == "tenant", "remove")
    gone = await runtime.mcp_oauth.logout(tenant=tenant, agent=name, server=entry,
                                          actor=principal.name, role=principal.role)
    if not gone:
        raise NotFound(f"MCP server {server!r} of agent {name!r} holds no tokens",
                       code="mcp_not_authorized")
    return Response(status_code=204)


async def _recheck(request: Request, flow: Flow) -> Any:
    """The agent's server the flow is for, if the token that started the flow still
    exists and may still use it and the server is still the same; AgentdError else."""
    runtime = runtime_of(request)
    name = flow.principal.get("name")
    principal = runtime.identity.tokens.principal(str(name)) if name else None
    if principal is None or not principal.may("use"):
        raise Forbidden("the token that started this login no longer exists or may no "
                        "longer use agents: start again with a valid one")
    try:
        record = await runtime.stored_agent(flow.agent)
        tenant, entry = runtime.mcp_oauth.server(record, flow.server)
    except NotFound:
        raise Conflict(f"agent {flow.agent!r} or its MCP server {flow.server!r} is gone "
                       "since the login started: nothing was stored",
                       code="mcp_changed") from None
    if not principal.access.allows(flow.agent, tenant) or tenant != flow.tenant:
        raise Forbidden("the token that started this login may no longer use this agent")
    if entry.oauth is None or entry.url != flow.data.get("server_url") or (
            entry.oauth.tokens != flow.tokens):
        raise Conflict(f"MCP server {flow.server!r} of agent {flow.agent!r} changed since "
                       "the login started (its url or oauth block): start again",
                       code="mcp_changed")
    if entry.oauth.tokens == "tenant" and not whole_tenant(principal, tenant):
        raise Forbidden("the token that started this login may no longer replace the "
                        "tenant's shared MCP tokens")
    return entry


def _page(title: str, text: str, status: int) -> HTMLResponse:
    body = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>agentd: "
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(text)}</p></body></html>")
    return HTMLResponse(body, status_code=status, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'none'"})


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


_PAGE = {"text/html": {"schema": {"type": "string"}}}


@callback_router.get(CALLBACK_PATH, response_model=Authorized, responses={
    200: {"content": _PAGE, "description": "The tokens are stored: a page for the "
                                           "person (JSON with Accept: application/json)."},
    **{status: {"content": _PAGE, "description": "Nothing stored: a page saying why "
                                                 "(the error as JSON when asked for)."}
       for status in (400, 403, 409, 422, 502)}})
async def callback(
    request: Request,
    state: Annotated[str | None, Query(max_length=512)] = None,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    iss: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    error_description: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    """Where an MCP server's authorization server sends the person back: the code is
    exchanged and the tokens stored for the agent the login was started for. A page
    for the person (JSON when asked for)."""
    runtime = runtime_of(request)
    try:
        flow = await runtime.mcp_oauth.take(state or "")
        try:
            entry = await _recheck(request, flow)
        except AgentdError as exc:
            await runtime.mcp_oauth.refuse(flow, reason=exc.message)
            raise
        done = await runtime.mcp_oauth.complete(
            flow, entry, code=code, iss=iss, error=error,
            error_description=error_description)
    except AgentdError as exc:
        refused(request, exc)
        if _wants_json(request):
            raise
        return _page("authorization failed", exc.message, exc.status)
    if _wants_json(request):
        return model_response(Authorized, done)
    return _page("authorized", f"agentd may now use MCP server {done['server']!r} for "
                 f"agent {done['agent']!r} (scope: {done['scope'] or 'the default'}). "
                 "You may close this page.", 200)
