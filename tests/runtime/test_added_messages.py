"""Messages added to a session without a run (``Runtime.add_messages``, the LangGraph
door's ``update_state``): the next run's model sees them where they stand, and they go
in only between runs, in one transaction with the session's seq, or not at all.

Runs on SQLite and (with AGENTD_TEST_POSTGRES_URL) PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import under_way

from agentd.assembly import Runtime
from agentd.errors import Conflict, InvalidInput, SessionBusy, SessionNotFound
from agentd.llm.messages import AssistantMessage, UserMessage
from agentd.llm.scripted import ScriptedModel
from agentd.runtime.history import SessionHistory
from agentd.store.records import EventRecord


@pytest.fixture
def model_saw(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, str]]]:
    """The conversation of every scripted model call, as (role, text) pairs."""
    seen: list[list[tuple[str, str]]] = []
    original = ScriptedModel.stream

    async def stream(self: ScriptedModel, request: Any) -> Any:
        seen.append([("user", m.content) if isinstance(m, UserMessage) else
                     ("assistant", m.text) for m in request.messages
                     if isinstance(m, UserMessage | AssistantMessage)])
        async for event in original(self, request):
            yield event

    monkeypatch.setattr(ScriptedModel, "stream", stream)
    return seen


async def test_added_messages_are_in_the_next_runs_context(
        runtime: Runtime, model_saw: list[list[tuple[str, str]]]) -> None:
    await runtime.create_agent(name="a")
    session, events = await runtime.add_messages("a", "k", [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "noted, Ada", "id": "m-1"}], create=True)
    assert [(e.seq, e.kind, e.run_id) for e in events] == [
        (1, "message.added", None), (2, "message.added", None)]
    assert session.last_seq == 2
    assert (await runtime.list_runs(agent="a")).runs == []  # nothing ran
    assert model_saw == []
    sent = await runtime.send("a", "k", "what is my name?")
    run = await runtime.wait(sent.run.id)
    assert run.output == "echo: what is my name?"
    assert model_saw == [[("user", "my name is Ada"), ("assistant", "noted, Ada"),
                          ("user", "what is my name?")]]
    history = await runtime.session_context("a", "k")
    # Each user message begins a turn (a compaction may cut there).
    assert len(history.turns) == 2
    # Added again after the run: the one after sees it after the reply.
    await runtime.add_messages("a", "k", [{"role": "user", "content": "I moved"}])
    again = await runtime.wait((await runtime.send("a", "k", "where?")).run.id)
    assert again.status == "completed"
    assert model_saw[-1][-3:] == [("assistant", "echo: what is my name?"),
                                  ("user", "I moved"), ("user", "where?")]


async def test_added_messages_wait_for_the_sessions_turn(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [
        {"text": "slowly", "delay_ms": 60_000}]})
    sent = await runtime.send("a", "k", "go")
    await under_way(runtime, sent.run.id, in_model=True)  # (run.started committed)
    log = await runtime.read_events(sent.session.id)
    with pytest.raises(SessionBusy) as busy:
        await runtime.add_messages("a", "k", [{"role": "user", "content": "meanwhile"}])
    assert busy.value.details["active_run"] == sent.run.id
    assert await runtime.read_events(sent.session.id) == log
    # The run queued behind it keeps the session busy once the first is over.
    queued = await runtime.send("a", "k", "next")
    await runtime.cancel_run(sent.run.id)
    with pytest.raises(SessionBusy):
        await runtime.add_messages("a", "k", [{"role": "user", "content": "meanwhile"}])
    await runtime.cancel_run(queued.run.id)
    assert "message.added" not in [e.kind for e in await runtime.read_events(
        sent.session.id)]
    log = await runtime.read_events(sent.session.id)
    # Only if the session is where the caller saw it.
    with pytest.raises(Conflict) as changed:
        await runtime.add_messages("a", "k", [{"role": "user", "content": "late"}],
                                   expect_seq=log[-1].seq - 1)
    assert changed.value.code == "session_changed"
    _, done = await runtime.add_messages("a", "k", [{"role": "user", "content": "now"}],
                                         expect_seq=log[-1].seq)
    assert [e.seq for e in done] == [log[-1].seq + 1]


async def test_refused_additions_write_nothing(runtime: Runtime) -> None:
    await runtime.create_agent(name="a")
    await runtime.create_agent(name="b")
    with pytest.raises(SessionNotFound):
        await runtime.add_messages("a", "nope", [{"role": "user", "content": "hi"}])

    def refuse(others: list[str]) -> None:
        raise Conflict(f"held by {others}", code="thread_of_another_assistant")

    with pytest.raises(Conflict):
        await runtime.add_messages("a", "new", [{"role": "user", "content": "hi"}],
                                   create=True, on_new_session=refuse)
    with pytest.raises(SessionNotFound):
        await runtime.get_session("a", "new")
    # The check is told of the other agents holding the key.
    await runtime.add_messages("b", "shared", [{"role": "user", "content": "b's"}],
                               create=True)
    told: list[list[str]] = []
    await runtime.add_messages("a", "shared", [{"role": "user", "content": "a's"}],
                               create=True, on_new_session=told.append)
    assert told == [["b"]]
    for bad in ([], [{"role": "system", "content": "obey"}],
                [{"role": "user", "content": " "}]):
        with pytest.raises(InvalidInput):
            await runtime.add_messages("a", "shared", bad)  # type: ignore[arg-type]
    _, session = await runtime.get_session("a", "shared")
    assert session.last_seq == 1


def _event(seq: int, kind: str, data: dict[str, Any], run_id: str | None = None
           ) -> EventRecord:
    return EventRecord(session_id="s", seq=seq, run_id=run_id, kind=kind, data=data, at=0.0)


def test_an_addition_inside_a_run_joins_when_it_ends() -> None:
    """Never written while a run is active; a log that has one anyway (an older
    writer) does not break the run's turn: the message joins when the run ends."""
    log = [_event(1, "message.user", {"content": "q"}, "r1"),
           _event(2, "run.started", {}, "r1"),
           _event(3, "message.added", {"role": "user", "content": "between"}),
           _event(4, "message.assistant", {"text": "a"}, "r1"),
           _event(5, "run.completed", {"output": "a", "steps": 1, "usage": {}}, "r1")]
    history = SessionHistory.from_log("s", log)
    assert history.messages == [UserMessage(content="q"), AssistantMessage(text="a"),
                                UserMessage(content="between")]
