"""The store's forks and evaluations (migration 27): a session made from a fork's copy,
suites and their cases, an eval run's queue of results claimed by one node at a time,
and the migration keeping what an older schema held. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from agentd.errors import Conflict, InvalidInput, SessionExists
from agentd.store import Store, open_store
from agentd.store import store as store_module
from agentd.store._schema import MIGRATIONS
from agentd.store.records import UsageCharge

VERSION = next(v for v, name, _ in MIGRATIONS if name == "forks and evaluations")


def _case(n: int) -> dict[str, object]:
    return {"name": f"case {n}", "source": {"run": f"r_{n}"},
            "input": {"history": [], "message": {"content": f"q{n}"}},
            "baseline": {"run": {"run_id": f"r_{n}", "output": f"a{n}"}, "events": []},
            "graders": [{"kind": "exact"}], "from_step": 1}


async def test_a_seeded_session_holds_the_copy_and_says_where_it_came_from(
        store: Store) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    history = [{"run_id": "r_old", "kind": "message.user", "data": {"content": "hi"},
                "at": 1.0},
               {"run_id": "r_old", "kind": "message.assistant", "data": {
                   "text": "hello", "tool_calls": [], "usage": None,
                   "finish_reason": "stop", "model": "scripted", "step": 1}, "at": 2.0}]
    made = await store.seed_session(agent.id, "fork:x", history, policy={"rules": []},
                                    forked={"agent": "a", "session": "old", "seq": 2})
    events = await store.read_events(made.id)
    assert [e.kind for e in events] == ["message.user", "message.assistant",
                                        "session.forked"]
    assert events[-1].data == {"agent": "a", "session": "old", "seq": 2,
                               "checkpoint": None, "copied_events": 2}
    assert made.policy == {"rules": []} and made.last_seq == 3
    with pytest.raises(SessionExists):
        await store.seed_session(agent.id, "fork:x", [], policy=None,
                                 forked={"agent": "a", "session": "old", "seq": 0})


async def test_an_eval_runs_queue_is_claimed_once_and_finished_once(store: Store) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={"tenant": "acme"})
    suite = await store.create_suite(agent.id, "s", gate={"min_pass_rate": 0.5})
    with pytest.raises(Conflict):
        await store.create_suite(agent.id, "s")
    with pytest.raises(InvalidInput) as empty:
        await store.create_eval_run(suite.id, candidate={}, priority="batch",
                                    concurrency=2, keep_sessions=False)
    assert empty.value.code == "suite_empty"
    cases = await store.add_cases(suite.id, [_case(n) for n in range(5)], max_cases=5)
    assert [c.n for c in cases] == [1, 2, 3, 4, 5]
    with pytest.raises(InvalidInput) as full:
        await store.add_cases(suite.id, [_case(9)], max_cases=5)
    assert full.value.code == "suite_full"
    run = await store.create_eval_run(suite.id, candidate={"model": None},
                                      priority="batch", concurrency=2, keep_sessions=False)
    assert run.cases == 5 and run.counts == {"queued": 5}
    # Two nodes claim: each case once, at most what each asks for.
    first = await store.claim_results("node-a", {run.id: 2}, 10)
    second = await store.claim_results("node-b", {run.id: 10}, 2)
    assert [r.n for r in first] == [1, 2] and [r.n for r in second] == [3, 4]
    assert {r.claimed_by for r in first} == {"node-a"}
    # A result is finished once; its judges' usage lands on the ledger with it.
    charge = UsageCharge(agent_id=agent.id, agent="a", tenant="acme", model="scripted",
                         input_tokens=7, output_tokens=3, cached_tokens=0, cost_usd=0.0)
    assert await store.finish_result(run.id, first[0].case_id, status="passed",
                                     detail={"output": "a1"}, usage=[charge])
    assert not await store.finish_result(run.id, first[0].case_id, status="failed",
                                         detail={}, usage=[charge])
    report = await store.usage_report(group_by=["agent"])
    assert report[0]["calls"] == 1 and report[0]["input_tokens"] == 7
    # A claimed case whose fork never started goes back to the queue.
    await store.requeue_result(run.id, first[1].case_id)
    running = await store.running_results(node="node-b")
    assert sorted(r.n for r in running) == [3, 4]
    cancelled = await store.cancel_eval_run(run.id)
    assert sorted(r.n for r in cancelled) == [3, 4]  # (still running: their forks)
    now = await store.get_eval_run(run.id)
    assert now is not None and now.counts == {"passed": 1, "running": 2, "cancelled": 2}
    # Deleting a case leaves past results; deleting the suite takes its runs.
    assert await store.delete_case(suite.id, cases[0].id)
    assert [r.case_name for r in await store.results(run.id, status=["passed"])] == [
        "case 0"]
    await store.delete_suite(suite.id)
    assert await store.get_eval_run(run.id) is None


@pytest.mark.empty_schema
async def test_the_eval_migration_keeps_older_data(store_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MIGRATIONS",
                        [m for m in MIGRATIONS if m[0] < VERSION])
    old = await open_store(store_url)
    try:
        agent = await old.create_agent(name="a", model="scripted", instructions="",
                                       tools=[], settings={})
        accepted = await old.accept_message(agent_id=agent.id, key="k", content="hi")
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    store = await open_store(store_url)
    try:
        assert await store.schema_version() >= VERSION
        assert (await store.get_run(accepted.run.id)).input == "hi"
        assert [e.kind for e in await store.read_events(accepted.session.id)] == [
            "message.user", "run.queued"]
        suite = await store.create_suite(agent.id, "after")
        assert (await store.suites(agent_ids=[agent.id]))[0].id == suite.id
        assert await store.fork_of_run(accepted.run.id) is None
    finally:
        await store.close()
