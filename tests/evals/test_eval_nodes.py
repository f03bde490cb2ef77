"""Cases another node claimed and left (it died; on a store nodes share): one it never
forked is queued again and run here, one whose fork ended is graded here from that
fork, not forked again. The node's death is played by the store (its claims written
as that node's); the time that must pass is the daemon's FakeClock. SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.conftest import settings_in

from agentd.assembly import Runtime
from agentd.config import EvalsConfig
from agentd.evals.cases import fork_source
from agentd.runtime.fork import ForkRequest
from agentd.testing import FakeClock


@pytest.fixture
async def clocked(tmp_path: Path, store_url: str) -> AsyncIterator[tuple[Runtime, FakeClock]]:
    settings = settings_in(tmp_path)
    settings.database_url = store_url
    settings.evals = EvalsConfig(grader_timeout_s=10.0, poll_s=5.0)
    clock = FakeClock()
    rt = await Runtime.open(settings, clock=clock)
    yield rt, clock
    await rt.close()


async def test_cases_a_dead_node_left_are_taken_over(
        clocked: tuple[Runtime, FakeClock]) -> None:
    runtime, clock = clocked
    store = runtime.store
    await runtime.create_agent(name="a")
    sent = await runtime.send("a", "s", "hello")
    run = await runtime.wait(sent.run.id)
    suite = await runtime.evals.create_suite("a", "nodes")
    for _ in range(2):
        await runtime.evals.add_from_run(suite.id, run.id)
    # The other node's eval run: written to the store, claimed by it at once.
    eval_run = await store.create_eval_run(suite.id, candidate={"tools": "recorded"},
                                           priority="batch", concurrency=2,
                                           keep_sessions=False)
    never, forked = await store.claim_results("dead-node", {eval_run.id: 2}, 2)
    # It forked the second case, then died; the fork's run ran to its end (another
    # node drives a run whose lease lapsed: here, this one).
    case = await store.get_case(forked.case_id)
    assert case is not None and case.input is not None
    key = f"fork:{eval_run.id}:{case.id}"
    _, fork_run = await runtime.forks.start_case(
        "a", key, history=case.input["history"], policy=case.input.get("policy"),
        source=fork_source(case), request=ForkRequest(from_step=1), priority="batch",
        also=store.link_result(eval_run.id, case.id, key))
    assert (await runtime.wait(fork_run.id)).status == "completed"
    await runtime.wait_idle()
    # Not yet: the other node may still be grading.
    assert (await runtime.evals.eval_run(eval_run.id)).counts == {"running": 2}
    patience = 10.0 * 2 + 5.0 * 4
    await clock.advance(patience + 5.0)
    # (a look at the queue after the time moved, whatever the loop was doing while it
    # did: the polls the advance fired may have read the time before it ended)
    runtime.evals.nudge()
    done = await runtime.evals.wait(eval_run.id)
    assert done.status == "completed" and done.counts == {"passed": 2}, done.counts
    results = {r.case_id: r for r in await store.results(eval_run.id)}
    assert results[forked.case_id].run_id == fork_run.id  # graded from its fork
    assert results[never.case_id].run_id not in (None, fork_run.id)
    assert {r.claimed_by for r in results.values()} == {runtime.settings.node_id}
