"""The Agent Protocol door's thread values (what ``runs/wait`` answers with): kept as
JSON and extended turn by turn, from the run's own events when they carry on from the
fold, from the log otherwise; always what folding the whole log gives."""

from __future__ import annotations

from typing import Any

import orjson

from agentd.assembly import Runtime
from agentd.protocols.langgraph._values import ThreadValues
from agentd.protocols.langgraph._wire import values_of
from agentd.runtime import SendResult


def _json(values: dict[str, Any]) -> Any:
    return orjson.loads(orjson.dumps(values))


async def _turn(runtime: Runtime, text: str) -> tuple[SendResult, Any]:
    sent = await runtime.send("poet", "lg:t", text)
    sub = runtime.subscribe(sent.session.id)
    await runtime.wait(sent.run.id)
    return sent, sub


async def _whole(runtime: Runtime, session_id: str) -> Any:
    return _json(values_of(await runtime.read_events(session_id)))


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
