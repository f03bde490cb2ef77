"""A session's conversation, derived from its event log.

The log is the truth; this is a fold over it. The runtime keeps recently used
histories in a small LRU and brings one up to date by reading only the events
after the seq it has seen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from agentd.events import (
    EmptyData,
    MessageAssistant,
    MessageAssistantData,
    MessageUser,
    MessageUserData,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunInterrupted,
    RunStarted,
    SessionRestored,
    SessionRestoredData,
    ToolFinished,
    ToolFinishedData,
    WorkspaceSnapshot,
    WorkspaceSnapshotData,
    kind_of,
)
from agentd.llm.messages import (
    AssistantMessage,
    FinishReason,
    Thinking,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentd.store.records import EventRecord, live_events

__all__ = ["HistoryCache", "NeedsRebuild", "SessionHistory"]

AnyMessage = UserMessage | AssistantMessage | ToolResultMessage


class NeedsRebuild(ValueError):
    """The log was restored to an earlier point: fold it again (:meth:`SessionHistory.from_log`)."""


class SessionHistory:
    """The model-facing conversation of one session, folded from its log.

    A user message joins the conversation when its run starts (``run.started``), not
    when it is queued: a message waiting behind the active run is not part of that
    run's context. A message steered into a run that has started joins at once, or,
    if that run's tool calls are still waiting for results, right after them. A tool
    call left without a result (a run cancelled mid-step) gets an error result as soon
    as the conversation moves on, so the list is always valid for providers.
    """

    def __init__(self, session_id: str, agent_id: str | None = None) -> None:
        self.session_id = session_id
        self.agent_id = agent_id
        self.last_seq = 0
        self.messages: list[AnyMessage] = []
        self._held: dict[str, list[UserMessage]] = {}
        self._pending: dict[str, str] = {}
        self._started: set[str] = set()
        self._deferred: list[UserMessage] = []
        #: Why the session is tainted (content from outside entered it), or None.
        self.tainted: str | None = None
        #: The session's latest snapshot of the agent's workspace.
        self.workspace_ref: str | None = None

    @classmethod
    def from_log(cls, session_id: str, events: list[EventRecord],
                 agent_id: str | None = None) -> SessionHistory:
        """The history of a whole log (seq 1..N), restores applied."""
        history = cls(session_id, agent_id)
        for event in live_events(events):
            history._fold(event)
        history.last_seq = events[-1].seq if events else 0
        return history

    def apply(self, event: EventRecord) -> None:
        if event.seq <= self.last_seq:
            return
        if event.seq != self.last_seq + 1:
            raise ValueError(f"gap in session log: have {self.last_seq}, got {event.seq}")
        if event.kind == _RESTORED:
            data = cast(SessionRestoredData, event.data)
            raise NeedsRebuild(f"session restored to seq {data.get('to_seq')}")
        self.last_seq = event.seq
        self._fold(event)

    def _fold(self, event: EventRecord) -> None:
        # A table from the catalogue's kinds to the handlers below, each given the
        # kind's typed data (no object is made per event: every commit folds its
        # events). Old logs are folded as written: keys a writer may have left out are
        # read with .get; a kind this build does not know changes nothing.
        handler = _FOLDS.get(event.kind)
        if handler is not None:
            handler(self, event, event.data)

    def _user(self, event: EventRecord, data: MessageUserData) -> None:
        message = UserMessage(content=data["content"])
        run_id = event.run_id
        if run_id is not None and run_id not in self._started:
            self._held.setdefault(run_id, []).append(message)
        elif self._pending and run_id is not None:
            self._deferred.append(message)  # steered in while tools run
        else:
            self._append(message)

    def _started_run(self, event: EventRecord, data: EmptyData) -> None:
        self._started.add(event.run_id or "")
        for held in self._held.pop(event.run_id or "", ()):
            self._append(held)

    def _assistant(self, event: EventRecord, data: MessageAssistantData) -> None:
        usage = data.get("usage")
        self._append(AssistantMessage(
            text=data.get("text", ""),
            tool_calls=[ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"],
                                 extra=c.get("extra"))
                        for c in data.get("tool_calls", [])],
            usage=Usage.of(usage) if usage else None,
            finish_reason=cast(FinishReason, data.get("finish_reason", "stop")),
            model=data.get("model"),
            thinking=[Thinking(**t) for t in data.get("thinking") or ()],
        ))

    def _tool_result(self, event: EventRecord, data: ToolFinishedData) -> None:
        self._pending.pop(data["call_id"], None)
        tainted = data.get("tainted")
        if tainted and self.tainted is None:
            self.tainted = f"{data['name']} (seq {event.seq}): {tainted}"
        self.messages.append(ToolResultMessage(
            call_id=data["call_id"], name=data["name"], content=data["output"],
            is_error=bool(data.get("is_error")),
        ))
        if not self._pending and self._deferred:
            deferred, self._deferred = self._deferred, []
            self.messages.extend(deferred)

    def _snapshot(self, event: EventRecord, data: WorkspaceSnapshotData) -> None:
        ref = data.get("ref")
        if ref:
            self.workspace_ref = str(ref)
        # A snapshot that could not be taken taints too (it fails closed).
        tainted = data.get("tainted")
        if tainted and self.tainted is None:
            self.tainted = f"workspace (seq {event.seq}): {tainted}"

    def _ended(self, event: EventRecord, data: object) -> None:
        self._held.pop(event.run_id or "", None)
        self._started.discard(event.run_id or "")

    def _append(self, message: AnyMessage) -> None:
        if self._pending:
            self.messages.extend(_unanswered(self._pending))
            self._pending = {}
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            self.messages.extend(deferred)
        self.messages.append(message)
        if isinstance(message, AssistantMessage) and message.tool_calls:
            self._pending = {c.id: c.name for c in message.tool_calls}

    def extend(self, events: Iterable[EventRecord]) -> None:
        for event in events:
            self.apply(event)

    def for_model(self) -> list[AnyMessage]:
        """The messages to send, with every tool call answered."""
        if self._pending or self._deferred:
            return [*self.messages, *_unanswered(self._pending), *self._deferred]
        return list(self.messages)


_Fold = Callable[[SessionHistory, EventRecord, Any], None]
_RESTORED = kind_of(SessionRestored)
#: What each kind does to the conversation (the rest change nothing).
_FOLDS: dict[str, _Fold] = {
    kind_of(MessageUser): SessionHistory._user,
    kind_of(RunStarted): SessionHistory._started_run,
    kind_of(MessageAssistant): SessionHistory._assistant,
    kind_of(ToolFinished): SessionHistory._tool_result,
    kind_of(WorkspaceSnapshot): SessionHistory._snapshot,
    **{kind_of(end): SessionHistory._ended
       for end in (RunCompleted, RunFailed, RunCancelled, RunInterrupted)},
}


def _unanswered(pending: dict[str, str]) -> list[ToolResultMessage]:
    return [ToolResultMessage(call_id=cid, name=name, is_error=True,
                              content="no result: the run ended before this call finished")
            for cid, name in pending.items()]


class HistoryCache:
    """A bounded LRU of session histories, each brought up to date from the log."""

    def __init__(self, read_after: Callable[[str, int], Awaitable[list[EventRecord]]],
                 capacity: int = 1024) -> None:
        self._read_after = read_after
        self._capacity = capacity
        self._items: OrderedDict[str, SessionHistory] = OrderedDict()

    async def get(self, session_id: str, *, min_seq: int | None = None,
                  agent_id: str | None = None) -> SessionHistory:
        """The session's history, read from the log only if it may be behind ``min_seq``."""
        history = self._items.pop(session_id, None) or SessionHistory(session_id, agent_id)
        if min_seq is None or history.last_seq < min_seq:
            try:
                history.extend(await self._read_after(session_id, history.last_seq))
            except ValueError:  # a gap, or a restore: fold the whole log again
                history = SessionHistory.from_log(
                    session_id, await self._read_after(session_id, 0), agent_id)
        self._items[session_id] = history
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return history

    def offer(self, events: list[EventRecord]) -> None:
        """Fold freshly committed events into a cached history, if they follow on."""
        if not events:
            return
        history = self._items.get(events[0].session_id)
        if history is not None and history.last_seq + 1 == events[0].seq:
            try:
                history.extend(events)
            except NeedsRebuild:
                self.drop(events[0].session_id)

    def drop(self, session_id: str) -> None:
        self._items.pop(session_id, None)

    def drop_agent(self, agent_id: str) -> None:
        """Forget every cached history of an agent (it went to sleep)."""
        for session_id in [k for k, h in self._items.items() if h.agent_id == agent_id]:
            del self._items[session_id]

    def agent_ids(self) -> set[str]:
        """The agents with a session history held here (a sleeping agent has none)."""
        return {h.agent_id for h in self._items.values() if h.agent_id is not None}
