"""/v1/approvals: tool calls waiting for a person, and their decisions."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from agentd.server._http import model_response
from agentd.server.routes._deps import ERRORS, person, runtime_of
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
    pending = await runtime_of(request).approvals.pending(agent)
    return model_response(ApprovalList, {"approvals": pending})


@router.get("/{approval_id}", response_model=ApprovalOut, responses=ERRORS(404))
async def get_approval(approval_id: str, request: Request) -> Response:
    return model_response(ApprovalOut, await runtime_of(request).approvals.get(approval_id))


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
    who = person(request, "deciding an approval")
    decision = await runtime_of(request).approvals.decide(
        approval_id, body.action, arguments=body.arguments, output=body.output,
        remember=body.remember, reason=body.reason, by=who)
    return model_response(ApprovalDecisionOut, {"decision": decision})
