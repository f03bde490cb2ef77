"""/v1/approvals: tool calls waiting for a person, and their decisions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from agentd.doors.access import (
    access_of,
    may_use,
    require_agent,
    require_owner,
    require_right,
)
from agentd.doors.http import model_response
from agentd.runtime.approvals import ApprovalNotFound
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import (
    ApprovalDecisionIn,
    ApprovalDecisionOut,
    ApprovalList,
    ApprovalOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])


@router.get("", response_model=ApprovalList, responses=ERRORS(404))
async def list_approvals(request: Request, agent: str | None = Query(default=None)
                         ) -> Response:
    """Pending requests, oldest first (``?agent=NAME`` for one agent's)."""
    if agent is not None:
        await require_agent(request, agent)
    pending = await runtime_of(request).approvals.pending(agent)
    access = access_of(request.scope)
    if not access.everything:
        pending = [p for p in pending if await may_use(request, p["agent"], access)]
    return model_response(ApprovalList, {"approvals": pending})


@router.get("/{approval_id}", response_model=ApprovalOut, responses=ERRORS(404))
async def get_approval(approval_id: str, request: Request) -> Response:
    return model_response(ApprovalOut, await _approval(request, approval_id))


async def _approval(request: Request, approval_id: str) -> dict[str, Any]:
    """The pending request; 404 (as for one that does not exist) when its agent is
    outside the token's scope."""
    found = await runtime_of(request).approvals.get(approval_id)
    await require_owner(request, found["agent"], ApprovalNotFound(
        f"no pending approval {approval_id!r} (it was decided, expired, or never "
        "existed)"))
    return found


@router.post("/{approval_id}", response_model=ApprovalDecisionOut,
             responses=ERRORS(404, 409, 422))
async def decide_approval(approval_id: str, body: ApprovalDecisionIn, request: Request
                          ) -> Response:
    """Approve (optionally with edited ``arguments``) or deny a policy request, or settle
    a call of unknown outcome; ``remember`` makes the decision a rule of the agent.
    Returns the decision as logged. A request already decided (or expired) gets 404.

    Only a person decides: the request needs a daemon token (even with ``auth =
    "none"``), and the decision's ``by`` is that token's name (``bootstrap``), not
    anything the body says."""
    who = require_right(request, "use", "deciding an approval")
    if not access_of(request.scope).everything:
        await _approval(request, approval_id)
    decision = await runtime_of(request).approvals.decide(
        approval_id, body.action, arguments=body.arguments, output=body.output,
        remember=body.remember, reason=body.reason, actor=who)
    return model_response(ApprovalDecisionOut, {"decision": decision})
