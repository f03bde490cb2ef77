"""/v1/agents/{name}/snapshots/{ref}: what a workspace snapshot changed.

A ``workspace.snapshot`` event names the snapshot (``ref``) of the agent's files after
a step; this says which files differ from another snapshot of the agent, or from the
one the session had before (``session``), without their contents.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from agentd.doors.http import INT64_MAX, model_response
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import SnapshotChangesOut

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents/{name}/snapshots", tags=["sessions"])

_REF = r"^[0-9a-f]{64}$"


@router.get("/{ref}", response_model=SnapshotChangesOut, responses=ERRORS(404, 422))
async def snapshot_changes(
    name: str,
    request: Request,
    ref: str = Path(pattern=_REF, description="A snapshot's ref (workspace.snapshot)."),
    against: str | None = Query(default=None, pattern=_REF,
                                description="Compare with this snapshot of the agent."),
    session: str | None = Query(default=None, min_length=1, max_length=256,
                                description="Compare with the snapshot this session had "
                                            "before its event of ref (what the step "
                                            "changed)."),
    seq: int | None = Query(default=None, ge=1, le=INT64_MAX,
                            description="With session: the snapshot event at this seq "
                                        "(default: the latest of ref)."),
) -> Response:
    """The files that differ between two of the agent's workspace snapshots (paths,
    added / removed / modified, sizes; no contents). With neither ``against`` nor
    ``session``, every file of ``ref``. 404 ``snapshot_not_found`` for a ref the agent
    never took (or that ``session`` does not log, at ``seq``), 422 for a malformed ref,
    both ``against`` and ``session``, or ``seq`` without ``session``."""
    found = await runtime_of(request).snapshot_changes(name, ref, against=against,
                                                       session=session, seq=seq)
    return model_response(SnapshotChangesOut, found)
