"""/v1/forks/{id}: a fork's report; /v1/evals: evaluation suites, their cases, eval runs
and their results (:mod:`agentd.evals`).

A suite is its agent's: every route finds the suite (or the eval run, then its suite)
and answers one outside the token's scope exactly as one that does not exist."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from agentd.doors.access import (
    access_of,
    require_agent,
    require_candidate,
    require_owner,
    require_right,
    require_run,
    visible_agents,
)
from agentd.doors.http import model_response
from agentd.errors import InvalidInput, NotFound
from agentd.server.eval_schemas import (
    CaseList,
    CasesIn,
    EvalRunIn,
    EvalRunList,
    EvalRunOut,
    ResultList,
    RunForkOut,
    SuiteIn,
    SuiteList,
    SuiteOut,
)
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.store.evals import RESULT_STATUSES, EvalRunRecord, SuiteRecord

__all__ = ["fork_router", "router"]

fork_router = APIRouter(prefix="/v1/forks", tags=["runs"])
router = APIRouter(prefix="/v1/evals", tags=["evals"])

_NDJSON = {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}


@fork_router.get("/{fork_id}", response_model=RunForkOut, responses=ERRORS(404))
async def get_fork(fork_id: str, request: Request,
                   wait: bool = Query(default=False, description=(
                       "Answer once the fork's run has ended."))) -> Response:
    """A fork compared with its original (as ``POST /v1/runs/{id}/fork`` answers); 404
    ``fork_not_found`` for one that does not exist or is another tenant's agent's."""
    runtime = runtime_of(request)
    name = await runtime.fork_agent(fork_id)
    await require_owner(request, name, NotFound(f"fork {fork_id!r} not found",
                                                code="fork_not_found"))
    return model_response(RunForkOut, await runtime.fork_report(fork_id, wait=wait))


async def _suite(request: Request, suite_id: str) -> SuiteRecord:
    suite = await runtime_of(request).evals.suite(suite_id)
    await require_owner(request, suite.agent, NotFound(f"suite {suite_id!r} not found",
                                                       code="suite_not_found"))
    return suite


async def _eval_run(request: Request, eval_run_id: str) -> EvalRunRecord:
    run, suite = await runtime_of(request).evals.eval_run_and_suite(eval_run_id)
    await require_owner(request, suite.agent, NotFound(
        f"eval run {eval_run_id!r} not found", code="eval_run_not_found"))
    return run


def _lines(lines: AsyncIterator[bytes], name: str) -> Response:
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{name}.jsonl"'})


# -- suites --------------------------------------------------------------------------------


@router.post("/suites", status_code=201, response_model=SuiteOut,
             responses=ERRORS(403, 404, 409, 422))
async def create_suite(body: SuiteIn, request: Request) -> Response:
    """A new suite of an agent (409 ``suite_exists`` when it has one of that name)."""
    require_right(request, "use", "creating an eval suite")
    await require_agent(request, body.agent)
    suite = await runtime_of(request).evals.create_suite(
        body.agent, body.name, description=body.description, gate=body.gate)
    return model_response(SuiteOut, suite.to_api(), 201)


@router.get("/suites", response_model=SuiteList, responses=ERRORS(404, 422))
async def list_suites(
    request: Request,
    agent: str | None = Query(default=None, max_length=256,
                              description="Only this agent's suites."),
    name: str | None = Query(default=None, max_length=64,
                             description="Only suites of this name."),
) -> Response:
    """Suites of the agents the token may use, by agent and name."""
    runtime = runtime_of(request)
    ids: list[str] | None = None
    if agent is not None:
        await require_agent(request, agent)
        ids = [(await runtime.stored_agent(agent)).id]
    elif not access_of(request.scope).everything:
        ids = [a.id for a in await visible_agents(request) or []]
    suites = await runtime.evals.suites(agent_ids=ids, name=name)
    return model_response(SuiteList, {"suites": [s.to_api() for s in suites]})


@router.get("/suites/{suite_id}", response_model=SuiteOut, responses=ERRORS(404))
async def get_suite(suite_id: str, request: Request) -> Response:
    return model_response(SuiteOut, (await _suite(request, suite_id)).to_api())


@router.delete("/suites/{suite_id}", status_code=204, responses=ERRORS(403, 404))
async def delete_suite(suite_id: str, request: Request) -> Response:
    """Delete a suite with its cases, eval runs and results."""
    require_right(request, "use", "deleting an eval suite")
    await _suite(request, suite_id)
    await runtime_of(request).evals.delete_suite(suite_id)
    return Response(status_code=204)


# -- cases ---------------------------------------------------------------------------------


@router.post("/suites/{suite_id}/cases", status_code=201, response_model=CaseList,
             responses=ERRORS(403, 404, 409, 413, 422))
async def add_cases(suite_id: str, body: CasesIn, request: Request) -> Response:
    """Add a case picked from a finished run (``from_run``: the case copies what it
    needs) or imported cases (``cases``: an export's case lines)."""
    who = require_right(request, "use", "adding eval cases")
    await _suite(request, suite_id)
    evals = runtime_of(request).evals
    if (body.from_run is None) == (body.cases is None):
        raise InvalidInput("give either from_run or cases", field="body.from_run")
    if body.from_run is not None:
        await require_run(request, body.from_run)  # (another tenant's: as none)
        made = [await evals.add_from_run(suite_id, body.from_run, name=body.name,
                                         graders=body.graders, from_step=body.from_step,
                                         actor=who)]
    else:
        made = await evals.import_cases(suite_id, body.cases or [], actor=who)
    return model_response(CaseList, {"cases": [c.to_api() for c in made],
                                     "next_after": None}, 201)


@router.get("/suites/{suite_id}/cases", response_model=CaseList, responses=ERRORS(404, 422))
async def list_cases(suite_id: str, request: Request,
                     after: int = Query(default=0, ge=0, description="next_after of the "
                                                                     "page before."),
                     limit: int = Query(default=100, ge=1, le=1000)) -> Response:
    """The suite's cases in order, with each one's baseline (the recorded run's
    status, answer, steps and usage)."""
    await _suite(request, suite_id)
    cases = await runtime_of(request).evals.cases(suite_id, after=after, limit=limit)
    return model_response(CaseList, {
        "cases": [c.to_api() for c in cases],
        "next_after": cases[-1].n if len(cases) == limit else None})


@router.delete("/suites/{suite_id}/cases/{case_id}", status_code=204,
               responses=ERRORS(403, 404))
async def delete_case(suite_id: str, case_id: str, request: Request) -> Response:
    require_right(request, "use", "deleting an eval case")
    await _suite(request, suite_id)
    await runtime_of(request).evals.delete_case(suite_id, case_id)
    return Response(status_code=204)


@router.get("/suites/{suite_id}/export", responses={**ERRORS(404), 200: {
    **_NDJSON, "description": "A header line (type suite), then one line per case."}})
async def export_suite(suite_id: str, request: Request) -> Response:
    """The suite as JSON lines, to import into another daemon (``POST .../cases`` with
    ``cases``)."""
    suite = await _suite(request, suite_id)
    return _lines(runtime_of(request).evals.export(suite_id), suite.name)


# -- eval runs -----------------------------------------------------------------------------


@router.post("/suites/{suite_id}/runs", status_code=202, response_model=EvalRunOut,
             responses={200: {"model": EvalRunOut}, **ERRORS(403, 404, 422)})
async def start_run(suite_id: str, body: EvalRunIn, request: Request) -> Response:
    """Fork every case of the suite onto the candidate, at a background class of the
    kernel's scheduler, a few at a time, and grade them; queued at once (202), or
    ``wait`` for the report (200). The candidate is checked as a change of the agent by
    this token would be (a model that does not resolve: 422; an operator-only
    setting: 403)."""
    who = require_right(request, "use", "running an eval suite")
    suite = await _suite(request, suite_id)
    runtime = runtime_of(request)
    await require_candidate(request, suite.agent, body.settings)
    run = await runtime.evals.start_run(
        suite_id, model=body.model, instructions=body.instructions, settings=body.settings,
        tools=body.tools, gate=body.gate, priority=body.priority,
        concurrency=body.concurrency, keep_sessions=body.keep_sessions, actor=who)
    if body.wait:
        run = await runtime.evals.wait(run.id)
        return model_response(EvalRunOut, run.to_api(), 200)
    return model_response(EvalRunOut, run.to_api(), 202)


@router.get("/suites/{suite_id}/runs", response_model=EvalRunList, responses=ERRORS(404))
async def list_runs(suite_id: str, request: Request,
                    limit: int = Query(default=50, ge=1, le=1000)) -> Response:
    """The suite's eval runs, newest first."""
    await _suite(request, suite_id)
    runs = await runtime_of(request).evals.eval_runs(suite_id, limit=limit)
    return model_response(EvalRunList, {"runs": [r.to_api() for r in runs]})


@router.get("/runs/{eval_run_id}", response_model=EvalRunOut, responses=ERRORS(404))
async def get_run(eval_run_id: str, request: Request,
                  wait: bool = Query(default=False, description=(
                      "Answer once the eval run has ended."))) -> Response:
    run = await _eval_run(request, eval_run_id)
    if wait:
        run = await runtime_of(request).evals.wait(eval_run_id)
    return model_response(EvalRunOut, run.to_api())


@router.post("/runs/{eval_run_id}/cancel", response_model=EvalRunOut,
             responses=ERRORS(403, 404))
async def cancel_run(eval_run_id: str, request: Request) -> Response:
    """Cancel an eval run: its queued cases are not run, its forks under way are
    cancelled."""
    require_right(request, "use", "cancelling an eval run")
    await _eval_run(request, eval_run_id)
    run = await runtime_of(request).evals.cancel_run(eval_run_id)
    return model_response(EvalRunOut, run.to_api())


@router.delete("/runs/{eval_run_id}", status_code=204, responses=ERRORS(403, 404))
async def delete_run(eval_run_id: str, request: Request) -> Response:
    require_right(request, "use", "deleting an eval run")
    await _eval_run(request, eval_run_id)
    await runtime_of(request).evals.delete_run(eval_run_id)
    return Response(status_code=204)


@router.get("/runs/{eval_run_id}/results", response_model=ResultList,
            responses=ERRORS(404, 422))
async def list_results(
    eval_run_id: str, request: Request,
    status: str | None = Query(default=None, max_length=200, description=(
        f"Only these, comma-separated: {', '.join(RESULT_STATUSES)}.")),
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=100, ge=1, le=1000),
) -> Response:
    """Each case's result: its status, the fork's answer, steps and usage, every
    grade, the baseline's grades under the same graders, and where the fork diverged
    from the recording."""
    await _eval_run(request, eval_run_id)
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    bad = [s for s in statuses or () if s not in RESULT_STATUSES]
    if bad:
        raise InvalidInput(f"unknown status {bad[0]!r}; choose from "
                           f"{', '.join(RESULT_STATUSES)}", field="query.status")
    results = await runtime_of(request).evals.results(eval_run_id, status=statuses,
                                                      after=after, limit=limit)
    return model_response(ResultList, {
        "results": [r.to_api() for r in results],
        "next_after": results[-1].n if len(results) == limit else None})


@router.get("/runs/{eval_run_id}/junit", responses={**ERRORS(404), 200: {
    "content": {"application/xml": {"schema": {"type": "string"}}},
    "description": "The eval run as JUnit XML."}})
async def junit(eval_run_id: str, request: Request) -> Response:
    """The eval run as JUnit XML (a testsuite, a testcase per case), for CI."""
    await _eval_run(request, eval_run_id)
    body = await runtime_of(request).evals.junit(eval_run_id)
    return Response(body, media_type="application/xml")


@router.get("/runs/{eval_run_id}/export", responses={**ERRORS(404), 200: {
    **_NDJSON, "description": "A header line (type eval_run), then one line per case."}})
async def export_run(eval_run_id: str, request: Request) -> Response:
    """The eval run's results as JSON lines."""
    await _eval_run(request, eval_run_id)
    return _lines(runtime_of(request).evals.export_results(eval_run_id),
                  eval_run_id)
