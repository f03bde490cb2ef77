"""/v1/tools: every tool the daemon has, with its arguments and what it may do."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from agentd.doors.http import json_response
from agentd.errors import NotFound
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.tools import Tool

__all__ = ["ToolList", "ToolOut", "router"]

router = APIRouter(prefix="/v1/tools", tags=["tools"])


class ToolOut(BaseModel):
    """A tool an agent may list in its ``tools``."""

    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON schema of its arguments.")
    read_only: bool = Field(description="Changes nothing; calls of one step may run "
                                        "together.")
    idempotent: bool = Field(description="Safe to repeat after a crash (same effect id).")
    needs_approval: bool = Field(description="A person approves each call unless a policy "
                                             "rule allows it.")
    needs_network: bool = Field(description="Reaches the network (needs a policy grant).")
    sends_out: bool = Field(description="Sends data out or acts outside the workspace.")
    untrusted_output: bool = Field(description="Its result taints the session.")
    timeout_s: float = Field(description="Wall-clock limit of one call (its own, else the "
                                         "daemon's tool_timeout_s).")


class ToolList(BaseModel):
    tools: list[ToolOut]


def _tool_out(tool: Tool, default_timeout: float) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "read_only": tool.read_only,
        "idempotent": tool.idempotent,
        "needs_approval": tool.needs_approval,
        "needs_network": tool.needs_network,
        "sends_out": tool.sends_out,
        "untrusted_output": tool.untrusted_output,
        "timeout_s": tool.timeout_s if tool.timeout_s is not None else default_timeout,
    }


@router.get("", response_model=ToolList)
async def list_tools(request: Request) -> Response:
    """Every tool of the daemon (built-ins and ``tool_modules``), by name. An agent's
    MCP servers' tools are its own and not listed here."""
    runtime = runtime_of(request)
    registry, default = runtime.tools, runtime.settings.tool_timeout_s
    tools = [t for t in (registry.get(n) for n in registry.names()) if t is not None]
    return json_response({"tools": [_tool_out(t, default) for t in tools]})


@router.get("/{name}", response_model=ToolOut, responses=ERRORS(404))
async def get_tool(name: str, request: Request) -> Response:
    """One tool by name (404 ``tool_not_found``)."""
    runtime = runtime_of(request)
    tool = runtime.tools.get(name)
    if tool is None:
        raise NotFound(f"no tool {name!r}; GET /v1/tools lists them", code="tool_not_found")
    return json_response(_tool_out(tool, runtime.settings.tool_timeout_s))
