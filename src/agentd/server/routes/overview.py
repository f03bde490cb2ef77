"""GET /v1/overview: the daemon at a glance, for dashboards (the console's overview)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.doors.access import access_of, visible_agents
from agentd.doors.http import model_response
from agentd.server.routes._deps import runtime_of
from agentd.server.schemas import OverviewOut

__all__ = ["router"]

router = APIRouter(prefix="/v1/overview", tags=["overview"])


@router.get("", response_model=OverviewOut)
async def get_overview(request: Request) -> Response:
    """Agents by state (and how many are awake on this node), active runs by status
    (every node's), runs waiting for approval, what this node holds, today's usage, the
    sandbox's disk use (measured off the request, at most every 30 s) and the store's
    size, and the runs under way on this node with what each is doing now (``busy``).
    Cheap enough to ask every few seconds with many thousands of agents. For a
    scoped token (``access``) the agents, runs (``busy`` too), approvals and usage are its scope's;
    the node, sandbox and store figures are the daemon's."""
    runtime = runtime_of(request)
    summary = await runtime.overview.summary()
    visible = await visible_agents(request)
    if visible is not None:
        access = access_of(request.scope)
        summary.update(await runtime.overview.of_agents(
            visible, runtime.is_awake,
            lambda row: access.allows(row["agent"], row["tenant"])))
        summary["busy"] = runtime.overview.busy({a.name for a in visible})
    return model_response(OverviewOut, summary)
