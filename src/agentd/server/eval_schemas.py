"""Pydantic models at the API edge of forks and evaluations (``/v1/runs/{id}/fork``,
``/v1/forks``, ``/v1/evals``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CaseList", "CaseOut", "CasesIn", "EvalRunIn", "EvalRunList", "EvalRunOut",
           "ResultList", "ResultOut", "RunForkIn", "RunForkOut", "SuiteIn", "SuiteList",
           "SuiteOut"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


_CANDIDATE = {
    "model": "The model the fork runs on from its step (provider:model; default: the "
             "agent's). Checked as in PATCH /v1/agents: one that does not resolve is a "
             "422 naming it.",
    "instructions": "Instructions in place of the agent's (default: the agent's).",
    "settings": "Settings keys over the agent's (the rest stay the agent's), checked as "
                "a change of the agent by this token would be: operator-only settings "
                "need an operator token; the tenant cannot change.",
    "tools": "recorded (default): a call is answered from the original run's result of "
             "the same call (name and arguments), any other fails with a tool error "
             "(fork_unrecorded); live: tools run for real, in a scratch copy of the "
             "workspace as it was when the step began.",
}


class _Candidate(_In):
    """What a fork or an eval run runs on instead of the agent's own."""

    model: str | None = Field(default=None, max_length=300, description=_CANDIDATE["model"])
    instructions: str | None = Field(default=None, max_length=200_000,
                                     description=_CANDIDATE["instructions"])
    settings: dict[str, Any] | None = Field(default=None, description=_CANDIDATE["settings"])
    tools: Literal["recorded", "live"] = Field(default="recorded",
                                               description=_CANDIDATE["tools"])


class RunForkIn(_Candidate):
    """``POST /v1/runs/{id}/fork``."""

    from_step: int = Field(ge=1, strict=True, description=(
        "The first step the candidate runs (1: the whole run); the steps before it come "
        "from the original's log."))
    priority: Literal["interactive", "background", "batch"] | None = Field(
        default=None, description="The fork's run's class in the kernel's scheduler "
                                  "(default: the original's).")
    wait: bool = Field(default=True, strict=True, description=(
        "Answer once the fork's run has ended (200), or at once with the report as it "
        "stands (202; GET /v1/forks/{fork_id} later)."))


class RunForkOut(BaseModel):
    """A fork compared with its original (``POST /v1/runs/{id}/fork``, ``GET
    /v1/forks/{id}``)."""

    fork_id: str
    run_id: str = Field(description="The fork's run.")
    session: str = Field(description="The fork's scratch session: fork:<run id>:<n>.")
    status: str = Field(description="The fork's run's status.")
    from_step: int
    model: str | None = Field(description="The candidate's model (null: the agent's).")
    tools: str = Field(description="recorded or live.")
    original: dict[str, Any] = Field(description=(
        "{run_id, status, output, error, steps, usage, usage_from_step, tool_calls}: "
        "usage_from_step is the tokens (and cost) of its steps from from_step on."))
    fork: dict[str, Any] = Field(description=(
        "{run_id, status, output, error, steps, usage, tool_calls}: usage is the steps "
        "the candidate ran (those served from the log carry none)."))
    first_divergence: dict[str, Any] | None = Field(description=(
        "Where the fork first decided differently: {step, index, expected, got} "
        "(normalised events); null when it decided the same throughout, or has not "
        "ended."))
    tool_calls_added: list[dict[str, Any]] = Field(description=(
        "{name, arguments} the fork called (from from_step on) that the original did "
        "not, once per extra call."))
    tool_calls_removed: list[dict[str, Any]] = Field(description=(
        "{name, arguments} the original called that the fork did not."))
    unrecorded_calls: list[dict[str, Any]] = Field(description=(
        "{name, call_id} of the fork's calls the recording could not answer (tools: "
        "recorded): each failed with a tool error."))
    same_output: bool = Field(description="The fork ended with the original's output.")


# -- evaluations ------------------------------------------------------------------------

_GATE = ("What an eval run must reach for the suite to pass: {min_pass_rate (0..1, "
         "default 1), max_regressions (cases that passed in the suite's last run and do "
         "not now; default: not checked), min_vs_baseline (how far below the recorded "
         "baseline's pass rate it may be; default: not checked)}.")
_GRADERS = ("Each {kind, name?, ...}: exact {expected?, strip?, ignore_case?}, regex "
            "{pattern, ignore_case?, negate?}, json_schema {schema}, tool_called {tool, "
            "arguments?, min?}, tool_not_called {tool, arguments?}, max_steps {steps}, "
            "max_tokens {tokens}, max_cost {usd}, rubric {rubric, model?, settings?} "
            "(docs/evals.md). Default: [{\"kind\": \"exact\"}], the run's own answer.")


class SuiteIn(_In):
    """``POST /v1/evals/suites``."""

    agent: str = Field(min_length=1, max_length=256, description="The suite's agent.")
    name: str = Field(min_length=1, max_length=64, description=(
        "Unique for the agent: 1-64 letters, digits, '_', '-' or '.'."))
    description: str = Field(default="", max_length=2000)
    gate: dict[str, Any] | None = Field(default=None, description=_GATE)


class SuiteOut(BaseModel):
    id: str
    agent: str
    name: str
    description: str
    gate: dict[str, Any]
    cases: int = Field(description="How many cases it holds.")
    created_at: str | None
    updated_at: str | None


class SuiteList(BaseModel):
    suites: list[SuiteOut]


class CasesIn(_In):
    """``POST /v1/evals/suites/{id}/cases``: one case from a run, or imported ones."""

    from_run: str | None = Field(default=None, max_length=200, description=(
        "A finished run of the suite's agent: the case copies its context, message and "
        "recorded run (it stays whole if the run is deleted)."))
    name: str | None = Field(default=None, max_length=200)
    graders: list[Any] | None = Field(default=None, description=_GRADERS)
    from_step: int = Field(default=1, ge=1, strict=True, description=(
        "The step the candidate takes over from (the steps before it are the "
        "recording's)."))
    cases: list[dict[str, Any]] | None = Field(default=None, max_length=1000, description=(
        "Cases as an export writes them (GET .../export: its lines of type case), up "
        "to 1000 a request; held to what a case may hold."))


class CaseOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    suite_id: str
    n: int
    name: str
    source: dict[str, Any]
    graders: list[Any]
    from_step: int
    created_at: str | None


class CaseList(BaseModel):
    cases: list[CaseOut]
    next_after: int | None = Field(description="Give it as after for the next page.")


class EvalRunIn(_Candidate):
    """``POST /v1/evals/suites/{id}/runs``: the candidate every case is forked onto."""

    gate: dict[str, Any] | None = Field(default=None, description=(
        "This run's gate instead of the suite's. " + _GATE))
    priority: Literal["interactive", "background", "batch"] | None = Field(
        default=None, description="The cases' class in the kernel's scheduler (default: "
                                  "[evals] priority, batch).")
    concurrency: int | None = Field(default=None, ge=1, le=256, description=(
        "Cases at once (at most [evals] concurrency)."))
    keep_sessions: bool = Field(default=False, strict=True, description=(
        "Keep each case's scratch session (fork:<eval run>:<case>) to read later."))
    wait: bool = Field(default=False, strict=True, description=(
        "Answer once the eval run has ended (200) instead of at once (202)."))


class EvalRunOut(BaseModel):
    id: str
    suite_id: str
    n: int = Field(description="The suite's nth eval run.")
    status: str = Field(description="queued, running, cancelling, completed, cancelled.")
    candidate: dict[str, Any]
    priority: str
    concurrency: int
    keep_sessions: bool
    cases: int
    counts: dict[str, int] = Field(description="Cases by status: queued, running, "
                                               "passed, failed, errored, cancelled.")
    summary: dict[str, Any] | None = Field(description=(
        "Once ended: {total, passed, failed, errored, cancelled, pass_rate, usage, "
        "judge_usage, baseline: {passed, pass_rate, usage, better, worse}, previous: "
        "{eval_run_id, n, passed, pass_rate, regressions, fixed, new_cases} | null, "
        "gate: {..., passed, reasons}}."))
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class EvalRunList(BaseModel):
    runs: list[EvalRunOut]


class ResultOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    eval_run_id: str
    case_id: str
    n: int
    case: str = Field(description="The case's name.")
    status: str = Field(description="queued, running, passed, failed, errored, cancelled.")
    run_id: str | None = Field(description="The case's fork's run.")
    session: str | None = Field(description="Its scratch session, while kept.")
    finished_at: str | None


class ResultList(BaseModel):
    results: list[ResultOut]
    next_after: int | None
