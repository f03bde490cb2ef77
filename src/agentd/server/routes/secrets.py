"""/v1/secrets: named secrets, written and deleted, listed by name; never read back.

A secret belongs to a tenant (its agents share it) or to one agent (``agent``: the
agent's own tenant). Who may touch which:

- an agent's secret: a token that may use the agent (any other agent is answered
  as one that does not exist, 404);
- a tenant's secret: a token whose scope is every agent, or the whole of that tenant
  (tenant patterns matching it and no agent patterns; a token bound to a tenant: that
  tenant only); 403 otherwise.

Setting and deleting need a member; listing, a viewer. Values are in no answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from agentd.doors.access import (
    refused,
    require_agent,
    require_right,
    visible_agents,
    whole_tenant,
)
from agentd.doors.http import model_response
from agentd.errors import Forbidden, InvalidInput
from agentd.secrets import MAX_VALUE, NAME_PATTERN
from agentd.security.identity import Principal
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.tenancy import DEFAULT_TENANT, tenant_of

__all__ = ["router"]

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])

SecretName = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_PATTERN,
                                 description="The secret's name.")]
_TENANT = Field(default=None, min_length=1, max_length=64,
                description="Its tenant (default: the token's, else `default`).")
_AGENT = Field(default=None, min_length=1, max_length=256,
               description="The one agent it is for (its tenant is the agent's).")


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64,
                      description="How settings name it: `secret:NAME` (a letter or `_` "
                                  "first, then letters, digits, `_.-`).")
    value: str = Field(min_length=1, max_length=MAX_VALUE, repr=False,
                       description="The value (8 characters at least); never shown again.")
    tenant: str | None = _TENANT
    agent: str | None = _AGENT


class SecretOut(BaseModel):
    name: str
    tenant: str
    agent: str | None
    created_at: str
    updated_at: str


class SecretList(BaseModel):
    secrets: list[SecretOut]


async def _scope(request: Request, principal: Principal, tenant: str | None,
                 agent: str | None, *, field: str) -> tuple[str, str | None]:
    """The (tenant, agent) a request names, checked against its token's scope."""
    if agent is not None:
        await require_agent(request, agent)
        record = await runtime_of(request).stored_agent(agent)
        own = tenant_of(record.settings)
        if own is None:
            raise InvalidInput(f"agent {agent!r} has no valid tenant",
                               field=f"{field}.agent")
        if tenant is not None and tenant != own:
            raise InvalidInput(f"agent {agent!r} is in tenant {own!r}, not {tenant!r}",
                               field=f"{field}.tenant")
        return own, agent
    tenant = tenant or principal.tenant or DEFAULT_TENANT
    if not whole_tenant(principal, tenant):
        error = Forbidden(f"token {principal.label!r} may not use the secrets of tenant "
                          f"{tenant!r}: that needs a scope of the whole tenant (its scope "
                          f"is {principal.access.describe})", details={
                              "field": f"{field}.tenant"})
        refused(request, error)
        raise error
    return tenant, None


@router.post("", status_code=201, response_model=SecretOut,
             responses={200: {"model": SecretOut, "description": "An existing secret "
                                                                  "replaced."},
                        **ERRORS(401, 403, 404, 422)})
async def set_secret(body: SecretIn, request: Request) -> Response:
    """Set a secret (201 new, 200 replaced). The value is sealed at rest and never
    answered, listed or logged; settings use it as `secret:NAME`."""
    principal = require_right(request, "use", "setting a secret")
    tenant, agent = await _scope(request, principal, body.tenant, body.agent, field="body")
    info, fresh = await runtime_of(request).secrets.set(
        name=body.name, value=body.value, tenant=tenant, agent=agent,
        actor=principal.name, role=principal.role)
    return model_response(SecretOut, info.to_api(), 201 if fresh else 200)


@router.get("", response_model=SecretList, responses=ERRORS(401, 403, 404, 422))
async def list_secrets(
    request: Request,
    tenant: Annotated[str | None, Query(min_length=1, max_length=64,
                                        description="Only this tenant's.")] = None,
    agent: Annotated[str | None, Query(min_length=1, max_length=256,
                                       description="Only this agent's own.")] = None,
) -> Response:
    """The secrets the token may see: names, scopes and times, never values."""
    principal = require_right(request, "read", "listing secrets")
    if agent is not None:
        await require_agent(request, agent)
    found = await runtime_of(request).secrets.listing(
        tenants=None if tenant is None else [tenant])
    if not principal.access.everything:
        visible = {a.name: tenant_of(a.settings)
                   for a in await visible_agents(request) or []}
        found = [s for s in found if (visible.get(s.agent) == s.tenant if s.agent
                                      else whole_tenant(principal, s.tenant))]
    if agent is not None:
        found = [s for s in found if s.agent == agent]
    return model_response(SecretList, {"secrets": [s.to_api() for s in found]})


@router.delete("/{name}", status_code=204, responses=ERRORS(401, 403, 404, 422))
async def delete_secret(
    name: SecretName, request: Request,
    tenant: Annotated[str | None, Query(min_length=1, max_length=64,
                                        description="Its tenant (default: the "
                                                    "token's, else `default`).")] = None,
    agent: Annotated[str | None, Query(min_length=1, max_length=256,
                                       description="The agent it is for.")] = None,
) -> Response:
    """Delete a secret (404 `secret_not_found` when the scope holds none of that name).
    Settings naming it then fail where they use it."""
    principal = require_right(request, "use", "deleting a secret")
    tenant, agent = await _scope(request, principal, tenant, agent, field="query")
    await runtime_of(request).secrets.delete(name=name, tenant=tenant, agent=agent,
                                             actor=principal.name, role=principal.role)
    return Response(status_code=204)
