"""Compaction (agentd.memory.compaction): the cut and the fold on generated logs, then
summarize and clear end to end with the scripted model, automatic compaction in a long
session, a failing summary, restore and fork, and the guard against a log that changed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import Conflict, ModelError
from agentd.events import CompactionStrategy
from agentd.llm.messages import AssistantMessage, ToolResultMessage, UserMessage
from agentd.llm.scripted import enqueue
from agentd.memory.compaction import choose_cut, transcript
from agentd.runtime.history import SessionHistory, is_cleared
from agentd.store import NewEvent
from agentd.store.records import EventRecord

# -- generated logs ------------------------------------------------------------------

_END = ("run.completed", "run.cancelled", "run.failed")


class LogBuilder:
    """Writes a session's log the way the runtime does: messages queue behind the
    active run, a run's steps (answers, tool calls and results, steered messages), a
    run ending with or without its calls answered."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []
        self.active: str | None = None
        self.queued: list[str] = []
        self.pending: list[tuple[str, str]] = []
        self.runs = 0

    def add(self, kind: str, data: dict[str, Any], run_id: str | None = None) -> None:
        self.events.append(EventRecord(session_id="s", seq=len(self.events) + 1,
                                       run_id=run_id, kind=kind, data=data, at=0.0))

    def send(self, text: str) -> None:
        self.runs += 1
        run = f"r{self.runs}"
        self.add("message.user", {"content": text}, run)
        self.add("run.queued", {}, run)
        self.queued.append(run)
        if self.active is None:
            self._start_next()

    def _start_next(self) -> None:
        if self.queued:
            self.active = self.queued.pop(0)
            self.add("run.started", {}, self.active)

    def answer(self, calls: int, answered: int) -> None:
        if self.active is None:
            return
        self.answer_pending()
        # Ids restart at every step, as some providers' (and the scripted model's) do:
        # only the position pairs a result with its call.
        made = [(f"call_{i}", "calculator") for i in range(calls)]
        self.add("message.assistant", {
            "text": f"step {len(self.events)}", "finish_reason": "stop", "model": "m",
            "usage": None, "step": 1,
            "tool_calls": [{"id": c, "name": n, "arguments": {"x": 1}} for c, n in made]},
            self.active)
        self.pending = made
        for _ in range(min(answered, calls)):
            self.finish_one()

    def finish_one(self) -> None:
        call_id, name = self.pending.pop(0)
        self.add("tool.started", {"call_id": call_id, "name": name, "arguments": {},
                                  "effect_id": f"e-{call_id}"}, self.active)
        self.add("tool.finished", {"call_id": call_id, "name": name,
                                   "output": f"result of {call_id} " + "x" * 40,
                                   "is_error": False, "duration_ms": 1.0}, self.active)

    def answer_pending(self) -> None:
        while self.pending:
            self.finish_one()

    def steer(self, text: str) -> None:
        if self.active is not None:
            self.add("message.user", {"content": text, "steer": True}, self.active)

    def end(self, kind: str, answer_first: bool) -> None:
        if self.active is None:
            return
        if answer_first:
            self.answer_pending()
        self.add(kind, {"output": "", "steps": 1, "usage": {}} if kind == "run.completed"
                 else {"reason": "x"}, self.active)
        self.pending = []
        self.active = None
        self._start_next()

    def unfinished(self) -> set[str]:
        return set(self.queued) | ({self.active} if self.active else set())

    def busy_from(self) -> int | None:
        runs = self.unfinished()
        return min((e.seq for e in self.events if e.run_id in runs), default=None)


_op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 9)),
    st.tuples(st.just("answer"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("steer"), st.integers(0, 9)),
    st.tuples(st.just("end"), st.sampled_from(_END), st.booleans()),
    st.tuples(st.just("checkpoint")),
)


def build(ops: list[tuple[Any, ...]]) -> LogBuilder:
    log = LogBuilder()
    for op in ops:
        if op[0] == "send":
            log.send(f"message {op[1]} " + "words " * op[1])
        elif op[0] == "answer":
            log.answer(op[1], op[2])
        elif op[0] == "steer":
            log.steer(f"steer {op[1]}")
        elif op[0] == "end":
            log.end(op[1], op[2])
        else:
            log.add("checkpoint", {"id": f"c{len(log.events)}", "name": None,
                                   "kind": "auto"})
    return log


def assert_valid(messages: list[Any]) -> None:
    """What providers require: every tool call answered by the results right after its
    message (before anything else), and no result without its call."""
    i = 0
    while i < len(messages):
        message = messages[i]
        assert not isinstance(message, ToolResultMessage), f"orphan result at {i}"
        i += 1
        if isinstance(message, AssistantMessage) and message.tool_calls:
            results = []
            while i < len(messages) and isinstance(messages[i], ToolResultMessage):
                results.append(messages[i].call_id)
                i += 1
            assert sorted(results) == sorted(c.id for c in message.tool_calls)


def compaction_event(seq: int, cut: Any, strategy: str, summary: str = "S"
                     ) -> EventRecord:
    data: dict[str, Any] = {
        "from_seq": cut.from_seq, "to_seq": cut.to_seq, "strategy": strategy,
        "model": None, "usage": None, "messages": cut.messages, "auto": False,
        "estimated_tokens_before": 0, "estimated_tokens_after": 0, "by": "api"}
    if strategy == "summarize":
        data["summary"] = summary
    return EventRecord(session_id="s", seq=seq, run_id=None, kind="session.compacted",
                       data=data, at=0.0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=40), st.integers(1, 3),
       st.sampled_from(["summarize", "clear_tool_results"]))
def test_a_cut_never_breaks_the_conversation(ops: list[tuple[Any, ...]], keep: int,
                                             strategy: CompactionStrategy) -> None:
    log = build(ops)
    events = log.events
    history = SessionHistory.from_log("s", events)
    before = history.for_model()
    assert_valid(before)
    busy = log.busy_from()
    cut = choose_cut(history, keep_turns=keep, strategy=strategy, busy_from=busy)
    if cut is None:
        if strategy == "summarize" and busy is None and len(history.turns) > keep:
            pytest.fail("a finished session with more turns than kept has a cut")
        return
    # The range never takes in an event of a run that has not finished.
    assert all(e.run_id not in log.unfinished()
               for e in events if cut.from_seq <= e.seq <= cut.to_seq)
    assert cut.messages > 0 and cut.to_seq < len(events) + 1
    event = compaction_event(len(events) + 1, cut, strategy)
    after = SessionHistory.from_log("s", [*events, event])
    # Folding it live (what a running daemon does) gives the same.
    live = SessionHistory.from_log("s", events)
    live.apply(event)
    assert live.for_model() == after.for_model() and live.summary == after.summary
    view = after.for_model()
    assert_valid(view)
    if strategy == "summarize":
        # A suffix of what the model saw, starting with a turn's user message, holding
        # at least keep_turns turns.
        assert view == before[len(before) - len(view):]
        assert len(view) == len(before) - cut.messages
        assert isinstance(view[0], UserMessage) if view else True
        assert len(after.turns) >= keep and after.summary == "S"
    else:
        assert len(view) == len(before)
        changed = [(a, b) for a, b in zip(before, view, strict=True) if a != b]
        assert len(changed) == cut.messages
        assert all(isinstance(b, ToolResultMessage) and is_cleared(b)
                   and b.call_id == a.call_id for a, b in changed)
    # A second cut with the same settings finds nothing more.
    assert choose_cut(after, keep_turns=keep, strategy=strategy, busy_from=busy) is None
    # Restoring to before the compaction gives the whole conversation back.
    restore = EventRecord(session_id="s", seq=len(events) + 2, run_id=None,
                          kind="session.restored",
                          data={"to_seq": len(events), "checkpoint": None,
                                "archived": {"from_seq": len(events) + 1,
                                             "to_seq": len(events) + 1}}, at=0.0)
    assert SessionHistory.from_log("s", [*events, event, restore]).for_model() == before


def test_the_cut_keeps_turns_and_stops_before_an_active_run() -> None:
    log = LogBuilder()
    for i in range(4):
        log.send(f"turn {i}")
        log.answer(1, 1)
        log.answer(0, 0)
        log.end("run.completed", True)
    history = SessionHistory.from_log("s", log.events)
    cut = choose_cut(history, keep_turns=2, strategy="summarize", busy_from=None)
    assert cut is not None
    # Two turns of four are replaced: each a user message, a call, its result, an answer.
    assert (cut.from_seq, cut.messages) == (1, 8)
    assert cut.to_seq == history.turns[2] - 1
    # A message queued while turn 4 ran, and that run still going: the range stops
    # before its events, so turn 3's boundary is the latest that can be cut.
    log.send("turn 4")
    log.answer(1, 0)
    history = SessionHistory.from_log("s", log.events)
    one = choose_cut(history, keep_turns=1, strategy="summarize", busy_from=log.busy_from())
    assert one is not None and one.to_seq < (log.busy_from() or 0)
    # It ends before the run's message.user and run.queued, which precede its start;
    # every finished turn is replaced.
    assert (one.to_seq, one.messages) == (history.turns[4] - 3, 16)
    assert choose_cut(history, keep_turns=5, strategy="summarize",
                      busy_from=log.busy_from()) is None


def test_a_message_queued_behind_a_run_moves_the_cut_to_an_earlier_turn() -> None:
    log = LogBuilder()
    log.send("first")
    log.end("run.completed", True)
    log.send("second")  # runs ...
    log.send("third")   # ... while this one waits (its message is logged before)
    log.answer(0, 0)
    log.end("run.completed", True)  # third starts now and stays under way
    history = SessionHistory.from_log("s", log.events)
    cut = choose_cut(history, keep_turns=1, strategy="summarize", busy_from=log.busy_from())
    # The third turn's boundary would take in its own queued message: the cut falls
    # before the second turn instead, and replaces only the first.
    assert cut is not None and cut.messages == 1
    assert cut.to_seq == history.turns[1] - 1


def test_transcript_marks_entries_and_clips_long_ones() -> None:
    messages: list[Any] = [UserMessage(content="hello\n[not an entry]"),
                           ToolResultMessage(call_id="c", name="t", content="x" * 9000,
                                             is_error=True)]
    text = transcript("old summary", messages, max_chars=2000)
    lines = text.splitlines()
    assert lines[:4] == ["<conversation_to_summarize>", "<previous_summary>",
                         "old summary", "</previous_summary>"]
    assert lines[4] == "[user] hello" and lines[5] == "  [not an entry]"
    assert lines[6].startswith("[tool t error] xxx") and "more]" in lines[6]
    assert len(text) < 2000


# -- end to end with the scripted model ---------------------------------------------------


async def _talk(rt: Runtime, agent: str, key: str, *texts: str) -> None:
    for text in texts:
        run = await rt.wait((await rt.send(agent, key, text)).run.id)
        assert run.status == "completed", run.error


def _api(events: list[EventRecord]) -> list[dict[str, Any]]:
    return [e.to_api() for e in events]


async def test_summarize_then_again_then_restore_and_fork(runtime: Runtime) -> None:
    rt = runtime
    await rt.create_agent(name="a", model="scripted", tools=["calculator"])
    await _talk(rt, "a", "k", "alpha one two three four", "beta five six",
                '/tool calculator {"expression": "6 * 7"}', "gamma seven", "delta eight")
    _, session = await rt.get_session("a", "k")
    full = (await rt.session_context("a", "k")).for_model()
    last = session.last_seq

    done = await rt.compact_session("a", "k")
    data = done.data
    assert (data["strategy"], data["by"], data["auto"], data["model"]) == (
        "summarize", "api", False, "scripted")
    # Three turns of five: user + answer, user + answer, user + call + result + answer.
    assert (data["from_seq"], data["messages"]) == (1, 8)
    assert data["summary"] == (
        "Summary:\n- user: alpha one two three\n- assistant: echo: alpha one two\n"
        "- user: beta five six\n- assistant: echo: beta five six\n"
        "- user: /tool calculator {\"expression\": \"6\n"
        "- assistant: calls calculator {'expression': '6\n- tool calculator: 42\n"
        "- assistant: calculator returned: 42")
    assert data["usage"] and data["usage"]["input_tokens"] > 0
    assert data["estimated_tokens_after"] < data["estimated_tokens_before"]
    assert done.event.seq == last + 1 and done.event.run_id is None

    context = await rt.session_context("a", "k")
    assert context.for_model() == full[8:]
    assert context.summary == data["summary"]
    assert "<conversation_summary>" in context.system("Be brief.")
    assert context.system("Be brief.").startswith("Be brief.\n\n")
    # The summary's tokens were charged to the agent, like a run's step.
    usage = await rt.usage_report(group_by=["agent"], agent="a")
    runs = [r for r, _, _ in (await rt.list_runs(agent="a")).runs]
    run_tokens = sum(int(r.usage["input_tokens"]) for r in runs)
    assert usage[0]["input_tokens"] == run_tokens + data["usage"]["input_tokens"]

    # The next run sees the summary and the kept turns only.
    await _talk(rt, "a", "k", "epsilon nine", "zeta ten")
    again = (await rt.compact_session("a", "k", keep_turns=1)).data
    summary = again["summary"]
    assert again["from_seq"] == 1 and summary is not None
    # The new summary folds in the old one (its lines kept), then the newer turns.
    assert summary.startswith(data["summary"] + "\n- user: gamma seven")
    assert summary.endswith("- user: epsilon nine\n- assistant: echo: epsilon nine")
    view = (await rt.session_context("a", "k")).for_model()
    assert [m.content for m in view if isinstance(m, UserMessage)] == ["zeta ten"]

    # Restore to before the first compaction: the whole conversation again.
    await rt.restore("a", "k", seq=last)
    assert (await rt.session_context("a", "k")).for_model() == full
    assert (await rt.session_context("a", "k")).summary is None

    # A fork after a compaction keeps it, its range in the fork's numbering.
    await _talk(rt, "a", "k2", "one", "two", "three")
    await rt.compact_session("a", "k2", keep_turns=1)
    _, k2 = await rt.get_session("a", "k2")
    await rt.restore("a", "k2", seq=3)  # an archive in the middle of the source's log
    await _talk(rt, "a", "k2", "four", "five")
    await rt.compact_session("a", "k2", keep_turns=1)
    source = await rt.session_context("a", "k2")
    forked = await rt.fork("a", "k2", new_key="k3", seq=(await rt.get_session(
        "a", "k2"))[1].last_seq)
    copy = await rt.session_context("a", "k3")
    assert copy.for_model() == source.for_model() and copy.summary == source.summary
    copied = [e for e in await rt.read_events(forked.id) if e.kind == "session.compacted"]
    assert copied[-1].data["to_seq"] < forked.last_seq
    assert copied[-1].data["to_seq"] != [e for e in await rt.read_events(k2.id)
                                         if e.kind == "session.compacted"][-1].data["to_seq"]


async def test_clear_tool_results_keeps_the_calls(runtime: Runtime) -> None:
    rt = runtime
    await rt.create_agent(name="a", model="scripted", tools=["calculator"])
    await _talk(rt, "a", "k", '/tool calculator {"expression": "1 + 1"}',
                '/tool calculator {"expression": "2 + 2"}', "plain", "plainer")
    before = (await rt.session_context("a", "k")).for_model()
    done = await rt.compact_session("a", "k", strategy="clear_tool_results")
    assert (done.data["strategy"], done.data["messages"], done.data["model"]) == (
        "clear_tool_results", 2, None)
    assert "summary" not in done.data and done.data["usage"] is None
    after = (await rt.session_context("a", "k")).for_model()
    assert len(after) == len(before)
    results = [m for m in after if isinstance(m, ToolResultMessage)]
    assert [m.content for m in results] == [
        "[tool result cleared by compaction: 1 characters]",
        "[tool result cleared by compaction: 1 characters]"]
    calls = [c.name for m in after if isinstance(m, AssistantMessage) for c in m.tool_calls]
    assert calls == ["calculator", "calculator"]
    with pytest.raises(Conflict) as nothing:
        await rt.compact_session("a", "k", strategy="clear_tool_results")
    assert nothing.value.code == "nothing_to_compact"


async def test_nothing_to_compact_writes_nothing(runtime: Runtime) -> None:
    rt = runtime
    await rt.create_agent(name="a", model="scripted")
    await _talk(rt, "a", "k", "one", "two")
    _, session = await rt.get_session("a", "k")
    with pytest.raises(Conflict) as info:
        await rt.compact_session("a", "k")  # keep_turns 2: both turns kept
    assert info.value.code == "nothing_to_compact" and info.value.status == 409
    assert (await rt.get_session("a", "k"))[1].last_seq == session.last_seq


@pytest.mark.parametrize("failure", [{"error": "the summary model is down"},
                                     {"text": ""}])
async def test_a_failed_summary_leaves_the_session_exactly_as_it_was(
        runtime: Runtime, failure: dict[str, Any]) -> None:
    rt = runtime
    await rt.create_agent(name="a", model="scripted")
    await _talk(rt, "a", "k", "one", "two", "three", "four")
    _, session = await rt.get_session("a", "k")
    log = _api(await rt.read_events(session.id))
    view = (await rt.session_context("a", "k")).for_model()
    usage = await rt.usage_report(group_by=[], agent="a")
    enqueue(failure, agent="a")
    with pytest.raises(ModelError) as info:
        await rt.compact_session("a", "k")
    assert ("down" in info.value.message) if "error" in failure else (
        info.value.code == "model_bad_output")
    assert _api(await rt.read_events(session.id)) == log
    fresh = SessionHistory.from_log(session.id, await rt.read_events(session.id))
    assert (await rt.session_context("a", "k")).for_model() == view == fresh.for_model()
    assert await rt.usage_report(group_by=[], agent="a") == usage


async def test_a_compaction_chosen_from_a_log_that_changed_is_refused(
        runtime: Runtime) -> None:
    rt = runtime
    await rt.create_agent(name="a", model="scripted", tools=["current_time"])
    await _talk(rt, "a", "k", "one", "two", "three", "four")
    _, session = await rt.get_session("a", "k")
    seen = session.last_seq
    # The store's guard: a restore after the seq the range was chosen at voids it.
    await rt.restore("a", "k", seq=seen - 2)
    with pytest.raises(Conflict) as info:
        await rt.store.append(session.id, [NewEvent(kind="checkpoint", data={})],
                              unless_changed_after=seen)
    assert info.value.code == "session_changed" and info.value.retryable
    assert (await rt.get_session("a", "k"))[1].last_seq == seen + 1
    # Through the service: a slow summary loses to a clear committed meanwhile.
    await _talk(rt, "a", "k", '/tool current_time {}', "five", "six")
    calls = rt.kernel.counters["calls"]
    enqueue({"text": "a slow summary", "delay_ms": 1500}, agent="a")
    slow = asyncio.ensure_future(rt.compact_session("a", "k"))
    await eventually(lambda: rt.kernel.counters["calls"] > calls,
                     what="the summary call starting")
    await rt.compact_session("a", "k", strategy="clear_tool_results", keep_turns=1)
    with pytest.raises(Conflict) as lost:
        await slow
    assert lost.value.code == "session_changed"
    kinds = [e.kind for e in await rt.read_events(session.id)]
    assert kinds.count("session.compacted") == 1


# -- automatic compaction in a run ---------------------------------------------------------

TINY = ('[models."scripted:tiny"]\ncontext_window = 700\nmax_output_tokens = 60\n'
        "input = 1\noutput = 2\n")


@pytest.fixture
async def tiny(settings: Settings, store_url: str, tmp_path: Path) -> Runtime:
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "models.toml").write_text(TINY)
    settings.database_url = store_url
    rt = await Runtime.open(settings)
    yield rt  # type: ignore[misc]
    await rt.close()


async def test_a_long_session_is_compacted_by_its_runs_not_trimmed(tiny: Runtime) -> None:
    rt = tiny
    await rt.create_agent(name="a", model="scripted:tiny", settings={
        "memory": {"compaction": {"keep_turns": 1, "threshold": 0.5}}})
    for i in range(8):
        await _talk(rt, "a", "long", f"turn {i} " + "w " * 60)
    _, session = await rt.get_session("a", "long")
    events = await rt.read_events(session.id)
    compactions = [e for e in events if e.kind == "session.compacted"]
    assert compactions, "no compaction happened"
    for event in compactions:
        assert (event.data["auto"], event.data["by"]) == (True, "run")
        assert event.run_id is not None and event.data["summary"].startswith("Summary:")
    steps = [e for e in events if e.kind == "message.assistant"]
    done = [s for s in steps if s.data.get("compaction", {}).get("status") == "compacted"]
    assert [s.data["compaction"]["seq"] for s in done] == [e.seq for e in compactions]
    # Every step after the first compaction fit without trimming: older turns were
    # summarised, not dropped.
    assert not any("context_trimmed" in s.data for s in steps)
    # The event is committed in its run, before the step it made room for.
    for event, step in zip(compactions, done, strict=True):
        assert event.run_id == step.run_id and event.seq < step.seq
    view = await rt.session_context("a", "long")
    assert view.summary is not None and "- user: turn 0" in view.summary
    assert all(isinstance(m, UserMessage | AssistantMessage) for m in view.for_model())


async def test_a_failing_automatic_compaction_falls_back_to_trimming(tiny: Runtime) -> None:
    rt = tiny
    # Each turn is about 95 tokens: the third passes 0.3 of the 700-token window.
    await rt.create_agent(name="a", model="scripted:tiny", settings={
        "memory": {"compaction": {"keep_turns": 1, "threshold": 0.3}}})
    await _talk(rt, "a", "k", *(f"turn {i} " + "w " * 60 for i in range(2)))
    _, session = await rt.get_session("a", "k")
    # The next call passes the threshold: its summary call fails for good.
    enqueue({"error": "summary model refused"}, agent="a")
    await _talk(rt, "a", "k", "turn 2 " + "w " * 60)
    events = await rt.read_events(session.id)
    assert not [e for e in events if e.kind == "session.compacted"]
    step = [e for e in events if e.kind == "message.assistant"][-1]
    assert step.data["compaction"]["status"] == "failed"
    assert "summary model refused" in step.data["compaction"]["error"]["message"]
    assert step.data["text"].startswith("echo: turn 2")
    # With automatic compaction off, nothing is tried and the run trims as before.
    await rt.update_agent("a", {"settings": {"memory": {"compaction": {"auto": False}}}})
    await _talk(rt, "a", "k", *(f"more {i} " + "w " * 60 for i in range(4)))
    later = [e for e in await rt.read_events(session.id) if e.kind == "message.assistant"]
    assert not any("compaction" in s.data for s in later[len(later) - 4:])
    assert any("context_trimmed" in s.data for s in later)
