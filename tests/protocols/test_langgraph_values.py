"""The Agent Protocol door's thread values (what ``runs/wait`` answers with): kept as
JSON and extended turn by turn, from the run's own events when they carry on from the
fold, from the log otherwise; always what folding the whole log gives."""

from __future__ import annotations

from typing import Any

import orjson

from agentd.assembly import Runtime
from agentd.protocols.langgraph._values import ThreadValues, Values
from agentd.protocols.langgraph._wire import values_of
from agentd.runtime import SendResult
from agentd.store.records import live_events


def _json(values: Values | dict[str, Any]) -> Any:
    return orjson.loads(values.json() if isinstance(values, Values) else orjson.dumps(
        values))


async def _turn(runtime: Runtime, text: str) -> tuple[SendResult, Any]:
    sent = await runtime.send("poet", "lg:t", text)
    sub = runtime.subscribe(sent.session.id)
    await runtime.wait(sent.run.id)
    return sent, sub


async def _whole(runtime: Runtime, session_id: str) -> Any:
    """The values of the whole log folded at once (restores applied)."""
    return _json(values_of(live_events(await runtime.read_events(session_id))))


async def test_values_follow_the_log_with_and_without_a_read(runtime: Runtime) -> None:
    await runtime.create_agent(name="poet", model="scripted")
    values = ThreadValues()
    sent, sub = await _turn(runtime, "one")
    session_id = sent.session.id
    # Cold: nothing folded yet, so the run's events are not enough.
    assert values.after_run(session_id, sent.events, sub, sent.run.id) is None
    sub.close()
    assert _json(await values.of(runtime, session_id)) == await _whole(runtime, session_id)
    # Warm: the send's events and what the subscription got carry on from the fold.
    sent, sub = await _turn(runtime, "two")
    got = values.after_run(session_id, sent.events, sub, sent.run.id)
    sub.close()
    assert got is not None and _json(got) == await _whole(runtime, session_id)
    assert [m["content"] for m in _json(got)["messages"]] == [
        "one", "echo: one", "two", "echo: two"]
    # Something logged in between (another message, not followed): a gap, so a read.
    await runtime.wait((await runtime.send("poet", "lg:t", "aside")).run.id)
    sent, sub = await _turn(runtime, "three")
    assert values.after_run(session_id, sent.events, sub, sent.run.id) is None
    sub.close()
    assert _json(await values.of(runtime, session_id)) == await _whole(runtime, session_id)
    # A subscription that lagged (its buffer overflowed): a read.
    sent, sub = await _turn(runtime, "four")
    sub.lagged = True
    assert values.after_run(session_id, sent.events, sub, sent.run.id) is None
    sub.close()


async def test_the_cache_is_bounded_in_bytes(runtime: Runtime) -> None:
    await runtime.create_agent(name="poet", model="scripted")
    values = ThreadValues(max_bytes=1_000)
    sessions = []
    for key in ("lg:a", "lg:b", "lg:c"):
        sent = await runtime.send("poet", key, "x" * 200)
        await runtime.wait(sent.run.id)
        sessions.append(sent.session.id)
        await values.of(runtime, sent.session.id)
    assert values._bytes <= 1_000
    # The oldest were dropped; what is asked again is folded again, the same.
    for session_id in sessions:
        assert _json(await values.of(runtime, session_id)) == await _whole(runtime,
                                                                           session_id)


async def test_values_after_a_restore_as_of_a_seq_and_over_many_turns(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="poet", model="scripted")
    values = ThreadValues()
    sent, sub = await _turn(runtime, "kept")
    sub.close()
    session_id = sent.session.id
    await values.of(runtime, session_id)
    _, restore_to = await runtime.get_session("poet", "lg:t")
    sent, sub = await _turn(runtime, "undone")
    got = values.after_run(session_id, sent.events, sub, sent.run.id)
    sub.close()
    assert got is not None and [m["content"] for m in _json(got)["messages"]][-1] == (
        "echo: undone")
    await runtime.restore("poet", "lg:t", seq=restore_to.last_seq)
    # Warm: the restore is among the events after the fold: folded again.
    assert [m["content"] for m in _json(await values.of(runtime, session_id))[
        "messages"]] == ["kept", "echo: kept"]
    # The run after it: its own events carry on from the fold (with the restore).
    sent, sub = await _turn(runtime, "after")
    got = values.after_run(session_id, sent.events, sub, sent.run.id)
    sub.close()
    assert got is not None and _json(got) == await _whole(runtime, session_id)
    assert [m["content"] for m in _json(got)["messages"]] == [
        "kept", "echo: kept", "after", "echo: after"]
    # A run's events that hold a restore are not folded as they come: a read.
    sent, sub = await _turn(runtime, "one more")
    await runtime.restore("poet", "lg:t", seq=restore_to.last_seq)
    assert values.after_run(session_id, sent.events, sub, sent.run.id) is None
    sub.close()
    # Cold (a restart): the whole log folded, restores applied.
    assert _json(await ThreadValues().of(runtime, session_id)) == await _whole(
        runtime, session_id) == {"messages": _json(got)["messages"][:2]}
    # As of a seq (a run's input state): what the log held then, and on from there.
    sent = await runtime.send("poet", "lg:t", "input")
    await runtime.wait(sent.run.id)
    early = await values.of(runtime, session_id, sent.events[-1].seq)
    assert [m["content"] for m in _json(early)["messages"]][-1] == "input"
    assert _json(await values.of(runtime, session_id)) == await _whole(runtime, session_id)
    # Many turns (the pieces joined now and then), an interrupt beside the messages,
    # and a frame: the same JSON as the whole log's.
    for n in range(300):
        await runtime.wait((await runtime.send("poet", "lg:t", f"turn {n}")).run.id)
        if n % 7 == 0:
            await values.of(runtime, session_id)
    now = await values.of(runtime, session_id)
    assert _json(now) == await _whole(runtime, session_id)
    assert len(now.pieces) <= 257
    assert orjson.loads(now.json({"__interrupt__": [{"id": "x"}]})) == {
        **await _whole(runtime, session_id), "__interrupt__": [{"id": "x"}]}
    head, _, data = now.frame(b"values").partition(b"\ndata: ")
    assert head == b"event: values" and data.endswith(b"\n\n")
    assert orjson.loads(data) == await _whole(runtime, session_id)
