"""Runs as data: finished runs as JSON lines, and preference pairs, from the log.

``GET /v1/export/runs`` (``agentd export traces``) writes one JSON object per finished
run: its ids, status and times, its messages in the chat format trainers read
(``role``/``content``, assistant ``tool_calls`` as Hugging Face chat templates take
them, ``tool`` results), each tool call with its outcome (policy, approval, error,
denial), its model calls, final output, usage, cost and error; with ``context`` also
the conversation the model had before the run. ``GET /v1/export/pairs`` (``agentd
export pairs``) writes preference pairs in the conversational form TRL's
``DPOTrainer`` reads (``prompt``, ``chosen``, ``rejected``: lists of messages).

Which alternatives make a pair (docs/operations.md, "Traces as data"):

- **edited arguments**: a person approved a tool call with other arguments
  (``agentd approve --args``). ``prompt``: the conversation up to that model call;
  ``rejected``: the assistant message as the model wrote it; ``chosen``: the same
  message with the person's arguments. Always emitted.
- **denied call** (``denied``, opt-in): a person denied a tool call and the model's
  next step in the run was not itself denied. ``rejected``: the message with the denied
  call; ``chosen``: that next step. An approximation: the next step was written after
  seeing the denial, so it answers a longer prompt than the one it is paired on.

Not pairs: a call approved as it was (nothing was preferred to it), a policy's own
deny (no person chose), forks (two continuations of one prefix with no judgement
between them) and restores (an operator rewinds for many reasons; the log does not say
the abandoned turn was worse).

Everything is read from the log a page of runs at a time (the run listing's keyed
pages, newest first), so an export of any size holds one run in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from agentd.errors import InvalidInput
from agentd.llm.messages import AssistantMessage, ToolResultMessage, UserMessage
from agentd.runtime.history import SessionHistory
from agentd.store.records import EventRecord, RunRecord, iso

if TYPE_CHECKING:
    from agentd.store import Store

__all__ = ["DEFAULT_MAX_CHARS", "EXPORT_STATUSES", "Dataset", "ExportFilter",
           "pairs_of_run", "run_line"]

#: Runs that can be exported: finished ones.
EXPORT_STATUSES = ("completed", "failed", "cancelled", "interrupted")
#: A string longer than this (a tool's output, a pasted file) is cut, and the line
#: says so (``truncated``); 0 keeps everything.
DEFAULT_MAX_CHARS = 65_536
_PAGE = 100

Message = dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportFilter:
    """Which runs: every filter given must hold (``agents``: a token's scope)."""

    agent: str | None = None
    agents: Sequence[str] | None = None
    statuses: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    limit: int | None = None

    def check(self) -> None:
        unknown = sorted(set(self.statuses) - set(EXPORT_STATUSES))
        if unknown:
            raise InvalidInput(f"status {', '.join(unknown)} cannot be exported (only "
                               f"finished runs: {', '.join(EXPORT_STATUSES)})",
                               field="query.status")
        if self.limit is not None and self.limit < 1:
            raise InvalidInput("limit must be at least 1", field="query.limit")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInput("since must be before until", field="query.until")


class _Cap:
    def __init__(self, max_chars: int) -> None:
        self.max = max_chars
        self.cut = False

    def text(self, value: str) -> str:
        if self.max <= 0 or len(value) <= self.max:
            return value
        self.cut = True
        return f"{value[:self.max]}…[cut: {len(value)} characters]"

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


def _call(call: Mapping[str, Any], cap: _Cap, arguments: Any = None) -> dict[str, Any]:
    return {"id": call.get("id"), "type": "function",
            "function": {"name": call.get("name"),
                         "arguments": cap.value(call.get("arguments") if arguments is None
                                                else arguments)}}


def _assistant(data: Mapping[str, Any], cap: _Cap,
               edit: tuple[str, Any] | None = None) -> Message:
    """A ``message.assistant`` as a chat message (``edit``: one call's arguments
    replaced)."""
    message: Message = {"role": "assistant", "content": cap.text(str(data.get("text") or ""))}
    calls = data.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [
            _call(c, cap, edit[1] if edit is not None and c.get("id") == edit[0] else None)
            for c in calls if isinstance(c, Mapping)]
    return message


def _from_history(history: SessionHistory, cap: _Cap) -> list[Message]:
    out: list[Message] = []
    if history.summary:
        out.append({"role": "system", "content": cap.text(
            f"The earlier part of this conversation, summarised:\n{history.summary}")})
    for m in history.messages:
        if isinstance(m, UserMessage):
            out.append({"role": "user", "content": cap.text(m.content)})
        elif isinstance(m, AssistantMessage):
            out.append(_assistant({"text": m.text, "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments}
                for c in m.tool_calls]}, cap))
        elif isinstance(m, ToolResultMessage):
            out.append({"role": "tool", "tool_call_id": m.call_id, "name": m.name,
                        "content": cap.text(m.content)})
    return out


class _Run:
    """A run's messages, tool calls and model calls, from its events in order."""

    def __init__(self, cap: _Cap) -> None:
        self.cap = cap
        self.messages: list[Message] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.steps: list[dict[str, Any]] = []
        self.requests: dict[str, Mapping[str, Any]] = {}
        self.started_seq: int | None = None

    def event(self, event: EventRecord) -> None:
        kind, data = event.kind, event.data
        if kind == "run.started" and self.started_seq is None:
            self.started_seq = event.seq
        elif kind == "message.user":
            self._user(data)
        elif kind == "message.added" and data.get("role") in ("user", "assistant"):
            self.messages.append({"role": data["role"],
                                  "content": self.cap.text(str(data.get("content", "")))})
        elif kind == "message.assistant":
            self.messages.append(_assistant(data, self.cap))
            self.steps.append({k: data.get(k) for k in (
                "step", "model", "finish_reason", "usage", "duration_ms")})
            for c in data.get("tool_calls") or []:
                if isinstance(c, Mapping) and isinstance(c.get("id"), str):
                    self.calls[c["id"]] = {"id": c["id"], "name": c.get("name"),
                                           "arguments": self.cap.value(c.get("arguments"))}
        elif kind in ("tool.started", "tool.finished"):
            self._tool(kind, data)
        elif kind == "approval.requested":
            self.requests[str(data.get("effect_id"))] = data
        elif kind == "approval.decided":
            request = self.requests.get(str(data.get("effect_id")), {})
            call = self.calls.get(str(request.get("call_id")))
            if call is not None:
                call["approval"] = {k: self.cap.value(data[k]) for k in (
                    "action", "by", "reason", "arguments") if data.get(k) is not None}

    def _user(self, data: Mapping[str, Any]) -> None:
        for result in data.get("tool_results") or []:
            self.messages.append({"role": "tool", "tool_call_id": result.get("call_id"),
                                  "name": result.get("name"),
                                  "content": self.cap.text(str(result.get("output", "")))})
        if data.get("content"):
            self.messages.append({"role": "user",
                                  "content": self.cap.text(str(data["content"]))})

    def _tool(self, kind: str, data: Mapping[str, Any]) -> None:
        call_id = data.get("call_id")
        if not isinstance(call_id, str):
            return
        call = self.calls.setdefault(call_id, {"id": call_id, "name": data.get("name"),
                                               "arguments": {}})
        policy = data.get("policy")
        if isinstance(policy, Mapping) and policy.get("action"):
            call["policy"] = policy["action"]
        if kind == "tool.finished":
            output = self.cap.text(str(data.get("output", "")))
            call.update(output=output, is_error=bool(data.get("is_error")),
                        duration_ms=data.get("duration_ms"))
            for flag in ("denied", "skipped"):
                if data.get(flag):
                    call[flag] = True
            self.messages.append({"role": "tool", "tool_call_id": call_id,
                                  "name": data.get("name"), "content": output})


def run_line(run: RunRecord, agent_name: str, session_key: str,
             events: Sequence[EventRecord], *, max_chars: int = DEFAULT_MAX_CHARS,
             context: list[Message] | None = None) -> dict[str, Any]:
    """One finished run as the object of its export line."""
    cap = _Cap(max_chars)
    parts = _Run(cap)
    for event in events:
        parts.event(event)
    usage = run.usage or {}
    line: dict[str, Any] = {
        "run_id": run.id, "agent": agent_name, "agent_id": run.agent_id,
        "session": session_key, "session_id": run.session_id, "status": run.status,
        "created_at": iso(run.created_at), "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at)}
    if context is not None:
        line["context"] = context
    line.update({
        "messages": parts.messages, "tool_calls": list(parts.calls.values()),
        "model_calls": parts.steps, "output": cap.text(run.output or "") or None,
        "steps": run.steps, "usage": usage, "cost_usd": usage.get("cost_usd"),
        "error": run.error, "truncated": cap.cut})
    return line


def _calls(event: EventRecord) -> list[str]:
    return [str(c.get("id")) for c in event.data.get("tool_calls") or ()
            if isinstance(c, Mapping)]


def _asked(events: Sequence[EventRecord], request: EventRecord) -> EventRecord | None:
    """The model call that made the call ``request`` asks about."""
    call_id = str(request.data.get("call_id"))
    return next((e for e in reversed(events) if e.seq < request.seq
                 and e.kind == "message.assistant" and call_id in _calls(e)), None)


def _next_step(events: Sequence[EventRecord], after: int) -> EventRecord | None:
    """The run's next model call after index ``after``, unless its own calls were
    denied too."""
    step = next((e for e in events[after + 1:] if e.kind == "message.assistant"), None)
    if step is None:
        return None
    refused = {str(e.data.get("call_id")) for e in events
               if e.kind == "tool.finished" and e.data.get("denied")}
    return None if refused.intersection(_calls(step)) else step


def pairs_of_run(events: Sequence[EventRecord], *, denied: bool = False
                 ) -> list[tuple[str, EventRecord, EventRecord, Mapping[str, Any]]]:
    """The alternatives a run's events hold, before their prompts are read: ``(rule,
    the assistant event a person judged, the chosen one (the same for an edit),
    the decision)``."""
    requests = {str(e.data.get("effect_id")): e for e in events
                if e.kind == "approval.requested" and e.data.get("kind") == "policy"}
    found: list[tuple[str, EventRecord, EventRecord, Mapping[str, Any]]] = []
    for i, event in enumerate(events):
        request = requests.get(str(event.data.get("effect_id"))) \
            if event.kind == "approval.decided" else None
        asked = _asked(events, request) if request is not None else None
        if request is None or asked is None:
            continue
        action, edited = event.data.get("action"), event.data.get("arguments")
        if action == "approve" and isinstance(edited, Mapping) \
                and dict(edited) != request.data.get("arguments"):
            found.append(("edited_arguments", asked, asked, event.data))
        elif action == "deny" and denied:
            after = _next_step(events, i)
            if after is not None:
                found.append(("denied_call", asked, after, event.data))
    return found


class Dataset:
    """Exports of finished runs and preference pairs, read from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _runs(self, flt: ExportFilter) -> AsyncIterator[tuple[RunRecord, str, str]]:
        cursor: str | None = None
        left = flt.limit
        while True:
            page = await self.store.list_runs(
                agent=flt.agent, statuses=list(flt.statuses or EXPORT_STATUSES),
                since=flt.since, until=flt.until, cursor=cursor,
                limit=min(_PAGE, left) if left is not None else _PAGE,
                agents=None if flt.agents is None else list(flt.agents))
            for found in page.runs:
                yield found
            if left is not None:
                left -= len(page.runs)
            if page.next_cursor is None or (left is not None and left <= 0):
                return
            cursor = page.next_cursor

    async def _prompt(self, session_id: str, before: int, cap: _Cap) -> list[Message]:
        """The conversation the model had at ``before`` (a seq of its log)."""
        events = await self.store.read_events(session_id, before=before)
        return _from_history(SessionHistory.from_log(session_id, events), cap)

    def runs(self, flt: ExportFilter, *, context: bool = False,
             max_chars: int = DEFAULT_MAX_CHARS) -> AsyncIterator[bytes]:
        """The export lines of the runs ``flt`` selects, newest first (checked now:
        :class:`InvalidInput` before the first line)."""
        flt.check()
        return self._run_lines(flt, context, max_chars)

    async def _run_lines(self, flt: ExportFilter, context: bool, max_chars: int
                         ) -> AsyncIterator[bytes]:
        async for run, name, key in self._runs(flt):
            events = await self.store.run_events(run)
            before: list[Message] | None = None
            if context:
                started = next((e.seq for e in events if e.kind == "run.started"), None)
                before = [] if started is None else \
                    await self._prompt(run.session_id, started, _Cap(max_chars))
            line = run_line(run, name, key, events, max_chars=max_chars, context=before)
            yield orjson.dumps(line, default=str) + b"\n"

    def pairs(self, flt: ExportFilter, *, denied: bool = False,
              max_chars: int = DEFAULT_MAX_CHARS) -> AsyncIterator[bytes]:
        """Preference pairs from the runs ``flt`` selects (see the module's rules)."""
        flt.check()
        return self._pair_lines(flt, denied, max_chars)

    async def _pair_lines(self, flt: ExportFilter, denied: bool, max_chars: int
                          ) -> AsyncIterator[bytes]:
        async for run, name, key in self._runs(flt):
            events = await self.store.run_events(run)
            if not any(e.kind == "approval.decided" for e in events):
                continue
            for rule, asked, chosen, decision in pairs_of_run(events, denied=denied):
                cap = _Cap(max_chars)
                call_id = next(
                    (r.data.get("call_id") for r in events if r.kind == "approval.requested"
                     and r.data.get("effect_id") == decision.get("effect_id")), None)
                edit = (str(call_id), decision.get("arguments")) \
                    if rule == "edited_arguments" else None
                pair = {"prompt": await self._prompt(run.session_id, asked.seq, cap),
                        "chosen": [_assistant(chosen.data, cap, edit)],
                        "rejected": [_assistant(asked.data, cap)],
                        "agentd": {"rule": rule, "run_id": run.id, "agent": name,
                                   "session": key, "seq": asked.seq,
                                   "approval_id": decision.get("approval_id"),
                                   "by": decision.get("by"), "truncated": cap.cut}}
                yield orjson.dumps(pair, default=str) + b"\n"
