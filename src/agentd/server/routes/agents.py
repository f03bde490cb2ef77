"""/v1/agents: create, read, update, delete, pause, resume, stop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.runtime import Runtime
from agentd.server._http import model_response
from agentd.server.routes._deps import ERRORS, is_admin, person, runtime_of
from agentd.server.schemas import AgentCreate, AgentList, AgentOut, AgentPatch
from agentd.store.records import AgentRecord

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents", tags=["agents"])


def _out(runtime: Runtime, agent: AgentRecord) -> dict[str, Any]:
    """An agent as the API shows it, with what its stored settings get wrong."""
    return {**agent.to_api(), "settings_errors": runtime.settings_errors(agent)}


@router.post("", status_code=201, response_model=AgentOut, responses=ERRORS(409, 422))
async def create_agent(body: AgentCreate, request: Request) -> Response:
    """Create an agent. The model string and tools are checked now, not on first use."""
    admin = person(request, "creating an agent")
    runtime = runtime_of(request)
    agent = await runtime.create_agent(
        name=body.name, model=body.model, instructions=body.instructions,
        tools=body.tools, settings=body.settings, admin=is_admin(request, admin))
    return model_response(AgentOut, _out(runtime, agent), 201)


@router.get("", response_model=AgentList)
async def list_agents(request: Request) -> Response:
    runtime = runtime_of(request)
    agents = await runtime.list_agents()
    return model_response(AgentList, {"agents": [_out(runtime, a) for a in agents]})


@router.get("/{name}", response_model=AgentOut, responses=ERRORS(404))
async def get_agent(name: str, request: Request) -> Response:
    runtime = runtime_of(request)
    return model_response(AgentOut, _out(runtime, await runtime.get_agent(name)))


@router.patch("/{name}", response_model=AgentOut, responses=ERRORS(404, 422))
async def update_agent(name: str, body: AgentPatch, request: Request) -> Response:
    fields = body.model_dump(exclude_none=True)
    runtime = runtime_of(request)
    if not fields:
        return model_response(AgentOut, _out(runtime, await runtime.get_agent(name)))
    admin = person(request, "changing an agent")
    agent = await runtime.update_agent(name, fields, admin=is_admin(request, admin))
    return model_response(AgentOut, _out(runtime, agent))


@router.delete("/{name}", status_code=204, responses=ERRORS(404))
async def delete_agent(name: str, request: Request) -> Response:
    """Delete an agent with its sessions, events and runs (active runs are cancelled)."""
    person(request, "deleting an agent")
    await runtime_of(request).delete_agent(name)
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
