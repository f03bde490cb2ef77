"""The trace follower's reads, on both stores: a batch of runs with their agent, session
and events in two queries; what was exported, after a watermark."""

from __future__ import annotations

from agentd.assembly import Runtime


async def test_a_batch_of_runs_with_their_events(runtime: Runtime) -> None:
    await runtime.create_agent(name="a")
    ids = []
    for i in range(3):
        sent = await runtime.send("a", f"k{i}", f"hi {i}")
        await runtime.wait(sent.run.id)
        ids.append(sent.run.id)
    again = await runtime.send("a", "k0", "again")  # a second run of one session
    await runtime.wait(again.run.id)
    found = await runtime.store.runs_for_traces([*ids, again.run.id, "r_gone", ids[0]])
    assert sorted(found) == sorted([*ids, again.run.id])
    for run_id, (run, agent, key, events) in found.items():
        assert run.id == run_id and agent == "a" and key.startswith("k")
        assert [e.kind for e in events] == ["message.user", "run.queued", "run.started",
                                            "message.assistant", "run.completed"]
        assert {e.run_id for e in events} == {run_id}
        assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert found[again.run.id][3][0].data["content"] == "again"
    assert await runtime.store.runs_for_traces([]) == {}


async def test_exported_runs_are_not_found_again(runtime: Runtime) -> None:
    since = await runtime.store.trace_watermark()
    await runtime.create_agent(name="a")
    sent = await runtime.send("a", "k", "hi")
    run = await runtime.wait(sent.run.id)
    assert [r.id for r in await runtime.store.unexported_runs(since)] == [run.id]
    await runtime.store.mark_exported([(run.id, run.created_at)])
    await runtime.store.mark_exported([(run.id, run.created_at)])  # twice: no error
    assert await runtime.store.unexported_runs(since) == []
    moved = await runtime.store.advance_trace_watermark(run.created_at + 1)
    assert moved == run.created_at + 1 == await runtime.store.trace_watermark()
    assert await runtime.store.advance_trace_watermark(0) == moved  # never back
