"""A model call's messages are the conversation as it was when the call was made: the
history hands each request a snapshot (a :class:`~agentd.llm.messages.Prefix` of its
list, not a copy), and the events folded in while the call is under way (its own
answer, a compaction) do not show in it."""

from __future__ import annotations

from typing import Any

from agentd.llm.messages import AssistantMessage, Prefix, UserMessage
from agentd.runtime.history import SessionHistory
from agentd.store.records import EventRecord


def _event(seq: int, kind: str, data: dict[str, Any], run_id: str | None = None
           ) -> EventRecord:
    return EventRecord(session_id="s", seq=seq, run_id=run_id, kind=kind, data=data, at=0.0)


def _turn(seq: int, run: str, text: str) -> list[EventRecord]:
    return [_event(seq, "message.user", {"content": text}, run),
            _event(seq + 1, "run.started", {}, run),
            _event(seq + 2, "message.assistant", {"text": f"re: {text}", "tool_calls": []},
                   run),
            _event(seq + 3, "run.completed", {"output": "", "steps": 1, "usage": {}}, run)]


def test_a_requests_messages_do_not_move_with_the_history() -> None:
    log = [*_turn(1, "r1", "one"), *_turn(5, "r2", "two"),
           _event(9, "message.user", {"content": "three"}, "r3"),
           _event(10, "run.started", {}, "r3")]
    history = SessionHistory.from_log("s", log)
    messages, provenance = history.for_request()
    assert isinstance(messages, Prefix)
    then = list(messages)
    assert [type(m) for m in then] == [UserMessage, AssistantMessage] * 2 + [UserMessage]
    assert provenance[1:] == (0, 5)
    # The call's own answer joins while the call is read (a retry, a fallback).
    history.apply(_event(11, "message.assistant", {"text": "re: three", "tool_calls": []},
                         "r3"))
    history.apply(_event(12, "run.completed", {"output": "", "steps": 1, "usage": {}}, "r3"))
    assert len(history.messages) == 6
    assert list(messages) == then and messages[-1] is then[-1] and len(messages) == 5
    # A compaction gives the history a new list: the snapshot still reads the old one.
    history.apply(_event(13, "session.compacted", {
        "from_seq": 1, "to_seq": 8, "strategy": "summarize", "summary": "earlier",
        "messages": 4, "model": None, "usage": None, "auto": False,
        "estimated_tokens_before": 0, "estimated_tokens_after": 0, "by": "api"}))
    assert [m.content for m in history.messages if isinstance(m, UserMessage)] == ["three"]
    assert list(messages) == then
    fresh, _ = history.for_request()
    assert [type(m) for m in fresh] == [UserMessage, AssistantMessage]
