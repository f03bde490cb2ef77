"""/v1/checkpoints/{id}: a checkpoint by its id alone (ids are unique across sessions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.doors.access import require_owner
from agentd.doors.http import model_response
from agentd.errors import CheckpointNotFound, InvalidInput
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import CheckpointOut, ForkIn, RestoreOut, SessionOut
from agentd.store.records import CheckpointRecord, SessionRecord

__all__ = ["router"]

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])


async def _checkpoint(request: Request, checkpoint_id: str
                      ) -> tuple[CheckpointRecord, str, SessionRecord]:
    """The checkpoint, its agent and session; 404 when its agent is out of scope."""
    found = await runtime_of(request).get_checkpoint(checkpoint_id)
    await require_owner(request, found[1], CheckpointNotFound(
        f"checkpoint {checkpoint_id!r} not found"))
    return found


@router.get("/{checkpoint_id}", response_model=CheckpointOut, responses=ERRORS(404))
async def get_checkpoint(checkpoint_id: str, request: Request) -> Response:
    checkpoint, agent, session = await _checkpoint(request, checkpoint_id)
    return model_response(CheckpointOut, checkpoint.to_api(agent, session.key))


@router.post("/{checkpoint_id}/restore", response_model=RestoreOut,
             responses=ERRORS(404, 409))
async def restore_checkpoint(checkpoint_id: str, request: Request) -> Response:
    """Restore the checkpoint's session to it (as ``POST .../sessions/{key}/restore``)."""
    runtime = runtime_of(request)
    checkpoint, agent, session = await _checkpoint(request, checkpoint_id)
    restored, event = await runtime.restore(agent, session.key, checkpoint=checkpoint.id)
    return model_response(RestoreOut,
                          {"session": restored.to_api(agent), "event": event.to_api()})


@router.post("/{checkpoint_id}/fork", response_model=SessionOut, status_code=201,
             responses=ERRORS(404, 409, 422))
async def fork_checkpoint(checkpoint_id: str, request: Request, body: ForkIn | None = None
                          ) -> Response:
    """Fork the checkpoint's session at it into a new session (``key`` optional)."""
    runtime = runtime_of(request)
    checkpoint, agent, session = await _checkpoint(request, checkpoint_id)
    if body is not None and (body.seq is not None or body.checkpoint is not None):
        raise InvalidInput("the checkpoint is in the path; give only key", field="body")
    forked = await runtime.fork(agent, session.key, new_key=body.key if body else None,
                                checkpoint=checkpoint.id)
    return model_response(SessionOut, forked.to_api(agent), 201)
