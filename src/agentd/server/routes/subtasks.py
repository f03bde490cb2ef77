"""/v1/runs/{id}/subtasks: the child runs a run started (subtasks, calls to agents)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from agentd.doors.access import access_of, may_use, require_run
from agentd.doors.http import model_response
from agentd.server.routes._deps import ERRORS, runtime_of

__all__ = ["router"]

router = APIRouter(prefix="/v1/runs", tags=["runs"])


class SubtaskOut(BaseModel):
    id: str = Field(description="The subtask's id (`st_...`).")
    type: Literal["subtask", "call"] = Field(
        description="`subtask` (subtask_start) or `call` (agent_call).")
    parent_run: str
    n: int = Field(description="Its place among the run's children, from 1.")
    title: str
    agent: str = Field(description="The child's agent.")
    session: str = Field(description="The child's session key.")
    run_id: str = Field(description="The child run (GET /v1/runs/{id}).")
    depth: int = Field(description="How deep it is nested (1: a child of a client's run).")
    status: str = Field(description="The child run's status; `gone` when its session "
                                    "was deleted.")
    output: str | None
    error: dict[str, Any] | None
    usage: dict[str, int | float] | None
    created_at: str


class SubtasksOut(BaseModel):
    subtasks: list[SubtaskOut]


@router.get("/{run_id}/subtasks", response_model=SubtasksOut, responses=ERRORS(404))
async def list_subtasks(run_id: str, request: Request) -> Response:
    """The child runs this run started, in the order it started them, each with its
    run's status and output."""
    await require_run(request, run_id)
    children = await runtime_of(request).list_subtasks(run_id)
    access = access_of(request.scope)
    if not access.everything:  # a call to an agent outside the scope is not shown
        children = [c for c in children if await may_use(request, c.child_agent, access)]
    return model_response(SubtasksOut, {"subtasks": [c.to_api() for c in children]})
