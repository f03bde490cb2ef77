"""/v1/agents: create, read, update, delete, pause, resume, stop."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.server._http import model_response
from agentd.server.routes._deps import ERRORS, is_admin, person, runtime_of
from agentd.server.schemas import AgentCreate, AgentList, AgentOut, AgentPatch

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents", tags=["agents"])


@router.post("", status_code=201, response_model=AgentOut, responses=ERRORS(409, 422))
async def create_agent(body: AgentCreate, request: Request) -> Response:
    """Create an agent. The model string and tools are checked now, not on first use."""
    admin = person(request, "creating an agent")
    agent = await runtime_of(request).create_agent(
        name=body.name, model=body.model, instructions=body.instructions,
        tools=body.tools, settings=body.settings, admin=is_admin(request, admin))
    return model_response(AgentOut, agent.to_api(), 201)


@router.get("", response_model=AgentList)
async def list_agents(request: Request) -> Response:
    agents = await runtime_of(request).list_agents()
    return model_response(AgentList, {"agents": [a.to_api() for a in agents]})


@router.get("/{name}", response_model=AgentOut, responses=ERRORS(404))
async def get_agent(name: str, request: Request) -> Response:
    return model_response(AgentOut, (await runtime_of(request).get_agent(name)).to_api())


@router.patch("/{name}", response_model=AgentOut, responses=ERRORS(404, 422))
async def update_agent(name: str, body: AgentPatch, request: Request) -> Response:
    fields = body.model_dump(exclude_none=True)
    runtime = runtime_of(request)
    if not fields:
        return model_response(AgentOut, (await runtime.get_agent(name)).to_api())
    admin = person(request, "changing an agent")
    agent = await runtime.update_agent(name, fields, admin=is_admin(request, admin))
    return model_response(AgentOut, agent.to_api())


@router.delete("/{name}", status_code=204, responses=ERRORS(404))
async def delete_agent(name: str, request: Request) -> Response:
    """Delete an agent with its sessions, events and runs (active runs are cancelled)."""
    person(request, "deleting an agent")
    await runtime_of(request).delete_agent(name)
    return Response(status_code=204)


@router.post("/{name}/pause", response_model=AgentOut, responses=ERRORS(404, 409))
async def pause_agent(name: str, request: Request) -> Response:
    """Refuse new messages; queued runs wait until resume, the active run finishes."""
    return model_response(AgentOut, (await runtime_of(request).set_state(name, "pause")).to_api())


@router.post("/{name}/resume", response_model=AgentOut, responses=ERRORS(404))
async def resume_agent(name: str, request: Request) -> Response:
    """Accept messages again and start runs held while paused."""
    return model_response(AgentOut, (await runtime_of(request).set_state(name, "resume")).to_api())


@router.post("/{name}/stop", response_model=AgentOut, responses=ERRORS(404))
async def stop_agent(name: str, request: Request) -> Response:
    """Refuse new messages and cancel the agent's queued and active runs."""
    return model_response(AgentOut, (await runtime_of(request).set_state(name, "stop")).to_api())
