"""/v1/runs/{id}: read, cancel, replay and fork a run."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.doors.access import (
    require_candidate,
    require_owner,
    require_right,
    require_run,
)
from agentd.doors.http import model_response
from agentd.errors import RunNotFound
from agentd.runtime.fork import ForkRequest
from agentd.server.eval_schemas import RunForkIn, RunForkOut
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import DecisionIn, ReplayOut, RunOut, TraceOut

__all__ = ["router"]

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunOut, responses=ERRORS(404))
async def get_run(run_id: str, request: Request) -> Response:
    run, agent, key = await runtime_of(request).get_run(run_id)
    await require_owner(request, agent, RunNotFound(f"run {run_id!r} not found"))
    return model_response(RunOut, run.to_api(agent, key))


@router.get("/{run_id}/trace", response_model=TraceOut, responses=ERRORS(404))
async def get_run_trace(run_id: str, request: Request) -> Response:
    """The run's spans (``invoke_agent``, ``chat``, ``execute_tool``), built from its
    log, as an OTLP/JSON ``ExportTraceServiceRequest``: post it to a receiver's
    ``/v1/traces`` (``agentd trace RUN --otlp URL`` does). Content (prompts, tool
    input and output) only with ``[telemetry] capture_content``."""
    await require_run(request, run_id)
    return model_response(TraceOut, await runtime_of(request).run_trace(run_id))


@router.post("/{run_id}/cancel", response_model=RunOut, responses=ERRORS(404))
async def cancel_run(run_id: str, request: Request) -> Response:
    """Cancel a queued or running run; a finished run is returned unchanged."""
    await require_run(request, run_id)
    run, agent, key = await runtime_of(request).cancel_run(run_id)
    return model_response(RunOut, run.to_api(agent, key))


@router.post("/{run_id}/decide", response_model=RunOut, responses=ERRORS(404, 409, 422))
async def decide_run(run_id: str, body: DecisionIn, request: Request) -> Response:
    """Decide about a tool call of unknown outcome (the run is ``waiting_approval``
    after a crash interrupted a non-idempotent call): ``retry`` it with the same effect
    id, ``skip`` it with ``output`` as its result, or ``fail`` the run. Deciding twice,
    or about a run that is not waiting, gets 409 ``not_waiting``."""
    who = require_right(request, "use", "deciding about a run")
    await require_run(request, run_id)
    run, agent, key = await runtime_of(request).decide(run_id, body.action, body.output,
                                                       actor=who)
    return model_response(RunOut, run.to_api(agent, key))


@router.post("/{run_id}/replay", response_model=ReplayOut, responses=ERRORS(404, 409, 422))
async def replay_run(run_id: str, request: Request) -> Response:
    """Run a finished run again from its log in a scratch session
    (``replay:<run id>:<n>``): every model answer, tool result and approval decision
    is served from the original's events (no model call, no tool run, no tokens
    charged), and the two logs are compared. 409 ``run_in_flight`` while the run has
    not ended; 404 for a run that does not exist or is another tenant's."""
    require_right(request, "use", "replaying a run")
    await require_run(request, run_id)
    return model_response(ReplayOut, await runtime_of(request).replay(run_id))


@router.post("/{run_id}/fork", response_model=RunForkOut,
             responses={202: {"model": RunForkOut}, **ERRORS(403, 404, 409, 422)})
async def fork_run(run_id: str, body: RunForkIn, request: Request) -> Response:
    """Fork a finished run onto another configuration from one of its steps, in a
    scratch session (``fork:<run id>:<n>``): the steps before ``from_step`` are served
    from the original's log, from there the candidate runs for real (its model calls
    charged and budgeted as the agent's). The answer compares the two: the first step
    where the fork decided differently, the tool calls it added and removed, both
    final answers, both runs' tokens and cost. 409 ``run_in_flight`` while the run
    has not ended; 422 ``step_out_of_range``, a model that does not resolve,
    ``fork_workspace_unknown`` (live tools); 403 for an operator-only setting from a
    token below operator; 404 for a run that does not exist or is another tenant's."""
    who = require_right(request, "use", "forking a run")
    await require_run(request, run_id)
    runtime = runtime_of(request)
    if body.settings:
        _, name, _ = await runtime.get_run(run_id)
        await require_candidate(request, name, body.settings)
    report = await runtime.fork_run(run_id, ForkRequest(
        from_step=body.from_step, model=body.model, instructions=body.instructions,
        settings=body.settings, tools=body.tools, priority=body.priority),
        wait=body.wait, actor=who)
    ended = report["status"] in ("completed", "failed", "cancelled", "interrupted")
    return model_response(RunForkOut, report, 200 if ended else 202)
