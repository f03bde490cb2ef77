"""Evaluations' rows (:mod:`agentd.evals`): suites, their cases, eval runs and their
results; the :class:`EvalStore` mixin :class:`agentd.store.Store` inherits.

**The queue is the results table.** Starting an eval run writes the run and one
``queued`` result per case of its suite in one transaction (``INSERT ... SELECT``: a
suite of 10,000 cases is one statement). A node *claims* a queued result (a
conditional update: ``queued`` -> ``running``, naming the node; a second node's update
of the same row changes nothing) before it forks the case; the fork's run id is
written in the transaction that accepts the fork's message (:meth:`EvalStore.
link_result`), and the outcome only while the result is still ``running``
(:meth:`EvalStore.finish_result`, with the judges' usage charged to the ledger in the
same transaction). So a restart finds every case queued, running with its fork's
run, or finished: nothing is run twice, nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentd.clock import Clock
from agentd.errors import Conflict, InvalidInput
from agentd.store import _usage
from agentd.store.engine import Engine, Tx
from agentd.store.log import Accepted
from agentd.store.records import UsageCharge, iso
from agentd.store.rows import dumps, new_id

__all__ = ["OPEN", "RESULT_STATUSES", "CaseRecord", "EvalRunRecord", "EvalStore",
           "ResultRecord", "SuiteRecord"]

#: What a case of an eval run can be: waiting, under way, or how it ended.
RESULT_STATUSES = ("queued", "running", "passed", "failed", "errored", "cancelled")
#: A result not ended yet.
OPEN = ("queued", "running")

_SUITE_COLS = ("s.id, s.agent_id, a.name, s.name, s.description, s.gate, s.created_at, "
               "s.updated_at, (SELECT COUNT(*) FROM eval_cases c WHERE c.suite_id = s.id)")
_CASE_COLS = ("id, suite_id, n, name, source, input, baseline, graders, from_step, "
              "created_at")
_CASE_BRIEF = "id, suite_id, n, name, source, NULL, NULL, graders, from_step, created_at"
_RUN_COLS = ("id, suite_id, n, status, candidate, priority, concurrency, keep_sessions, "
             "cases, summary, created_at, started_at, finished_at")
_RESULT_COLS = ("eval_run_id, case_id, n, case_name, status, run_id, session_key, "
                "claimed_by, claimed_at, detail, finished_at")


def _json(value: Any) -> Any:
    return None if value is None else orjson.loads(value)


@dataclass(kw_only=True, slots=True)
class SuiteRecord:
    id: str
    agent_id: str
    agent: str
    name: str
    description: str
    gate: dict[str, Any]
    created_at: float
    updated_at: float
    cases: int = 0

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "name": self.name,
                "description": self.description, "gate": self.gate, "cases": self.cases,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}


def _suite(row: Sequence[Any]) -> SuiteRecord:
    return SuiteRecord(id=str(row[0]), agent_id=str(row[1]), agent=str(row[2]),
                       name=str(row[3]), description=str(row[4]), gate=orjson.loads(row[5]),
                       created_at=float(row[6]), updated_at=float(row[7]),
                       cases=int(row[8] or 0))


@dataclass(kw_only=True, slots=True)
class CaseRecord:
    """A case: what it came from (``source``), what the candidate is given
    (``input``: the context before the run, its message, the session's policy), what
    the original did (``baseline``: its record and its events) and its graders.
    ``input`` and ``baseline`` are None when read in brief."""

    id: str
    suite_id: str
    n: int
    name: str
    source: dict[str, Any]
    input: dict[str, Any] | None
    baseline: dict[str, Any] | None
    graders: list[dict[str, Any]]
    from_step: int
    created_at: float

    def to_api(self) -> dict[str, Any]:
        out = {"id": self.id, "suite_id": self.suite_id, "n": self.n, "name": self.name,
               "source": self.source, "graders": self.graders,
               "from_step": self.from_step, "created_at": iso(self.created_at)}
        source = dict(self.source)
        out["source"] = {k: v for k, v in source.items() if k != "baseline"}
        out["baseline"] = source.get("baseline")
        return out


def _case(row: Sequence[Any]) -> CaseRecord:
    return CaseRecord(id=str(row[0]), suite_id=str(row[1]), n=int(row[2]), name=str(row[3]),
                      source=orjson.loads(row[4]), input=_json(row[5]),
                      baseline=_json(row[6]), graders=orjson.loads(row[7]),
                      from_step=int(row[8]), created_at=float(row[9]))


@dataclass(kw_only=True, slots=True)
class EvalRunRecord:
    id: str
    suite_id: str
    n: int
    status: str
    candidate: dict[str, Any]
    priority: str
    concurrency: int
    keep_sessions: bool
    cases: int
    summary: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    #: Results by status (read with the run).
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "cancelled")

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "suite_id": self.suite_id, "n": self.n,
                "status": self.status, "candidate": self.candidate,
                "priority": self.priority, "concurrency": self.concurrency,
                "keep_sessions": self.keep_sessions, "cases": self.cases,
                "counts": {s: self.counts.get(s, 0) for s in RESULT_STATUSES},
                "summary": self.summary, "created_at": iso(self.created_at),
                "started_at": iso(self.started_at), "finished_at": iso(self.finished_at)}


def _run(row: Sequence[Any]) -> EvalRunRecord:
    return EvalRunRecord(id=str(row[0]), suite_id=str(row[1]), n=int(row[2]),
                         status=str(row[3]), candidate=orjson.loads(row[4]),
                         priority=str(row[5]), concurrency=int(row[6]),
                         keep_sessions=bool(row[7]), cases=int(row[8]),
                         summary=_json(row[9]), created_at=float(row[10]),
                         started_at=None if row[11] is None else float(row[11]),
                         finished_at=None if row[12] is None else float(row[12]))


@dataclass(kw_only=True, slots=True)
class ResultRecord:
    eval_run_id: str
    case_id: str
    n: int
    case_name: str
    status: str
    run_id: str | None
    session_key: str | None
    claimed_by: str | None
    claimed_at: float | None
    detail: dict[str, Any] | None
    finished_at: float | None

    def to_api(self) -> dict[str, Any]:
        return {**(self.detail or {}), "eval_run_id": self.eval_run_id,
                "case_id": self.case_id, "n": self.n, "case": self.case_name,
                "status": self.status, "run_id": self.run_id, "session": self.session_key,
                "finished_at": iso(self.finished_at)}


def _result(row: Sequence[Any]) -> ResultRecord:
    return ResultRecord(eval_run_id=str(row[0]), case_id=str(row[1]), n=int(row[2]),
                        case_name=str(row[3]), status=str(row[4]),
                        run_id=None if row[5] is None else str(row[5]),
                        session_key=None if row[6] is None else str(row[6]),
                        claimed_by=None if row[7] is None else str(row[7]),
                        claimed_at=None if row[8] is None else float(row[8]),
                        detail=_json(row[9]),
                        finished_at=None if row[10] is None else float(row[10]))


class EvalStore:
    engine: Engine
    clock: Clock

    # -- suites ------------------------------------------------------------------------

    async def create_suite(self, agent_id: str, name: str, *, description: str = "",
                           gate: Mapping[str, Any] | None = None) -> SuiteRecord:
        """A new suite of the agent (Conflict ``suite_exists`` when the agent has one
        of that name)."""
        now, suite_id = self.clock.time(), new_id("es")

        def op(tx: Tx) -> SuiteRecord:
            tx.execute("INSERT INTO eval_suites (id, agent_id, name, description, gate, "
                       "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                       "(agent_id, name) DO NOTHING",
                       (suite_id, agent_id, name, description, dumps(dict(gate or {})),
                        now, now))
            if tx.rowcount == 0:
                raise Conflict(f"the agent already has a suite named {name!r}",
                               code="suite_exists")
            row = tx.one(f"SELECT {_SUITE_COLS} FROM eval_suites s JOIN agents a ON "
                         "a.id = s.agent_id WHERE s.id = ?", (suite_id,))
            assert row is not None
            return _suite(row)

        return await self.engine.write(op)

    async def suites(self, *, agent_ids: Sequence[str] | None = None,
                     name: str | None = None) -> list[SuiteRecord]:
        """Suites by agent and name (``agent_ids``: only these agents')."""
        where, params = ["1 = 1"], list[Any]()
        if agent_ids is not None:
            if not agent_ids:
                return []
            where.append(f"s.agent_id IN ({', '.join('?' * len(agent_ids))})")
            params.extend(agent_ids)
        if name is not None:
            where.append("s.name = ?")
            params.append(name)
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_SUITE_COLS} FROM eval_suites s JOIN agents a ON a.id = s.agent_id "
            f"WHERE {' AND '.join(where)} ORDER BY a.name, s.name", params))
        return [_suite(r) for r in rows]

    async def get_suite(self, suite_id: str) -> SuiteRecord | None:
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_SUITE_COLS} FROM eval_suites s JOIN agents a ON a.id = s.agent_id "
            "WHERE s.id = ?", (suite_id,)))
        return None if row is None else _suite(row)

    async def delete_suite(self, suite_id: str) -> list[tuple[str, str]]:
        """Delete the suite with its cases, runs and results; the (agent id, session
        key) of every scratch session its runs kept."""
        def op(tx: Tx) -> list[tuple[str, str]]:
            kept = tx.all(
                "SELECT s.agent_id, r.session_key FROM eval_results r JOIN eval_runs e ON "
                "e.id = r.eval_run_id JOIN eval_suites s ON s.id = e.suite_id WHERE "
                "e.suite_id = ? AND r.session_key IS NOT NULL", (suite_id,))
            tx.execute("DELETE FROM eval_suites WHERE id = ?", (suite_id,))
            return [(str(a), str(k)) for a, k in kept]

        return await self.engine.write(op)

    # -- cases -------------------------------------------------------------------------

    async def add_cases(self, suite_id: str, cases: Sequence[Mapping[str, Any]], *,
                        max_cases: int) -> list[CaseRecord]:
        """Append cases (``name``, ``source``, ``input``, ``baseline``, ``graders``,
        ``from_step``) to the suite, numbered on from its last; refused (422
        ``suite_full``) past ``max_cases``."""
        now = self.clock.time()
        ids = [new_id("ec") for _ in cases]

        def op(tx: Tx) -> list[CaseRecord]:
            row = tx.one("SELECT COUNT(*), COALESCE(MAX(n), 0) FROM eval_cases WHERE "
                         "suite_id = ?", (suite_id,))
            count, last = (int(row[0]), int(row[1])) if row else (0, 0)
            if count + len(cases) > max_cases:
                raise InvalidInput(f"the suite holds {count} cases; {len(cases)} more would "
                                   f"pass its limit of {max_cases} ([evals] max_cases)",
                                   code="suite_full")
            tx.executemany(
                f"INSERT INTO eval_cases ({_CASE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(case_id, suite_id, last + i, str(c["name"]), dumps(c["source"]),
                  dumps(c["input"]), dumps(c["baseline"]), dumps(c["graders"]),
                  int(c.get("from_step") or 1), now)
                 for i, (case_id, c) in enumerate(zip(ids, cases, strict=True), start=1)])
            tx.execute("UPDATE eval_suites SET updated_at = ? WHERE id = ?", (now, suite_id))
            return [_case(r) for r in tx.all(
                f"SELECT {_CASE_BRIEF} FROM eval_cases WHERE suite_id = ? AND n > ? "
                "ORDER BY n", (suite_id, last))]

        return await self.engine.write(op)

    async def cases(self, suite_id: str, *, after: int = 0, limit: int = 100,
                    full: bool = False) -> list[CaseRecord]:
        """The suite's cases numbered after ``after``, in order (``full``: with their
        input and baseline)."""
        cols = _CASE_COLS if full else _CASE_BRIEF
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {cols} FROM eval_cases WHERE suite_id = ? AND n > ? ORDER BY n "
            "LIMIT ?", (suite_id, after, limit)))
        return [_case(r) for r in rows]

    async def get_case(self, case_id: str) -> CaseRecord | None:
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_CASE_COLS} FROM eval_cases WHERE id = ?", (case_id,)))
        return None if row is None else _case(row)

    async def delete_case(self, suite_id: str, case_id: str) -> bool:
        def op(tx: Tx) -> bool:
            tx.execute("DELETE FROM eval_cases WHERE suite_id = ? AND id = ?",
                       (suite_id, case_id))
            return tx.rowcount > 0

        return await self.engine.write(op)

    # -- eval runs ---------------------------------------------------------------------

    async def create_eval_run(self, suite_id: str, *, candidate: Mapping[str, Any],
                              priority: str, concurrency: int, keep_sessions: bool
                              ) -> EvalRunRecord:
        """A new eval run of the suite with a ``queued`` result per case, in one
        transaction (422 ``suite_empty`` for a suite without cases)."""
        now, run_id = self.clock.time(), new_id("er")

        def op(tx: Tx) -> EvalRunRecord:
            row = tx.one("SELECT COALESCE(MAX(n), 0) FROM eval_runs WHERE suite_id = ?",
                         (suite_id,))
            n = (int(row[0]) if row else 0) + 1
            tx.execute(f"INSERT INTO eval_runs ({_RUN_COLS}) VALUES (?, ?, ?, 'queued', ?, "
                       "?, ?, ?, 0, NULL, ?, NULL, NULL)",
                       (run_id, suite_id, n, dumps(dict(candidate)), priority, concurrency,
                        1 if keep_sessions else 0, now))
            tx.execute("INSERT INTO eval_results (eval_run_id, case_id, n, case_name, "
                       "status) SELECT ?, id, n, name, 'queued' FROM eval_cases WHERE "
                       "suite_id = ?", (run_id, suite_id))
            cases = tx.rowcount
            if cases <= 0:
                raise InvalidInput("the suite has no cases to run", code="suite_empty")
            tx.execute("UPDATE eval_runs SET cases = ? WHERE id = ?", (cases, run_id))
            got = _get_run(tx, run_id)
            assert got is not None
            return got

        return await self.engine.write(op)

    async def get_eval_run(self, eval_run_id: str) -> EvalRunRecord | None:
        return await self.engine.read(lambda tx: _get_run(tx, eval_run_id))

    async def eval_runs(self, suite_id: str, *, limit: int = 50) -> list[EvalRunRecord]:
        """The suite's eval runs, newest first."""
        def op(tx: Tx) -> list[EvalRunRecord]:
            rows = tx.all(f"SELECT {_RUN_COLS} FROM eval_runs WHERE suite_id = ? ORDER BY "
                          "n DESC LIMIT ?", (suite_id, limit))
            return [_counted(tx, _run(r)) for r in rows]

        return await self.engine.read(op)

    async def previous_eval_run(self, suite_id: str, n: int) -> EvalRunRecord | None:
        """The suite's last completed eval run before the ``n`` th."""
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_RUN_COLS} FROM eval_runs WHERE suite_id = ? AND n < ? AND status = "
            "'completed' ORDER BY n DESC LIMIT 1", (suite_id, n)))
        return None if row is None else _run(row)

    async def open_eval_runs(self) -> list[EvalRunRecord]:
        """Eval runs not ended (``cancelling`` ones too), oldest first."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_RUN_COLS} FROM eval_runs WHERE status IN ('queued', 'running', "
            "'cancelling') ORDER BY created_at, id"))
        return [_run(r) for r in rows]

    async def set_eval_run(self, eval_run_id: str, *, status: str,
                           summary: Mapping[str, Any] | None = None,
                           only_from: Sequence[str] = ("queued", "running")) -> bool:
        """Move the eval run to ``status`` (with its ``summary``) if it is in one of
        ``only_from``; whether it moved."""
        now = self.clock.time()

        def op(tx: Tx) -> bool:
            marks = ", ".join("?" * len(only_from))
            started = "COALESCE(started_at, ?)"
            finished = "?" if status in ("completed", "cancelled") else "finished_at"
            params: list[Any] = [status, now]
            if finished == "?":
                params.append(now)
            tx.execute(f"UPDATE eval_runs SET status = ?, started_at = {started}, "
                       f"finished_at = {finished}, summary = COALESCE(?, summary) "
                       f"WHERE id = ? AND status IN ({marks})",
                       (*params, None if summary is None else dumps(dict(summary)),
                        eval_run_id, *only_from))
            return tx.rowcount > 0

        return await self.engine.write(op)

    async def cancel_eval_run(self, eval_run_id: str) -> list[ResultRecord]:
        """Cancel the eval run's queued cases; its running ones (to cancel their
        forks' runs)."""
        now = self.clock.time()

        def op(tx: Tx) -> list[ResultRecord]:
            tx.execute("UPDATE eval_results SET status = 'cancelled', finished_at = ? "
                       "WHERE eval_run_id = ? AND status = 'queued'", (now, eval_run_id))
            return [_result(r) for r in tx.all(
                f"SELECT {_RESULT_COLS} FROM eval_results WHERE eval_run_id = ? AND "
                "status = 'running'", (eval_run_id,))]

        return await self.engine.write(op)

    async def delete_eval_run(self, eval_run_id: str) -> list[str]:
        """Delete the eval run and its results; the session keys its results kept."""
        def op(tx: Tx) -> list[str]:
            kept = tx.all("SELECT session_key FROM eval_results WHERE eval_run_id = ? AND "
                          "session_key IS NOT NULL", (eval_run_id,))
            tx.execute("DELETE FROM eval_runs WHERE id = ?", (eval_run_id,))
            return [str(k) for (k,) in kept]

        return await self.engine.write(op)

    # -- results -----------------------------------------------------------------------

    async def claim_results(self, node: str, free: Mapping[str, int], total: int
                            ) -> list[ResultRecord]:
        """Claim up to ``total`` queued results for ``node``: at most ``free[run]`` of
        each eval run named there, oldest eval run first, cases in order."""
        if total <= 0 or not free:
            return []
        now = self.clock.time()
        runs = [r for r, n in free.items() if n > 0]

        def op(tx: Tx) -> list[ResultRecord]:
            claimed: list[ResultRecord] = []
            for run in runs:
                want = min(free[run], total - len(claimed))
                if want <= 0:
                    break
                rows = tx.all("SELECT case_id FROM eval_results WHERE eval_run_id = ? AND "
                              "status = 'queued' ORDER BY n LIMIT ?", (run, want))
                for (case_id,) in rows:
                    tx.execute("UPDATE eval_results SET status = 'running', claimed_by = ?, "
                               "claimed_at = ? WHERE eval_run_id = ? AND case_id = ? AND "
                               "status = 'queued'", (node, now, run, case_id))
                    if tx.rowcount:
                        got = tx.one(f"SELECT {_RESULT_COLS} FROM eval_results WHERE "
                                     "eval_run_id = ? AND case_id = ?", (run, case_id))
                        assert got is not None
                        claimed.append(_result(got))
            return claimed

        return await self.engine.write(op)

    def link_result(self, eval_run_id: str, case_id: str, key: str
                    ) -> Callable[[Tx, Accepted], None]:
        """The ``also`` of a case's fork's ``accept_message``: the fork's run and
        session on the case's result, committed with them."""
        def link(tx: Tx, accepted: Accepted) -> None:
            tx.execute("UPDATE eval_results SET run_id = ?, session_key = ? WHERE "
                       "eval_run_id = ? AND case_id = ?",
                       (accepted.run.id, key, eval_run_id, case_id))

        return link

    async def finish_result(self, eval_run_id: str, case_id: str, *, status: str,
                            detail: Mapping[str, Any],
                            usage: Sequence[UsageCharge] = (), kept: bool = True) -> bool:
        """Record how a running case ended (its judges' ``usage`` charged with it);
        False when it was not running (finished or cancelled meanwhile: nothing is
        written). ``kept``: its scratch session stays (else its key is forgotten)."""
        now = self.clock.time()

        def op(tx: Tx) -> bool:
            tx.execute("UPDATE eval_results SET status = ?, detail = ?, finished_at = ?"
                       + ("" if kept else ", session_key = NULL")
                       + " WHERE eval_run_id = ? AND case_id = ? AND status = 'running'",
                       (status, dumps(dict(detail)), now, eval_run_id, case_id))
            if not tx.rowcount:
                return False
            for charge in usage:
                _usage.charge(tx, charge, now)
            return True

        return await self.engine.write(op)

    async def requeue_result(self, eval_run_id: str, case_id: str) -> None:
        """Put a running case back in the queue (its fork never started)."""
        await self.engine.write(lambda tx: tx.execute(
            "UPDATE eval_results SET status = 'queued', claimed_by = NULL, claimed_at = "
            "NULL, run_id = NULL, session_key = NULL WHERE eval_run_id = ? AND case_id = ? "
            "AND status = 'running'", (eval_run_id, case_id)))

    async def running_results(self, *, node: str | None = None) -> list[ResultRecord]:
        """Running results (claimed by ``node``, or by anyone)."""
        where, params = "status = 'running'", list[Any]()
        if node is not None:
            where += " AND claimed_by = ?"
            params.append(node)
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_RESULT_COLS} FROM eval_results WHERE {where} ORDER BY eval_run_id, n",
            params))
        return [_result(r) for r in rows]

    async def stale_results(self, node: str, *, claimed_before: float,
                            finished_before: float) -> list[ResultRecord]:
        """Results another node claimed and left (it died, on a store nodes share):
        running, and either never forked since ``claimed_before`` or whose fork's run
        ended before ``finished_before`` (or is gone) without the result written."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {', '.join('r.' + c.strip() for c in _RESULT_COLS.split(','))} "
            "FROM eval_results r LEFT JOIN runs u ON u.id = r.run_id "
            "WHERE r.status = 'running' AND r.claimed_by != ? AND ("
            "(r.run_id IS NULL AND r.claimed_at < ?) OR (r.run_id IS NOT NULL AND "
            "(u.id IS NULL OR (u.finished_at IS NOT NULL AND u.finished_at < ?)))) "
            "ORDER BY r.eval_run_id, r.n LIMIT 100", (node, claimed_before, finished_before)))
        return [_result(r) for r in rows]

    async def take_result(self, result: ResultRecord, node: str) -> bool:
        """Claim a result another node left (as :meth:`stale_results` found it):
        whether this node has it now (a second taker finds it claimed)."""
        now = self.clock.time()

        def op(tx: Tx) -> bool:
            tx.execute("UPDATE eval_results SET claimed_by = ?, claimed_at = ? WHERE "
                       "eval_run_id = ? AND case_id = ? AND status = 'running' AND "
                       "claimed_by = ?", (node, now, result.eval_run_id, result.case_id,
                                          result.claimed_by))
            return tx.rowcount > 0

        return await self.engine.write(op)

    async def results(self, eval_run_id: str, *, status: Sequence[str] | None = None,
                      after: int = 0, limit: int = 1000) -> list[ResultRecord]:
        """The eval run's results numbered after ``after``, in case order."""
        where, params = "eval_run_id = ? AND n > ?", [eval_run_id, after]
        if status:
            where += f" AND status IN ({', '.join('?' * len(status))})"
            params.extend(status)
        params.append(limit)
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_RESULT_COLS} FROM eval_results WHERE {where} ORDER BY n LIMIT ?",
            params))
        return [_result(r) for r in rows]


def _counted(tx: Tx, run: EvalRunRecord) -> EvalRunRecord:
    run.counts = {str(s): int(c) for s, c in tx.all(
        "SELECT status, COUNT(*) FROM eval_results WHERE eval_run_id = ? GROUP BY status",
        (run.id,))}
    return run


def _get_run(tx: Tx, eval_run_id: str) -> EvalRunRecord | None:
    row = tx.one(f"SELECT {_RUN_COLS} FROM eval_runs WHERE id = ?", (eval_run_id,))
    return None if row is None else _counted(tx, _run(row))
