"""A session's conversation, derived from its event log.

The log is the truth; this is a fold over it. The runtime keeps recently used
histories in a small LRU and brings one up to date by reading only the events
after the seq it has seen.

Compaction (``session.compacted``, :mod:`agentd.memory.compaction`) is a fold too:
each message remembers the seq at which it joined the conversation (its *origin*), so
an event naming a seq range can replace those messages by a summary, kept apart in
:attr:`SessionHistory.summary` and rendered into the system prompt, so the
user/assistant alternation and the pairing of tool calls with their results are never
broken; or clear their tool results. The log keeps every original: a restore to a
seq before the compaction folds them back.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, cast

from agentd.events import (
    EmptyData,
    MessageAdded,
    MessageAddedData,
    MessageAssistant,
    MessageAssistantData,
    MessageProactive,
    MessageProactiveData,
    MessageUser,
    MessageUserData,
    OutputInvalid,
    OutputInvalidData,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunInterrupted,
    RunStarted,
    SessionCompacted,
    SessionCompactedData,
    SessionRestored,
    SessionRestoredData,
    ToolFinished,
    ToolFinishedData,
    WorkspaceSnapshot,
    WorkspaceSnapshotData,
    kind_of,
)
from agentd.llm.memo import PrefixMemo
from agentd.llm.messages import (
    AssistantMessage,
    FinishReason,
    MediaPart,
    Prefix,
    Thinking,
    ToolCall,
    ToolResultMessage,
    ToolSpec,
    Usage,
    UserMessage,
)
from agentd.llm.quoting import quote
from agentd.media import media_part, message_parts
from agentd.store.records import EventRecord, live_events

__all__ = ["HistoryCache", "NeedsRebuild", "SessionHistory", "cleared_result", "compacted",
           "is_cleared", "with_summary"]

AnyMessage = UserMessage | AssistantMessage | ToolResultMessage

#: How a cleared tool result starts (``clear_tool_results``); the rest says its size.
CLEARED = "[tool result cleared by compaction"


def cleared_result(message: ToolResultMessage) -> ToolResultMessage:
    """A tool result with its content replaced by a short placeholder (the call kept)."""
    return replace(message, content=f"{CLEARED}: {len(message.content)} characters]",
                   parts=[])


def is_cleared(message: AnyMessage) -> bool:
    return isinstance(message, ToolResultMessage) and message.content.startswith(CLEARED)


def with_summary(system: str, summary: str | None) -> str:
    """The system prompt with the conversation's summary after it (the instructions and
    memory blocks first: they change less, so a provider's prompt cache keeps them)."""
    if not summary:
        return system
    # A model wrote the summary from the conversation, outside content included: it is
    # quoted so that it cannot end its section and go on as the daemon's instructions.
    section = ("<conversation_summary>\nThe earlier part of this conversation, "
               f"summarised:\n{quote(summary)}\n</conversation_summary>")
    return f"{system}\n\n{section}" if system else section


def compacted(messages: Sequence[AnyMessage], origins: Sequence[int],
              data: SessionCompactedData) -> tuple[list[AnyMessage], list[int]]:
    """The messages (with their origin seqs) once ``data`` is applied: those that
    joined in ``from_seq``..``to_seq`` dropped (``summarize``) or their tool results
    cleared (``clear_tool_results``). Never parts a tool call from its result, even for
    a range no cut of this daemon would choose: a result goes or stays with the
    assistant message it answers (the one before it: results follow their calls, and
    call ids need not be unique across a conversation)."""
    low, high = int(data.get("from_seq", 0)), int(data.get("to_seq", -1))
    if data.get("strategy") == "clear_tool_results":
        out = [cleared_result(m) if low <= o <= high and isinstance(m, ToolResultMessage)
               and not is_cleared(m) else m for m, o in zip(messages, origins, strict=True)]
        return out, list(origins)
    keep_messages: list[AnyMessage] = []
    keep_origins: list[int] = []
    owner_dropped = False
    for message, origin in zip(messages, origins, strict=True):
        if isinstance(message, ToolResultMessage):
            dropped = owner_dropped
        else:
            dropped = low <= origin <= high
            if isinstance(message, AssistantMessage):
                owner_dropped = dropped
        if not dropped:
            keep_messages.append(message)
            keep_origins.append(origin)
    return keep_messages, keep_origins


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

    ``origins[i]`` is the seq at which ``messages[i]`` joined (the event being folded
    then; an unanswered call's error result takes its call's), so origins never
    decrease across turns. ``turns`` holds the origin of each turn's first message (a
    user message whose run started), the only places a compaction may cut.
    """

    def __init__(self, session_id: str, agent_id: str | None = None) -> None:
        self.session_id = session_id
        self.agent_id = agent_id
        self.last_seq = 0
        self.messages: list[AnyMessage] = []
        #: The seq at which each message joined the conversation.
        self.origins: list[int] = []
        #: Where each turn begins (the origin of its user message), oldest first.
        self.turns: list[int] = []
        #: The summary of the compacted older turns (rendered in the system prompt).
        self.summary: str | None = None
        #: The range the summary replaces (0, 0: none).
        self.summary_range: tuple[int, int] = (0, 0)
        #: The first event of the session's state (0: none yet).
        self.first_seq = 0
        self._seq = 0
        self._pending_origin = 0
        self._held: dict[str, list[UserMessage]] = {}
        self._pending: dict[str, str] = {}
        self._started: set[str] = set()
        self._deferred: list[UserMessage] = []
        #: Messages the agent posted here from another session while a run of this
        #: one was under way: they join when it ends (between turns, never inside one).
        self._posted: list[AnyMessage] = []
        #: Why the session is tainted (content from outside entered it), or None.
        self.tainted: str | None = None
        #: The session's latest snapshot of the agent's workspace.
        self.workspace_ref: str | None = None
        #: The sender's instructions for a run (its message's ``instructions``), by
        #: run id, until the run ends.
        self._run_instructions: dict[str, str] = {}
        #: The tools the sender of a run's message runs itself (``client_tools``).
        self._run_client_tools: dict[str, list[ToolSpec]] = {}
        #: The JSON Schema the sender of a run's message holds its answer to.
        self._run_output: dict[str, dict[str, Any]] = {}
        #: The sender's results of earlier calls (``tool_results``), held with its
        #: message until its run starts.
        self._results: dict[str, list[ToolResultMessage]] = {}
        #: What the model calls of this session derive from its messages (their wire
        #: encodings, their token estimates), kept for the next call.
        self.memo = PrefixMemo()
        #: A stable key for providers' prompt caches: a digest, never the session id.
        self.cache_key = hashlib.sha256(session_id.encode()).hexdigest()[:32]
        #: Images and files folded in whose bytes are not loaded yet (the runtime loads
        #: them from the store before the next model call).
        self.unloaded: list[MediaPart] = []

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
        self._seq = event.seq
        self.first_seq = self.first_seq or event.seq
        # A table from the catalogue's kinds to the handlers below, each given the
        # kind's typed data (no object is made per event: every commit folds its
        # events). Old logs are folded as written: keys a writer may have left out are
        # read with .get; a kind this build does not know changes nothing.
        handler = _FOLDS.get(event.kind)
        if handler is not None:
            handler(self, event, event.data)

    def _user(self, event: EventRecord, data: MessageUserData) -> None:
        tainted = data.get("tainted")
        if tainted and self.tainted is None:
            # Sent by a run whose session was tainted (a subtask, another agent's call).
            self.tainted = f"message (seq {event.seq}): {tainted}"
        parts = data.get("parts")
        message = (UserMessage(content=data["content"]) if not parts
                   else self._with_parts(data["content"], parts))
        run_id = event.run_id
        if run_id is not None and not data.get("steer"):
            self._sender_parts(run_id, data)
            if not message.content and run_id in self._results:
                return  # only results: they join when the run starts
        if run_id is not None and run_id not in self._started:
            self._held.setdefault(run_id, []).append(message)
        elif self._pending and run_id is not None:
            self._deferred.append(message)  # steered in while tools run
        else:
            if run_id is None:  # (a log from before runs): each message is a turn
                self._turn()
            self._append(message)

    def _with_parts(self, content: str, parts: list[Any]) -> UserMessage:
        message = UserMessage(content=content, parts=message_parts(parts))
        self.unloaded.extend(p for p in message.parts if isinstance(p, MediaPart))
        return message

    def _sender_parts(self, run_id: str, data: MessageUserData) -> None:
        """What a run's message brings besides its text: its sender's instructions,
        tools and results of earlier calls (the OpenAI doors)."""
        instructions = data.get("instructions")
        if instructions:
            self._run_instructions.setdefault(run_id, instructions)
        tools = data.get("client_tools")
        if tools:
            self._run_client_tools.setdefault(run_id, [
                ToolSpec(name=t["name"], description=t.get("description", ""),
                         parameters=t.get("parameters") or {"type": "object",
                                                            "properties": {}})
                for t in tools])
        schema = data.get("output_schema")
        if schema:
            self._run_output.setdefault(run_id, schema)
        results = data.get("tool_results")
        if results:
            self._results.setdefault(run_id, []).extend(
                ToolResultMessage(call_id=r["call_id"], name=r["name"], content=r["output"],
                                  is_error=bool(r.get("is_error")))
                for r in results)

    def _started_run(self, event: EventRecord, data: EmptyData) -> None:
        self._started.add(event.run_id or "")
        results = self._results.pop(event.run_id or "", ())
        if results:
            self._answer(results)
        held = self._held.pop(event.run_id or "", ())
        if held and not results:
            # (Results continue the turn of the calls they answer: no cut between.)
            self._turn()
        for message in held:
            self._append(message)

    def _answer(self, results: Sequence[ToolResultMessage]) -> None:
        """The sender's results of the calls an earlier run ended with: each joins
        after its call, if that call is still waiting (one a later message already
        answered with an error result cannot take it any more)."""
        for result in results:
            if self._pending.pop(result.call_id, None) is not None:
                self.messages.append(result)
                self.origins.append(self._seq)

    def _turn(self) -> None:
        """A turn begins at the message about to join (after any unanswered calls)."""
        if not self.turns or self.turns[-1] != self._seq:
            self.turns.append(self._seq)

    def _assistant(self, event: EventRecord, data: MessageAssistantData) -> None:
        recalled = data.get("recalled")
        if recalled is not None and recalled.get("tainted") and self.tainted is None:
            # Auto-recall put an entry a tainted session wrote into this call.
            self.tainted = f"memory (seq {event.seq}): {recalled.get('tainted')}"
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
        result = ToolResultMessage(call_id=data["call_id"], name=data["name"],
                                   content=data["output"], is_error=bool(data.get("is_error")))
        parts = data.get("parts")
        if parts:
            result.parts = [media_part(p) for p in parts]
            self.unloaded.extend(result.parts)
        self.messages.append(result)
        self.origins.append(event.seq)
        if not self._pending and self._deferred:
            deferred, self._deferred = self._deferred, []
            self.messages.extend(deferred)
            self.origins.extend([event.seq] * len(deferred))

    def _output_invalid(self, event: EventRecord, data: OutputInvalidData) -> None:
        """An answer that did not match the run's output schema: what the model was
        told about it joins the conversation (the run asks again)."""
        prompt = data.get("prompt")
        if prompt:
            self._append(UserMessage(content=prompt))

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
        self._run_instructions.pop(event.run_id or "", None)
        self._run_client_tools.pop(event.run_id or "", None)
        self._run_output.pop(event.run_id or "", None)
        self._results.pop(event.run_id or "", None)
        self._started.discard(event.run_id or "")
        if self._posted and not self._started:
            posted, self._posted = self._posted, []
            for message in posted:
                self._append(message)

    def _proactive(self, event: EventRecord, data: MessageProactiveData) -> None:
        tainted = data.get("tainted")
        if tainted and self.tainted is None:
            self.tainted = f"message posted from {data.get('from_session')!r} " \
                           f"(seq {event.seq}): {tainted}"
        message = AssistantMessage(text=data.get("content", ""))
        if self._started:
            # A run of this session is under way: its turn (calls and their results,
            # the model's next answer) is not interrupted by a message of another one.
            self._posted.append(message)
        else:
            self._append(message)

    def _added(self, event: EventRecord, data: MessageAddedData) -> None:
        """A message a client added without a run: a user message begins a turn, an
        assistant one is the agent's own. Written only while no run of the session
        is active; were one started (an older log), it joins when that run ends."""
        content = data.get("content", "")
        message: AnyMessage = (UserMessage(content=content) if data.get("role") == "user"
                               else AssistantMessage(text=content))
        if self._started:
            self._posted.append(message)
            return
        if isinstance(message, UserMessage):
            self._turn()
        self._append(message)

    def _compacted(self, event: EventRecord, data: SessionCompactedData) -> None:
        self.messages, self.origins = compacted(self.messages, self.origins, data)
        self.memo.rewritten()
        if data.get("strategy") == "clear_tool_results":
            return
        if self._pending:
            # Calls whose message was compacted away can get no result any more.
            last = next((m for m in reversed(self.messages)
                         if isinstance(m, AssistantMessage)), None)
            if last is None or not set(self._pending) <= {c.id for c in last.tool_calls}:
                self._pending = {}
        self.summary = str(data.get("summary") or "") or None
        self.summary_range = (int(data.get("from_seq", 0)), int(data.get("to_seq", 0)))
        self.turns = [t for t in self.turns if t > self.summary_range[1]]

    def _append(self, message: AnyMessage) -> None:
        if self._pending:
            self.messages.extend(_unanswered(self._pending))
            self.origins.extend([self._pending_origin] * len(self._pending))
            self._pending = {}
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            self.messages.extend(deferred)
            self.origins.extend([self._seq] * len(deferred))
        self.messages.append(message)
        self.origins.append(self._seq)
        if isinstance(message, AssistantMessage) and message.tool_calls:
            self._pending = {c.id: c.name for c in message.tool_calls}
            self._pending_origin = self._seq

    def extend(self, events: Iterable[EventRecord]) -> None:
        for event in events:
            self.apply(event)

    def for_model(self) -> list[AnyMessage]:
        """The messages to send, with every tool call answered."""
        if self._pending or self._deferred:
            return [*self.messages, *_unanswered(self._pending), *self._deferred]
        return list(self.messages)

    def for_request(self) -> tuple[Sequence[AnyMessage], tuple[int, int, int]]:
        """:meth:`for_model`'s messages, and where they come from (the request's
        ``provenance``: :mod:`agentd.llm.memo`): its first ones are this history's
        own, a list only ever appended to until the memo's generation changes. With
        nothing to add to them, they are a :class:`Prefix` of that list (a snapshot
        in O(1): the call's own events join the list while it is under way)."""
        messages: Sequence[AnyMessage] = (
            self.for_model() if self._pending or self._deferred else Prefix(self.messages))
        return messages, (self.memo.generation, 0, len(self.messages))

    def output_schema(self, run_id: str) -> dict[str, Any] | None:
        """The JSON Schema the sender of run ``run_id``'s message asked for, if any."""
        return self._run_output.get(run_id)

    def client_tools(self, run_id: str) -> list[ToolSpec]:
        """The tools the sender of run ``run_id``'s message runs itself."""
        return list(self._run_client_tools.get(run_id, ()))

    def system(self, instructions: str, run_id: str | None = None) -> str:
        """The system prompt for these messages: ``instructions`` (the agent's), the
        instructions the message of run ``run_id`` came with (its sender's, for that
        run), and the summary."""
        theirs = self._run_instructions.get(run_id or "")
        if theirs:
            instructions = (f"{instructions}\n\n" if instructions else "") + (
                "<caller_instructions>\nThe client that sent this turn's message gives "
                "these instructions for it:\n" + theirs + "\n</caller_instructions>")
        return with_summary(instructions, self.summary)


_Fold = Callable[[SessionHistory, EventRecord, Any], None]
_RESTORED = kind_of(SessionRestored)
#: What each kind does to the conversation (the rest change nothing).
_FOLDS: dict[str, _Fold] = {
    kind_of(MessageUser): SessionHistory._user,
    kind_of(RunStarted): SessionHistory._started_run,
    kind_of(MessageAssistant): SessionHistory._assistant,
    kind_of(ToolFinished): SessionHistory._tool_result,
    kind_of(WorkspaceSnapshot): SessionHistory._snapshot,
    kind_of(SessionCompacted): SessionHistory._compacted,
    kind_of(MessageProactive): SessionHistory._proactive,
    kind_of(MessageAdded): SessionHistory._added,
    kind_of(OutputInvalid): SessionHistory._output_invalid,
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
                  agent_id: str | None = None, log: list[EventRecord] | None = None
                  ) -> SessionHistory:
        """The session's history, read from the log only if it may be behind ``min_seq``.
        ``log``: the session's log from seq 1 (known to the caller: a session the
        message just created), folded when the session is not cached."""
        history = self._items.pop(session_id, None)
        if history is None:
            history = (SessionHistory.from_log(session_id, log, agent_id)
                       if log and log[0].seq == 1 else SessionHistory(session_id, agent_id))
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

    def cached(self, session_id: str) -> bool:
        return session_id in self._items

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
