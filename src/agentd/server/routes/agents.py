"""/v1/agents: create, read, update, delete, pause, resume, stop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from agentd.assembly import Runtime
from agentd.doors.access import (
    access_of,
    new_agent_settings,
    require_new_agent,
    require_right,
    visible_agents,
)
from agentd.doors.http import model_response
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import AgentCreate, AgentList, AgentOut, AgentPatch
from agentd.store.agents_query import AGENT_STATES, MAX_AGENT_PAGE
from agentd.store.records import AgentRecord

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents", tags=["agents"])


def _out(runtime: Runtime, agent: AgentRecord) -> dict[str, Any]:
    """An agent as the API shows it, with what its stored settings get wrong."""
    return {**agent.to_api(), "settings_errors": runtime.settings_errors(agent)}


@router.post("", status_code=201, response_model=AgentOut,
             responses=ERRORS(403, 409, 422))
async def create_agent(body: AgentCreate, request: Request) -> Response:
    """Create an agent. The model string and tools are checked now, not on first use.
    A scoped token (``access``) creates only agents inside its scope (403 otherwise)."""
    who = require_right(request, "use", "creating an agent")
    settings = new_agent_settings(request, body.settings)
    require_new_agent(request, body.name, settings)
    runtime = runtime_of(request)
    agent = await runtime.create_agent(
        name=body.name, model=body.model, instructions=body.instructions,
        tools=body.tools, settings=settings, actor=who)
    return model_response(AgentOut, _out(runtime, agent), 201)


@router.get("", response_model=AgentList, responses=ERRORS(422))
async def list_agents(
    request: Request,
    limit: int | None = Query(default=None, ge=1, le=MAX_AGENT_PAGE,
                              description="At most this many agents (a page)."),
    after: str | None = Query(default=None, max_length=256,
                              description="Only agents whose names sort after this one: "
                                          "next_after of the page before."),
    q: str | None = Query(default=None, max_length=64,
                          description="Only agents whose names contain this (any case)."),
    state: str | None = Query(
        default=None, max_length=200,
        description=f"Only agents in these states, comma-separated: "
                    f"{', '.join(AGENT_STATES)}."),
) -> Response:
    """Agents by name. Without parameters: every agent. With any of ``limit``,
    ``after``, ``q``, ``state``: the matching agents, each with ``awake``, and
    ``next_after`` (the name to give as ``after`` for the next page; null on the last)."""
    runtime = runtime_of(request)
    visible = await visible_agents(request)  # None: every agent (an unscoped token)
    if limit is None and after is None and q is None and state is None:
        agents = await runtime.list_agents() if visible is None else visible
        return model_response(AgentList, {"agents": [_out(runtime, a) for a in agents]})
    states = [s.strip() for s in state.split(",") if s.strip()] if state else []
    page = await runtime.agent_page(limit=limit, after=after, q=q, states=states,
                                    names=None if visible is None else
                                    [a.name for a in visible])
    return model_response(AgentList, {
        "agents": [{**_out(runtime, a), "awake": runtime.is_awake(a.name)}
                   for a in page.agents],
        "next_after": page.next_after})


@router.get("/{name}", response_model=AgentOut, responses=ERRORS(404))
async def get_agent(name: str, request: Request) -> Response:
    runtime = runtime_of(request)
    return model_response(AgentOut, _out(runtime, await runtime.get_agent(name)))


@router.patch("/{name}", response_model=AgentOut, responses=ERRORS(403, 404, 422))
async def update_agent(name: str, body: AgentPatch, request: Request) -> Response:
    fields = body.model_dump(exclude_none=True)
    runtime = runtime_of(request)
    if not fields:
        return model_response(AgentOut, _out(runtime, await runtime.get_agent(name)))
    who = require_right(request, "use", "changing an agent")
    if "settings" in fields and not access_of(request.scope).everything:
        require_new_agent(request, name, fields["settings"], await runtime.stored_agent(name))
    agent = await runtime.update_agent(name, fields, actor=who)
    return model_response(AgentOut, _out(runtime, agent))


@router.delete("/{name}", status_code=204, responses=ERRORS(404))
async def delete_agent(name: str, request: Request) -> Response:
    """Delete an agent with its sessions, events and runs (active runs are cancelled)."""
    who = require_right(request, "use", "deleting an agent")
    await runtime_of(request).delete_agent(name, actor=who)
    return Response(status_code=204)


@router.post("/{name}/pause", response_model=AgentOut, responses=ERRORS(404, 409))
async def pause_agent(name: str, request: Request) -> Response:
    """Refuse new messages; queued runs wait until resume, the active run finishes."""
    runtime = runtime_of(request)
    return model_response(AgentOut, _out(runtime, await runtime.set_state(name, "pause")))


@router.post("/{name}/resume", response_model=AgentOut, responses=ERRORS(404))
async def resume_agent(name: str, request: Request) -> Response:
    """Accept messages again and start runs held while paused."""
    runtime = runtime_of(request)
    return model_response(AgentOut, _out(runtime, await runtime.set_state(name, "resume")))


@router.post("/{name}/stop", response_model=AgentOut, responses=ERRORS(404))
async def stop_agent(name: str, request: Request) -> Response:
    """Refuse new messages and cancel the agent's queued and active runs."""
    runtime = runtime_of(request)
    return model_response(AgentOut, _out(runtime, await runtime.set_state(name, "stop")))
