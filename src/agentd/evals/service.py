"""Evaluations: suites of cases picked from real sessions, run against a candidate
configuration, graded, reported and gated.

An eval run forks every case of its suite onto the candidate (a model, instructions,
settings over the agent's, recorded or live tools: :mod:`agentd.runtime.fork`), each
in a scratch session ``fork:<eval run>:<case>``, and grades what the fork did
(:mod:`agentd.evals.graders`), and what the recorded baseline did, under the same
graders. How the work is held:

- **Queued durably.** Starting an eval run writes a ``queued`` result per case in one
  transaction (:mod:`agentd.store.evals`); nothing else is made until a case's turn.
  A restart finds the queue as it was; a case under way when the daemon stopped is
  picked up where it was (its fork's run resumes like any run; the result waits for
  it), one whose fork had not started is queued again.
- **Bounded.** A node runs at most ``[evals] concurrency`` cases at once, and an eval
  run at most its own ``concurrency``; 10,000 cases make 10,000 rows, not 10,000
  runs.
- **Behind interactive work.** Every model call of a case (its fork's, its judges')
  goes through the kernel's scheduler at the eval run's class (``[evals] priority``:
  ``batch`` by default), under the agent's and tenant's budgets: an interactive turn
  is admitted before any of them.
- **Graders cannot stall it.** Each grader of a case is given ``[evals]
  grader_timeout_s`` on the daemon's clock; one that raises or runs out of time errors
  its case (``errored``), and the suite goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from agentd.clock import Clock, wait_event
from agentd.config import EvalsConfig
from agentd.errors import (
    AgentdError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SessionExists,
)
from agentd.evals.cases import (
    case_from_run,
    checked_case,
    export_case,
    export_header,
    fork_source,
)
from agentd.evals.graders import Grade, Observed, check_graders, grade, verdict
from agentd.evals.judge import Judge
from agentd.evals.report import check_gate, junit_xml, summarize
from agentd.runtime.agents import Agents
from agentd.runtime.calls import Kernel
from agentd.runtime.fork import TOOL_MODES, ForkRequest, Forks
from agentd.runtime.runs import Runs
from agentd.security.identity import Principal
from agentd.security.policy import parse_policy
from agentd.store import Store
from agentd.store.evals import OPEN, CaseRecord, EvalRunRecord, ResultRecord, SuiteRecord
from agentd.store.records import AgentRecord, UsageCharge

__all__ = ["SUITE_NAME", "Evals"]

log = logging.getLogger(__name__)

#: A suite's name: like an agent's.
SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: Cases an import adds at once.
MAX_IMPORT = 1000
#: Cases a page of a suite's cases shows at most; results of a page of an eval run.
MAX_PAGE = 1000

T = TypeVar("T")


class _TimedOut(Exception):
    pass


class Evals:
    """Suites, their cases, eval runs and their results (see the module's docstring).

    Args:
        store: where they are kept.
        forks: forks each case onto the candidate.
        runs: waits for and cancels the forks' runs.
        agents: the agents suites belong to; checks candidates and judges.
        kernel: the judges' model calls go through it.
        config: ``[evals]``.
        clock: the daemon's clock (graders' time limits, the queue's poll).
        node_id: this node (the cases it claims).
        delete_session: removes a case's scratch session once it is graded.
    """

    def __init__(self, store: Store, *, forks: Forks, runs: Runs, agents: Agents,
                 kernel: Kernel, config: EvalsConfig, clock: Clock, node_id: str,
                 delete_session: Callable[[str, str], Awaitable[None]]) -> None:
        self.store = store
        self.forks = forks
        self.runs = runs
        self.agents = agents
        self.config = config
        self.clock = clock
        self.node_id = node_id
        self.delete_session = delete_session
        self.judge = Judge(kernel, agents, priority=config.priority)
        self._wake = asyncio.Event()
        self._ended: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        #: The cases under way here: (eval run, case) -> its task.
        self._inflight: OrderedDict[tuple[str, str], asyncio.Task[None]] = OrderedDict()

    # -- suites ------------------------------------------------------------------------

    async def create_suite(self, agent: str, name: str, *, description: str = "",
                           gate: Any = None) -> SuiteRecord:
        """A new suite of ``agent`` (409 ``suite_exists`` when it has one of that
        name)."""
        if not SUITE_NAME.match(name):
            raise InvalidInput(f"invalid suite name {name!r}: use 1-64 letters, digits, "
                               "'_', '-' or '.', starting with a letter or digit",
                               field="body.name")
        if len(description) > 2000:
            raise InvalidInput("a suite's description is at most 2000 characters",
                               field="body.description")
        record = await self.agents.get(agent)
        return await self.store.create_suite(record.id, name, description=description,
                                             gate=check_gate(gate))

    async def suites(self, *, agent_ids: Sequence[str] | None = None,
                     name: str | None = None) -> list[SuiteRecord]:
        return await self.store.suites(agent_ids=agent_ids, name=name)

    async def suite(self, suite_id: str) -> SuiteRecord:
        """The suite, or 404 ``suite_not_found``."""
        found = await self.store.get_suite(suite_id)
        if found is None:
            raise NotFound(f"suite {suite_id!r} not found", code="suite_not_found")
        return found

    async def delete_suite(self, suite_id: str) -> None:
        """Delete the suite, its cases, runs and results (its runs under way are
        cancelled first; the scratch sessions they kept go too)."""
        suite = await self.suite(suite_id)
        for run in await self.store.eval_runs(suite_id, limit=10_000):
            if not run.ended:
                await self._cancel_forks(run.id)
        kept = await self.store.delete_suite(suite_id)
        await self._forget(suite.agent, [key for _, key in kept])

    # -- cases -------------------------------------------------------------------------

    async def add_from_run(self, suite_id: str, run_id: str, *, name: str | None = None,
                           graders: Any = None, from_step: int = 1,
                           actor: Principal | None = None) -> CaseRecord:
        """A case copied from the finished run ``run_id`` of the suite's agent (see
        :func:`agentd.evals.cases.case_from_run`), with ``graders`` (default: the
        answer must equal the run's: ``[{"kind": "exact"}]``)."""
        suite = await self.suite(suite_id)
        run, agent_name, _ = await self.store.run_context(run_id)
        if run.agent_id != suite.agent_id:
            raise InvalidInput(f"run {run_id!r} is agent {agent_name!r}'s; suite "
                               f"{suite.name!r} is agent {suite.agent!r}'s",
                               field="body.from_run")
        case = await case_from_run(self.store, run_id, from_step=from_step)
        if name:
            case["name"] = name[:200]
        case["graders"] = check_graders([{"kind": "exact"}] if graders is None else graders)
        await self._check_judges(suite, [case["graders"]], actor)
        return (await self._add(suite, [case]))[0]

    async def import_cases(self, suite_id: str, cases: Sequence[Any], *,
                           actor: Principal | None = None) -> list[CaseRecord]:
        """Cases from outside (another daemon's export): each held to what a case may
        hold (:func:`agentd.evals.cases.checked_case`), its session policy checked as
        a person setting it would be, its judges as a change of the agent would be."""
        suite = await self.suite(suite_id)
        if not cases or len(cases) > MAX_IMPORT:
            raise InvalidInput(f"give 1 to {MAX_IMPORT} cases at once", field="body.cases")
        checked = [checked_case(raw, f"body.cases[{i}]") for i, raw in enumerate(cases)]
        guard = self.agents.guard
        for i, case in enumerate(checked):
            policy = case["input"]["policy"]
            if policy is not None:
                where = f"body.cases[{i}].input.policy"
                parsed = parse_policy(policy, "policy", where)
                guard.check_operator_only(actor, parsed, None, prefix="", where=where + ".")
                case["input"]["policy"] = parsed.model_dump(exclude_none=True)
        await self._check_judges(suite, [c["graders"] for c in checked], actor)
        return await self._add(suite, checked)

    async def _add(self, suite: SuiteRecord, cases: list[dict[str, Any]]
                   ) -> list[CaseRecord]:
        for i, case in enumerate(cases):
            # (what a list of cases shows of the baseline, without reading it whole)
            run = case["baseline"]["run"]
            output = run.get("output")
            case["source"]["baseline"] = {
                "status": run.get("status"), "steps": run.get("steps"),
                "usage": run.get("usage"),
                "output": output[:1000] if isinstance(output, str) else output}
            size = len(orjson.dumps(case))
            if size > self.config.max_case_bytes:
                raise PayloadTooLarge(
                    f"case {i} is {size} bytes as stored; the limit is "
                    f"{self.config.max_case_bytes} ([evals] max_case_bytes)",
                    details={"case": i, "bytes": size})
        return await self.store.add_cases(suite.id, cases, max_cases=self.config.max_cases)

    async def _check_judges(self, suite: SuiteRecord, graders: Sequence[Sequence[Any]],
                            actor: Principal | None) -> None:
        """Each rubric's judge (its model and settings) checked as a change of the
        suite's agent by ``actor`` would be: a judge is a model call too."""
        agent = await self.agents.get(suite.agent)
        seen: set[bytes] = set()
        for some in graders:
            for g in some:
                if g.get("kind") != "rubric":
                    continue
                key = orjson.dumps([g.get("model"), g.get("settings")],
                                   option=orjson.OPT_SORT_KEYS)
                if key not in seen:
                    seen.add(key)
                    _, plan = await self.agents.candidate(
                        agent, model=g.get("model"), settings=g.get("settings"), actor=actor)
                    await self.agents.close_plan(plan)

    async def cases(self, suite_id: str, *, after: int = 0, limit: int = 100
                    ) -> list[CaseRecord]:
        await self.suite(suite_id)
        return await self.store.cases(suite_id, after=after, limit=min(limit, MAX_PAGE))

    async def delete_case(self, suite_id: str, case_id: str) -> None:
        await self.suite(suite_id)
        if not await self.store.delete_case(suite_id, case_id):
            raise NotFound(f"case {case_id!r} not found in suite {suite_id!r}",
                           code="case_not_found")

    async def export(self, suite_id: str) -> AsyncIterator[bytes]:
        """The suite as JSON lines: a header, then each case whole."""
        suite = await self.suite(suite_id)
        yield export_header(suite)
        after = 0
        while True:
            page = await self.store.cases(suite_id, after=after, limit=100, full=True)
            for case in page:
                yield export_case(case)
            if len(page) < 100:
                return
            after = page[-1].n

    # -- eval runs ---------------------------------------------------------------------

    async def start_run(self, suite_id: str, *, model: str | None = None,
                        instructions: str | None = None,
                        settings: Mapping[str, Any] | None = None,
                        tools: str = "recorded", gate: Any = None,
                        priority: str | None = None, concurrency: int | None = None,
                        keep_sessions: bool = False,
                        actor: Principal | None = None) -> EvalRunRecord:
        """Queue an eval run of the suite onto the candidate (checked now, as a change
        of the agent by ``actor`` would be: nothing is written for a refused one)."""
        suite = await self.suite(suite_id)
        agent = await self.agents.get(suite.agent)
        if tools not in TOOL_MODES:
            raise InvalidInput(f"tools must be one of {', '.join(TOOL_MODES)}",
                               field="body.tools")
        _, plan = await self.agents.candidate(agent, model=model, instructions=instructions,
                                              settings=settings, actor=actor)
        await self.agents.close_plan(plan)
        candidate = {"model": model, "instructions": instructions,
                     "settings": dict(settings) if settings is not None else None,
                     "tools": tools,
                     "gate": check_gate(gate if gate is not None else suite.gate)}
        run = await self.store.create_eval_run(
            suite_id, candidate=candidate, priority=priority or self.config.priority,
            concurrency=min(concurrency or self.config.concurrency, self.config.concurrency),
            keep_sessions=keep_sessions)
        self._wake.set()
        return run

    async def eval_run(self, eval_run_id: str) -> EvalRunRecord:
        found = await self.store.get_eval_run(eval_run_id)
        if found is None:
            raise NotFound(f"eval run {eval_run_id!r} not found", code="eval_run_not_found")
        return found

    async def eval_run_and_suite(self, eval_run_id: str
                                 ) -> tuple[EvalRunRecord, SuiteRecord]:
        """The eval run and its suite (404 ``eval_run_not_found`` for either gone)."""
        run = await self.eval_run(eval_run_id)
        suite = await self.store.get_suite(run.suite_id)
        if suite is None:
            raise NotFound(f"eval run {eval_run_id!r} not found", code="eval_run_not_found")
        return run, suite

    async def eval_runs(self, suite_id: str, *, limit: int = 50) -> list[EvalRunRecord]:
        await self.suite(suite_id)
        return await self.store.eval_runs(suite_id, limit=limit)

    async def wait(self, eval_run_id: str) -> EvalRunRecord:
        """The eval run once it has ended."""
        while True:
            run = await self.eval_run(eval_run_id)
            if run.ended:
                return run
            event = self._ended.setdefault(eval_run_id, asyncio.Event())
            await wait_event(self.clock, event, self.config.poll_s)

    async def results(self, eval_run_id: str, *, status: Sequence[str] | None = None,
                      after: int = 0, limit: int = 100) -> list[ResultRecord]:
        await self.eval_run(eval_run_id)
        return await self.store.results(eval_run_id, status=status, after=after,
                                        limit=min(limit, MAX_PAGE))

    async def cancel_run(self, eval_run_id: str) -> EvalRunRecord:
        """Cancel the eval run: its queued cases are not run, its forks under way are
        cancelled; it ends ``cancelled`` once they have."""
        run = await self.eval_run(eval_run_id)
        if run.ended:
            return run
        await self.store.set_eval_run(eval_run_id, status="cancelling")
        await self._cancel_forks(eval_run_id)
        self._wake.set()
        return await self.eval_run(eval_run_id)

    async def _cancel_forks(self, eval_run_id: str) -> None:
        for result in await self.store.cancel_eval_run(eval_run_id):
            if result.run_id is not None:
                with contextlib.suppress(NotFound):
                    await self.runs.cancel(result.run_id, "the eval run was cancelled")

    async def delete_run(self, eval_run_id: str) -> None:
        """Delete an eval run and its results (cancelled first when under way)."""
        run = await self.eval_run(eval_run_id)
        if not run.ended:
            await self._cancel_forks(eval_run_id)
        suite = await self.store.get_suite(run.suite_id)
        kept = await self.store.delete_eval_run(eval_run_id)
        if suite is not None:
            await self._forget(suite.agent, kept)

    async def _forget(self, agent: str, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(NotFound):
                await self.delete_session(agent, key)

    async def junit(self, eval_run_id: str) -> bytes:
        run = await self.eval_run(eval_run_id)
        suite = await self.suite(run.suite_id)
        return junit_xml(suite, run, await self._all_results(eval_run_id))

    async def export_results(self, eval_run_id: str) -> AsyncIterator[bytes]:
        """The eval run as JSON lines: a header (the run, its summary), then each
        case's result."""
        run = await self.eval_run(eval_run_id)
        suite = await self.suite(run.suite_id)
        yield orjson.dumps({"format": "agentd.eval/1", "type": "eval_run",
                            "suite": suite.name, "agent": suite.agent,
                            **run.to_api()}) + b"\n"
        after = 0
        while True:
            page = await self.store.results(eval_run_id, after=after, limit=500)
            for result in page:
                yield orjson.dumps({"type": "result", **result.to_api()}) + b"\n"
            if len(page) < 500:
                return
            after = page[-1].n

    async def _all_results(self, eval_run_id: str) -> list[ResultRecord]:
        out: list[ResultRecord] = []
        while True:
            page = await self.store.results(eval_run_id, after=out[-1].n if out else 0,
                                            limit=MAX_PAGE)
            out.extend(page)
            if len(page) < MAX_PAGE:
                return out

    # -- the queue ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="evals")

    async def stop(self) -> None:
        """Stop taking cases; those under way are left to finish after a restart (their
        forks' runs are the supervisor's and resume like any run)."""
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        await self.judge.close()

    @property
    def busy(self) -> int:
        """Cases under way on this node."""
        return len(self._inflight)

    def nudge(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        try:
            await self._recover()
        except Exception:
            log.exception("evals: the cases under way could not be picked up again")
        while True:
            self._wake.clear()
            try:
                await self._admit()
            except Exception:
                log.exception("evals: cases could not be admitted; trying again")
            await wait_event(self.clock, self._wake, self.config.poll_s)

    async def _recover(self) -> None:
        """After a restart: this node's cases under way go on (their forks' runs resume
        by themselves), those whose fork had not started are queued again."""
        for result in await self.store.running_results(node=self.node_id):
            run = await self.store.get_eval_run(result.eval_run_id)
            if run is None:
                continue
            if result.run_id is None:
                await self._discard_scratch(run, result)
                await self.store.requeue_result(run.id, result.case_id)
            else:
                self._spawn(run, result)

    async def _discard_scratch(self, run: EvalRunRecord, result: ResultRecord) -> None:
        """A scratch session seeded for a fork that was never sent (a crash between)."""
        suite = await self.store.get_suite(run.suite_id)
        if suite is not None:
            await self._forget(suite.agent, [self._key(run.id, result.case_id)])

    @staticmethod
    def _key(eval_run_id: str, case_id: str) -> str:
        return f"fork:{eval_run_id}:{case_id}"

    async def _admit(self) -> None:
        """Claim as many queued cases as the bounds leave room for, and end the eval
        runs that have none left."""
        open_runs = await self.store.open_eval_runs()
        if not open_runs:
            return  # (one indexed read a poll while no eval runs: nothing else)
        per_run = Counter(run_id for run_id, _ in self._inflight)
        free = {r.id: r.concurrency - per_run[r.id] for r in open_runs
                if r.status != "cancelling"}
        room = self.config.concurrency - len(self._inflight)
        claimed = await self.store.claim_results(self.node_id, free, room) if room > 0 \
            else []
        by_id = {r.id: r for r in open_runs}
        claimed += await self._left_by_others(by_id)
        for result in claimed:
            run = by_id[result.eval_run_id]
            if run.status == "queued":
                await self.store.set_eval_run(run.id, status="running",
                                              only_from=("queued",))
            self._spawn(run, result)
        for run in open_runs:
            if not any(k[0] == run.id for k in self._inflight):
                await self._maybe_end(run.id)

    async def _left_by_others(self, runs: Mapping[str, EvalRunRecord]
                              ) -> list[ResultRecord]:
        """Cases another node claimed and left (on a store nodes share: it died): one
        never forked a while after its claim is queued again; one whose fork's run
        ended long enough ago for its grading to be done is taken over here (its grades
        are written once whoever writes first: :meth:`Store.finish_result`)."""
        now = self.clock.time()
        patience = self.config.grader_timeout_s * 2 + self.config.poll_s * 4
        found = await self.store.stale_results(self.node_id, claimed_before=now - patience,
                                               finished_before=now - patience)
        taken = []
        for result in found:
            if result.eval_run_id not in runs or (result.eval_run_id,
                                                  result.case_id) in self._inflight:
                continue
            if result.run_id is None:
                await self._discard_scratch(runs[result.eval_run_id], result)
                await self.store.requeue_result(result.eval_run_id, result.case_id)
            elif await self.store.take_result(result, self.node_id):
                taken.append(result)
        return taken

    def _spawn(self, run: EvalRunRecord, result: ResultRecord) -> None:
        key = (run.id, result.case_id)
        if key in self._inflight:
            return
        task = asyncio.create_task(self._case(run, result), name=f"eval {key[1]}")
        self._inflight[key] = task

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(key, None)
            self._wake.set()

        task.add_done_callback(done)

    async def _maybe_end(self, eval_run_id: str) -> None:
        """End the eval run once none of its cases is open: its summary, compared with
        the suite's last run."""
        run = await self.store.get_eval_run(eval_run_id)
        if run is None or run.ended or any(run.counts.get(s) for s in OPEN):
            return
        results = await self._all_results(eval_run_id)
        previous_run = await self.store.previous_eval_run(run.suite_id, run.n)
        previous = (await self._all_results(previous_run.id)
                    if previous_run is not None else None)
        summary = summarize(results, previous, run.candidate.get("gate") or {},
                            previous_run=previous_run)
        status = "cancelled" if run.status == "cancelling" else "completed"
        if await self.store.set_eval_run(eval_run_id, status=status, summary=summary,
                                         only_from=("queued", "running", "cancelling")):
            event = self._ended.pop(eval_run_id, None)
            if event is not None:
                event.set()

    # -- one case ----------------------------------------------------------------------

    async def _case(self, run: EvalRunRecord, result: ResultRecord) -> None:
        key = self._key(run.id, result.case_id)
        try:
            status, detail, usage = await self._run_case(run, result, key)
        except asyncio.CancelledError:
            raise
        except AgentdError as exc:
            # (the same shape as a run's error: {code, message, retryable, details?})
            status, detail, usage = "errored", {"error": exc.to_dict()}, []
        except Exception as exc:  # a bug must not leave the case running for ever
            log.exception("evals: case %s of eval run %s failed", result.case_id, run.id)
            status, detail, usage = ("errored", {"error": AgentdError(
                f"internal error: {type(exc).__name__}").to_dict()}, [])
        current = await self.store.get_eval_run(run.id)
        if current is not None and current.status == "cancelling":
            status = "cancelled"
        await self.store.finish_result(run.id, result.case_id, status=status, detail=detail,
                                       usage=usage, kept=run.keep_sessions)
        if not run.keep_sessions:
            suite = await self.store.get_suite(run.suite_id)
            if suite is not None:
                await self._forget(suite.agent, [key])

    async def _run_case(self, run: EvalRunRecord, result: ResultRecord, key: str
                        ) -> tuple[str, dict[str, Any], list[UsageCharge]]:
        case = await self.store.get_case(result.case_id)
        suite = await self.store.get_suite(run.suite_id)
        if case is None or suite is None or case.input is None or case.baseline is None:
            return "errored", {"error": NotFound("the case was deleted before it ran",
                                                 code="case_not_found").to_dict()}, []
        agent = await self.agents.get(suite.agent)
        candidate = run.candidate
        fork_id = await self._fork(run, result, case, agent, candidate, key)
        report = await self.forks.report(fork_id, wait=True)
        fork = report["fork"]
        observed = Observed(status=fork["status"], output=fork["output"],
                            error=fork["error"], steps=int(fork["steps"] or 0),
                            usage=fork["usage"] or {}, tool_calls=fork["tool_calls"])
        grades, usage = await self._grades(case, observed, agent, judge=True)
        baseline = case.baseline["run"]
        calls = list(report["original"]["tool_calls"])
        seen = Observed(status=str(baseline.get("status")), output=baseline.get("output"),
                        error=baseline.get("error"), steps=int(baseline.get("steps") or 0),
                        usage=report["original"]["usage_from_step"] if case.from_step > 1
                        else baseline.get("usage") or {}, tool_calls=calls)
        recorded, _ = await self._grades(case, seen, agent, judge=False)
        judged = [g for g in recorded if g.kind != "rubric"]
        status = verdict(grades, observed.status)
        error = observed.error or {}
        if error.get("code") == "budget_exceeded" and (
                error.get("details") or {}).get("scope") in ("agent", "tenant"):
            # (not the candidate's doing: the agent's or tenant's money is spent)
            status = "errored"
        detail = {
            "fork_id": fork_id, "run_status": observed.status, "output": observed.output,
            "error": observed.error, "steps": observed.steps, "usage": observed.usage,
            "grades": [g.to_api() for g in grades],
            "judge_usage": _sum_usage(usage),
            "baseline": {"status": verdict(judged, seen.status),
                         "run_status": seen.status, "output": seen.output,
                         "steps": seen.steps, "usage": seen.usage,
                         "grades": [g.to_api() for g in recorded]},
            "divergence": {k: report[k] for k in ("first_divergence", "tool_calls_added",
                                                  "tool_calls_removed", "unrecorded_calls",
                                                  "same_output")},
        }
        return status, detail, usage

    async def _fork(self, run: EvalRunRecord, result: ResultRecord, case: CaseRecord,
                    agent: AgentRecord, candidate: Mapping[str, Any], key: str) -> str:
        """The case's fork: started now, or the one started before a restart."""
        if result.run_id is not None:
            fork = await self.store.fork_of_run(result.run_id)
            if fork is None:
                raise AgentdError("the case's fork is gone (its session was deleted)",
                                  code="fork_unsupported")
            return fork.id
        assert case.input is not None
        request = ForkRequest(from_step=case.from_step, model=candidate.get("model"),
                              instructions=candidate.get("instructions"),
                              settings=candidate.get("settings"),
                              tools=candidate.get("tools") or "recorded")
        for attempt in range(2):
            try:
                fork_id, _ = await self.forks.start_case(
                    agent.name, key, history=case.input["history"],
                    policy=case.input.get("policy"), source=fork_source(case),
                    request=request, priority=run.priority,
                    workspace=case.input.get("workspace"),
                    also=self.store.link_result(run.id, case.id, key))
                return fork_id
            except SessionExists:
                if attempt:
                    raise
                await self._forget(agent.name, [key])  # (seeded before a crash)
        raise AssertionError("unreachable")

    async def _grades(self, case: CaseRecord, observed: Observed, agent: AgentRecord, *,
                      judge: bool) -> tuple[list[Grade], list[UsageCharge]]:
        """Every grader's grade of ``observed``, each within the time limit; rubrics
        only when ``judge`` (else "not judged")."""
        assert case.baseline is not None and case.input is not None
        grades: list[Grade] = []
        usage: list[UsageCharge] = []
        expected = case.baseline["run"].get("output")
        task = str(case.input["message"].get("content", ""))
        for raw in case.graders:
            kind = str(raw.get("kind"))
            if kind == "rubric" and not judge:
                grades.append(Grade(kind=kind, name=raw.get("name"), passed=None,
                                    reason="not judged"))
                continue
            try:
                if kind == "rubric":
                    got, charge = await self._bounded(self.judge.grade(
                        agent, raw, observed, task))
                    if charge is not None:
                        usage.append(charge)
                else:
                    got = await self._bounded(grade(raw, observed, baseline_output=expected))
            except asyncio.CancelledError:
                raise
            except _TimedOut:
                got = Grade(kind=kind, name=raw.get("name"), passed=None, reason="",
                            error=f"the grader did not finish within "
                                  f"{self.config.grader_timeout_s:g}s")
            except Exception as exc:
                why = exc.message if isinstance(exc, AgentdError) else str(exc)
                got = Grade(kind=kind, name=raw.get("name"), passed=None, reason="",
                            error=f"{type(exc).__name__}: {why}"[:500])
            grades.append(got)
        return grades, usage

    async def _bounded(self, work: Awaitable[T]) -> T:
        """``work``, or :class:`_TimedOut` once ``grader_timeout_s`` of the daemon's
        clock has passed."""
        task = asyncio.ensure_future(work)
        late = False

        def expire() -> None:
            nonlocal late
            late = True
            task.cancel()

        timer = self.clock.call_later(self.config.grader_timeout_s, expire)
        try:
            return await task
        except asyncio.CancelledError:
            if late and not _cancelling():
                raise _TimedOut() from None
            raise
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()


def _cancelling() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def _sum_usage(charges: Sequence[UsageCharge]) -> dict[str, Any] | None:
    if not charges:
        return None
    return {"input_tokens": sum(c.input_tokens for c in charges),
            "output_tokens": sum(c.output_tokens for c in charges),
            "cost_usd": round(sum(c.cost_usd for c in charges), 6),
            "calls": sum(c.calls for c in charges)}

