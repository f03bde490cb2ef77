"""Compaction: a session's older turns summarised (or their tool results cleared)
instead of dropped when the conversation nears the model's context window.

A compaction is one ``session.compacted`` event naming the seq range it replaces; the
fold (:mod:`agentd.runtime.history`) applies it, and the log keeps every original, so a
restore to a seq before it gives the whole conversation back. Three rules keep it from
ever corrupting a session:

* the cut (:func:`choose_cut`) falls only where a turn begins (a user message whose run
  started, every earlier tool call answered), keeps the latest ``keep_turns`` turns,
  and never takes in an event of a run that has not finished;
* the summary is written first and the event appended after, in one commit guarded so
  that a restore or another compaction committed in between voids it
  (``session_changed``): a range is never applied to a log it was not chosen from;
* anything that fails (the model, an empty summary, the guard) writes nothing.

The summary model is called through the kernel like a run's step (scheduler, retries,
fallbacks, breakers), and its usage is charged to the agent in the commit of the event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from agentd.errors import AgentdError, Conflict
from agentd.events import (
    CompactionStrategy,
    ErrorData,
    Event,
    SessionCompacted,
    SessionCompactedData,
    StepCompactionData,
    UsageData,
)
from agentd.llm.catalog import ModelInfo, estimate_parts, estimate_tokens
from agentd.llm.messages import (
    AssistantMessage,
    MediaPart,
    ModelRequest,
    ToolResultMessage,
    UserMessage,
)
from agentd.llm.quoting import quote
from agentd.memory._modelcall import MemoryCall, Note, call_model
from agentd.runtime.calls import Kernel, Target
from agentd.runtime.history import (
    AnyMessage,
    HistoryCache,
    SessionHistory,
    compacted,
    is_cleared,
    with_summary,
)
from agentd.store import NewEvent, Store
from agentd.store.records import EventRecord, RunRecord, UsageCharge, live_events

if TYPE_CHECKING:
    from agentd.llm.catalog import Catalog
    from agentd.runtime.agents import Agents
    from agentd.runtime.bus import EventBus
    from agentd.settings import AgentSettings

__all__ = ["SUMMARY_INSTRUCTIONS", "TRANSCRIPT_TAG", "Compaction", "Compactor", "Cut",
           "choose_cut", "conversation_tokens", "transcript"]

log = logging.getLogger(__name__)

#: The tag the conversation to summarise is sent in (the scripted model knows it).
TRANSCRIPT_TAG = "conversation_to_summarize"
SUMMARY_INSTRUCTIONS = (
    "You compact the earlier part of a conversation between a user and an AI agent "
    "into a summary the agent will read instead of those messages. Keep every fact, "
    "decision, open task and commitment, every name, number, identifier, path and URL, "
    "and what tools were used for and what they found. Drop greetings and repetition. "
    "If a previous summary is given, fold it in: your summary replaces it. Write plain "
    "prose or short bullet points, in the conversation's language, and nothing else. "
    "The transcript writes &, < and > as &amp;, &lt; and &gt;: write the characters "
    "themselves.")
#: The longest a single message may be in the text sent to the summary model.
_ENTRY_CHARS = 4000
_RUN_ACTIVE = ("queued", "running", "waiting_approval")
_CHANGED_KINDS = ("session.restored", "session.compacted")


# -- the cut -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Cut:
    """Where a compaction cuts: the seqs it replaces (inclusive), and how many
    messages of the model's view that changes."""

    from_seq: int
    to_seq: int
    messages: int


def choose_cut(history: SessionHistory, *, keep_turns: int, strategy: CompactionStrategy,
               busy_from: int | None) -> Cut | None:
    """The latest cut that keeps ``keep_turns`` turns verbatim, or None when there is
    nothing to compact. A pure function of the folded history.

    A cut falls just before a turn's first message (where every earlier tool call is
    answered), and its range ends before ``busy_from``, the first seq of any run not
    finished (so an active or queued run's events are never inside it). A turn whose
    start cannot be reached that way (a message queued behind a run that then went
    on) is skipped for an earlier one."""
    turns, origins, messages = history.turns, history.origins, history.messages
    limit = history.last_seq if busy_from is None else busy_from - 1
    index = len(messages)
    for i in range(len(turns) - keep_turns, -1, -1):
        start = turns[i]
        to_seq = min(start - 1, limit)
        while index > 0 and origins[index - 1] >= start:
            index -= 1
        if any(o > to_seq for o in origins[:index]):
            continue  # something joined between the range's end and the turn's start
        prefix = messages[:index]
        if strategy == "clear_tool_results":
            hits = [o for m, o in zip(prefix, origins, strict=False)
                    if isinstance(m, ToolResultMessage) and not is_cleared(m)]
            if not hits:
                return None  # an earlier cut clears a subset of these: none either
            return Cut(from_seq=min(hits), to_seq=to_seq, messages=len(hits))
        if not prefix:
            return None
        # The summary replaces the conversation up to to_seq: from the start of the
        # session's state, or of the summary it folds in.
        low = (history.summary_range[0] if history.summary is not None
               else history.first_seq or 1)
        return Cut(from_seq=min(low, *origins[:index]), to_seq=to_seq,
                   messages=len(prefix))
    return None


# -- what the summary model reads ------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]} [... {len(text) - limit} more]"


def _entry(message: AnyMessage, limit: int) -> str:
    if isinstance(message, UserMessage):
        head, body = "[user]", message.content
    elif isinstance(message, ToolResultMessage):
        head = f"[tool {message.name}{' error' if message.is_error else ''}]"
        body = message.content
    else:
        assert isinstance(message, AssistantMessage)
        calls = "; ".join(f"calls {c.name} {c.arguments}" for c in message.tool_calls)
        head, body = "[assistant]", " ".join(p for p in (message.text, calls) if p)
    media = [p for p in getattr(message, "parts", ()) if isinstance(p, MediaPart)]
    if media:
        # Images and files by reference (kind, type, name, size, blob): the summary can
        # name them, and the blob stays the session's (the log keeps the message).
        # (First: a long text is clipped, not them.)
        body = " ".join([*(f"[{p.label()} blob:{p.blob[:12]}]" for p in media), body])
    # Continuation lines are indented: only an entry's first line starts with '['. The
    # text is quoted: a message cannot close the transcript and speak as its frame.
    return quote(f"{head} {_clip(body, limit)}").replace("\n", "\n  ")


def transcript(summary: str | None, messages: Sequence[AnyMessage], *,
               max_chars: int | None = None, tag: str = TRANSCRIPT_TAG) -> str:
    """The messages to summarise as text (and the summary they follow), one entry per
    message, each cut to fit ``max_chars`` overall."""
    limit = _ENTRY_CHARS
    if max_chars is not None and messages:
        limit = max(200, min(limit, (max_chars - len(summary or "")) // len(messages)))
    parts = [f"<{tag}>"]
    if summary:
        parts += ["<previous_summary>", quote(summary), "</previous_summary>"]
    parts += [_entry(m, limit) for m in messages]
    parts.append(f"</{tag}>")
    return "\n".join(parts)


def conversation_tokens(summary: str | None, messages: Sequence[AnyMessage]) -> int:
    """The estimated tokens of a conversation: its messages and its summary (not the
    agent's instructions and tools, which compaction leaves as they are)."""
    fixed, sizes = estimate_parts(ModelRequest(system=with_summary("", summary),
                                               messages=list(messages)))
    return fixed + sum(sizes)


# -- the service -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Compaction:
    """A compaction committed: its event."""

    event: EventRecord

    @property
    def data(self) -> SessionCompactedData:
        return cast(SessionCompactedData, self.event.data)

    def to_api(self) -> dict[str, Any]:
        data = self.data
        return {"seq": self.event.seq, "from_seq": data["from_seq"],
                "to_seq": data["to_seq"], "strategy": data["strategy"],
                "summary": data.get("summary"), "messages": data["messages"],
                "model": data["model"], "usage": data["usage"],
                "estimated_tokens_before": data["estimated_tokens_before"],
                "estimated_tokens_after": data["estimated_tokens_after"]}


#: Commits a compaction's event: ``commit(events, usage=..., unless_changed_after=seq)``.
Commit = Callable[..., Awaitable[list[EventRecord]]]


_Call = MemoryCall


class Compactor:
    """Compacts sessions, on demand (:meth:`compact`) or before a run's model call
    (:meth:`before_call`).

    Args:
        store: the log it reads and appends to.
        bus: where a compaction's event is published.
        histories: the cached histories, given the event.
        agents: agents and their plans (models, settings).
        kernel: every model call's way (scheduler, retries, breakers).
        catalog: the summary model's window and prices when it is not the agent's.
    """

    def __init__(self, store: Store, *, bus: EventBus, histories: HistoryCache,
                 agents: Agents, kernel: Kernel, catalog: Catalog) -> None:
        self.store = store
        self.bus = bus
        self.histories = histories
        self.agents = agents
        self.kernel = kernel
        self.catalog = catalog

    async def compact(self, name: str, key: str, *, strategy: CompactionStrategy | None = None,
                      keep_turns: int | None = None) -> Compaction:
        """Compact a session now (the API's and CLI's way). Conflict
        ``nothing_to_compact`` when no turn can be compacted, ``session_changed`` when
        the session was restored or compacted meanwhile; a :class:`ModelError` when the
        summary could not be written. Each writes nothing."""
        agent = await self.agents.get(name)
        plan = self.agents.plan(agent)
        session = await self.store.get_session(agent.id, key)
        settings = plan.settings.memory.compaction
        call = _Call(agent_id=agent.id, agent=agent.name, settings=plan.settings,
                     targets=plan.targets, priority=plan.settings.priority)
        events = await self.store.read_events(session.id)
        history = SessionHistory.from_log(session.id, events, agent.id)
        event, charge = await self._prepare(
            history, events, call, strategy or settings.strategy,
            keep_turns or settings.keep_turns, run=None)
        records = await self.store.append(session.id, [event], usage=charge,
                                          unless_changed_after=history.last_seq)
        self.bus.publish(records)
        self.histories.offer(records)
        return Compaction(event=records[0])

    async def before_call(self, request: ModelRequest, history: SessionHistory, *,
                          info: ModelInfo | None, run: RunRecord, agent: str,
                          settings: AgentSettings, targets: Sequence[Target],
                          priority: str, note: Note, commit: Commit
                          ) -> StepCompactionData | None:
        """Compact within a run when its next call passes ``threshold`` of the model's
        window (less the output reserved); None when it does not (or automatic
        compaction is off, or the window is unknown). The event is committed through
        ``commit`` (under the run's lease) and so folded into ``history``. A failure is
        reported, never raised (the caller trims instead); losing the lease is raised."""
        options = settings.memory.compaction
        if not options.auto or info is None:
            return None
        budget = info.context_window - (request.max_tokens or 0)
        if estimate_tokens(request) <= options.threshold * budget:
            return None
        call = _Call(agent_id=run.agent_id, agent=agent, settings=settings,
                     targets=targets, priority=priority, note=note)
        try:
            events = await self.store.read_events(run.session_id)
            fresh = SessionHistory.from_log(run.session_id, events, run.agent_id)
            event, charge = await self._prepare(fresh, events, call, options.strategy,
                                                options.keep_turns, run=run)
            records = await commit([event], usage=charge,
                                   unless_changed_after=fresh.last_seq)
        except AgentdError as exc:
            if exc.code == "nothing_to_compact":
                return {"status": "nothing"}
            log.info("run %s: compaction failed (%s), trimming instead", run.id, exc.code)
            return {"status": "failed", "error": cast(ErrorData, exc.to_dict())}
        return {"status": "compacted", "seq": records[0].seq}

    async def _prepare(self, history: SessionHistory, events: list[EventRecord], call: _Call,
                       strategy: CompactionStrategy, keep_turns: int, *,
                       run: RunRecord | None) -> tuple[NewEvent, UsageCharge | None]:
        """The event of a compaction of ``history`` (the fold of ``events``), its
        summary written, and the summary's usage to charge with it."""
        charge: UsageCharge | None = None
        busy = await self._busy_from(call.agent_id, history.session_id, events)
        cut = choose_cut(history, keep_turns=keep_turns, strategy=strategy, busy_from=busy)
        if cut is None:
            raise Conflict(
                f"nothing to compact: the session has no turn older than its latest "
                f"{keep_turns} that is not already compacted", code="nothing_to_compact",
                details={"keep_turns": keep_turns})
        view = history.for_model()
        before = conversation_tokens(history.summary, view)
        data: SessionCompactedData = {
            "from_seq": cut.from_seq, "to_seq": cut.to_seq, "strategy": strategy,
            "model": None, "usage": None, "messages": cut.messages, "auto": run is not None,
            "estimated_tokens_before": before, "estimated_tokens_after": before,
            "by": "run" if run is not None else "api"}
        summary = history.summary
        if strategy == "summarize":
            replaced = [m for m, o in zip(history.messages, history.origins, strict=True)
                        if cut.from_seq <= o <= cut.to_seq]
            summary, model, usage, charge = await self._summarize(
                call, history.summary, replaced)
            data["summary"], data["model"], data["usage"] = summary, model, usage
        kept, _ = compacted(history.messages, history.origins, data)
        data["estimated_tokens_after"] = conversation_tokens(
            summary, [*kept, *view[len(history.messages):]])
        return NewEvent.of(cast(Event, SessionCompacted(data=data)),
                           run.id if run is not None else None), charge

    async def _busy_from(self, agent_id: str, session_id: str, events: list[EventRecord]
                         ) -> int | None:
        """The first seq of an event of a run of the session not finished (the store's
        runs say which), or None."""
        active = {r.id for r in await self.store.runs_with_status(_RUN_ACTIVE,
                                                                  agent_id=agent_id)
                  if r.session_id == session_id}
        return min((e.seq for e in live_events(events) if e.run_id in active), default=None)

    async def _summarize(self, call: _Call, previous: str | None,
                         messages: list[AnyMessage]
                         ) -> tuple[str, str, UsageData | None, UsageCharge | None]:
        """The summary, the model that wrote it, its usage and the charge for it (made
        with the event). A :class:`ModelError` when it could not be written."""
        options = call.settings.memory.compaction
        answer = await call_model(
            self.kernel, self.catalog, call, model=options.model,
            system=SUMMARY_INSTRUCTIONS, max_tokens=options.max_summary_tokens,
            content=lambda room: transcript(previous, messages, max_chars=room),
            what="summary", endpoints=self.agents.endpoints)
        return answer.text, answer.model, answer.usage, answer.charge
