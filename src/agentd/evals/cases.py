"""Cases: what a case copies from the run it is picked from, what an imported one
may hold, and the JSON lines a suite exports as.

A case is self-contained: its ``input`` holds the session's events before the run (as
a fork copies them), the run's message and the session's policy; its ``baseline`` the
run's record and events (the recording a fork serves from). Deleting the run, its
session or its agent's other sessions changes nothing of it.

An **imported** case comes from outside (another daemon's export, a file), so it is
held to what a case from a run could hold and no more: its history only of the kinds
that make a conversation (no approvals, checkpoints, restores or subtasks), its
message only with the keys that describe the message (not who pays, which chain it
belongs to, or its trace), its session policy checked as a person setting it would be
(:meth:`agentd.evals.service.Evals.import_cases`), and no workspace snapshot (a ref
names content on this daemon, and no other daemon's ref is this one's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.errors import InvalidInput
from agentd.evals.graders import check_graders
from agentd.runtime.replay import Replays, check_ended
from agentd.runtime.workspaces import snapshot_at
from agentd.store import Store
from agentd.store.evals import CaseRecord, SuiteRecord
from agentd.store.records import iso

__all__ = ["FORMAT", "HISTORY_KINDS", "case_from_run", "checked_case", "export_case",
           "export_header", "fork_source"]

#: The first line of an export names its format.
FORMAT = "agentd.eval/1"
#: What an imported case's history may hold: the conversation and its runs' ends.
HISTORY_KINDS = frozenset({
    "message.user", "message.assistant", "message.added", "message.proactive",
    "tool.started", "tool.finished", "run.queued", "run.started", "run.completed",
    "run.failed", "run.cancelled", "run.interrupted", "output.invalid", "loop.detected",
    "hook.verdict", "session.forked", "session.compacted", "workspace.snapshot",
    "budget.warning", "tools.unavailable"})
#: What a message's data keeps when its case is imported (what the message was, and
#: what restricts its run: its taint, a schedule's or a heartbeat's origin).
_IMPORTED_ORIGIN = frozenset({"content", "instructions", "output_schema", "client_tools",
                              "tool_results", "tainted", "whole", "schedule_id", "fire_at",
                              "heartbeat", "beat_at"})
#: What a message's data never keeps in a case: who pays for a run is its own agent
#: in a fork, and a replay's, a fork's and a trace's marks are the original run's.
_DROPPED_ORIGIN = frozenset({"payer", "replay", "fork", "traceparent"})


async def case_from_run(store: Store, run_id: str, *, from_step: int = 1
                        ) -> dict[str, Any]:
    """A case (``name``, ``source``, ``input``, ``baseline``, ``from_step``) copied
    from the finished run ``run_id``; 409 ``run_in_flight`` while it runs, 422 when it
    cannot be forked (never started, steered into, ``from_step`` out of range)."""
    run, name, key = await store.run_context(run_id)
    check_ended(run, "taken as a case", "fork_unsupported")
    log = await store.read_events(run.session_id)
    mine = Replays.run_events(log, run)
    messages = [e for e in mine if e.kind == "message.user"]
    if len(messages) != 1:
        raise InvalidInput(f"run {run_id!r} " + ("has no message in its session's log"
                                                 if not messages else
                                                 "had messages steered into it"),
                           code="fork_unsupported")
    answers = [e for e in mine if e.kind == "message.assistant"]
    steps = max(len(answers), run.steps, 1)
    if not 1 <= from_step <= steps:
        raise InvalidInput(f"from_step {from_step} is out of range: run {run_id!r} has "
                           f"steps 1 to {steps}", field="body.from_step",
                           code="step_out_of_range")
    before = answers[from_step - 1].seq - 1 if from_step <= len(answers) else mine[-1].seq
    session = await store.get_session(run.agent_id, key)
    message = {k: v for k, v in messages[0].data.items() if k not in _DROPPED_ORIGIN}
    return {
        "name": str(message.get("content", ""))[:80] or run_id,
        "source": {"run": run_id, "agent": name, "session": key,
                   "created_at": iso(run.created_at)},
        "input": {"history": await store.session_context(run.session_id,
                                                         messages[0].seq - 1),
                  "message": message, "policy": session.policy,
                  "workspace": snapshot_at(log, before)},
        "baseline": {"run": _run_of(run.to_api(name, key)),
                     "events": [{"seq": e.seq, "kind": e.kind, "data": e.data, "at": e.at}
                                for e in mine]},
        "from_step": from_step,
    }


def _run_of(api: Mapping[str, Any]) -> dict[str, Any]:
    return {"run_id": api["id"], "status": api["status"], "output": api.get("output"),
            "error": api.get("error"), "steps": int(api.get("steps") or 0),
            "usage": api.get("usage") or {}, "agent": api.get("agent"),
            "session": api.get("session")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: str = Field(min_length=1, max_length=100)
    data: dict[str, Any]
    seq: int | None = Field(default=None, ge=1)
    at: float | None = Field(default=None, allow_inf_nan=False)
    run_id: str | None = Field(default=None, max_length=200)


class _Input(_Strict):
    history: list[_Event] = Field(default_factory=list, max_length=100_000)
    message: dict[str, Any]
    policy: dict[str, Any] | None = None
    workspace: str | None = None


class _BaselineRun(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(min_length=1, max_length=200)
    status: str = Field(max_length=40)
    output: str | None = None
    error: dict[str, Any] | None = None
    steps: int = Field(default=0, ge=0)
    usage: dict[str, Any] = Field(default_factory=dict)


class _Baseline(_Strict):
    run: _BaselineRun
    events: list[_Event] = Field(max_length=100_000)


class _Case(BaseModel):
    model_config = ConfigDict(extra="ignore")  # (an export's id, n, created_at...)

    name: str = Field(default="", max_length=200)
    source: dict[str, Any] = Field(default_factory=dict)
    input: _Input
    baseline: _Baseline
    graders: list[Any] = Field(default_factory=lambda: [{"kind": "exact"}])
    from_step: int = Field(default=1, ge=1)


def checked_case(raw: Any, where: str) -> dict[str, Any]:
    """An imported case, held to what it may hold (see the module's docstring), or a
    422 naming what is wrong (``where``: ``body.cases[3]``)."""
    try:
        case = _Case.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}.{at}: {first['msg']}", field=f"{where}.{at}") from None
    for i, event in enumerate(case.input.history):
        if event.kind not in HISTORY_KINDS:
            raise InvalidInput(f"{where}.input.history[{i}]: a case's history may not hold "
                               f"{event.kind!r} events", field=f"{where}.input.history[{i}]")
    if not isinstance(case.input.message.get("content"), str):
        raise InvalidInput(f"{where}.input.message.content: a string is required",
                           field=f"{where}.input.message.content")
    seqs = [e.seq for e in case.baseline.events]
    if not case.baseline.events or any(s is None for s in seqs) or seqs != sorted(
            set(s for s in seqs if s is not None)):
        raise InvalidInput(f"{where}.baseline.events: the run's events, each with its "
                           "seq, in order", field=f"{where}.baseline.events")
    answers = sum(e.kind == "message.assistant" for e in case.baseline.events)
    if case.from_step > max(answers, case.baseline.run.steps, 1):
        raise InvalidInput(f"{where}.from_step: {case.from_step} is out of range",
                           field=f"{where}.from_step", code="step_out_of_range")
    graders = check_graders(case.graders, f"{where}.graders")
    return {
        "name": case.name or str(case.input.message["content"])[:80] or "case",
        "source": {k: v for k, v in case.source.items()
                   if k in ("run", "agent", "session", "created_at")} | {"imported": True},
        "input": {"history": [{"kind": e.kind, "data": e.data, "run_id": e.run_id,
                               "at": e.at} for e in case.input.history],
                  "message": {k: v for k, v in case.input.message.items()
                              if k in _IMPORTED_ORIGIN},
                  "policy": case.input.policy, "workspace": None},
        "baseline": {"run": case.baseline.run.model_dump(),
                     "events": [e.model_dump(exclude={"run_id"})
                                for e in case.baseline.events]},
        "graders": graders, "from_step": case.from_step,
    }


def fork_source(case: CaseRecord) -> dict[str, Any]:
    """What :meth:`agentd.runtime.fork.Forks.start_case` is given of ``case``."""
    assert case.input is not None and case.baseline is not None
    return {"run": case.baseline["run"], "events": case.baseline["events"],
            "message": case.input["message"], "session": case.source.get("session")}


def export_header(suite: SuiteRecord) -> bytes:
    return orjson.dumps({"format": FORMAT, "type": "suite", "name": suite.name,
                         "agent": suite.agent, "description": suite.description,
                         "gate": suite.gate, "cases": suite.cases}) + b"\n"


def export_case(case: CaseRecord) -> bytes:
    return orjson.dumps({"type": "case", "id": case.id, "n": case.n, "name": case.name,
                         "source": case.source, "input": case.input,
                         "baseline": case.baseline, "graders": case.graders,
                         "from_step": case.from_step}) + b"\n"

