"""Driving an adapter-backed agent's run: one adapter turn per message, logged.

A run of an agent whose ``model`` is ``adapter:MODULE:OBJECT`` calls no model and no
tool of agentd's: its adapter answers. The run is still an ordinary durable run:
``message.user`` is committed by the API before the run starts, the adapter's text
is streamed to subscribers as it comes, each tool the adapter reports is logged
(``tool.started`` / ``tool.finished``), and the reply ends the run in one commit
(``message.assistant`` with the model ``adapter:...`` and ``run.completed``).

- **Bounded.** The turn has ``settings.timeout_s`` (else ``[adapters] timeout_s``)
  to answer: past it, or when the adapter raises or streams an ``error``, the run
  fails (``adapter_timeout`` / ``adapter_error``) and the daemon goes on.
- **Budgets.** Usage the adapter reports (``done``'s ``usage``) is charged to the
  agent like a model call's, and a run, agent or tenant over its budget is refused
  before the adapter is called.
- **Steer.** A message steered into the run while the adapter answers is sent to
  the adapter as the next turn of the same run, after the first reply is logged.
- **Crash.** A turn is an external effect with an unknown outcome (the adapter may
  have run tools): a run found under way after a restart, with its turn unanswered
  in the log, is sent again only if the adapter declares ``idempotent = True``;
  otherwise it ends ``interrupted`` (as a non-idempotent tool's unknown outcome
  does under ``on_unknown_outcome = "interrupt"``), and nothing is repeated.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, cast

import orjson

from agentd.adapters._protocol import _CURRENT, AdapterBase, Session
from agentd.adapters._service import AdapterModel, Adapters
from agentd.errors import AgentdError
from agentd.events import (
    MessageAssistant,
    MessageAssistantData,
    RunCompleted,
    RunInterrupted,
    ToolFinished,
    ToolFinishedData,
    ToolStarted,
    ToolStartedData,
)
from agentd.llm.messages import AssistantMessage, Usage, UserMessage
from agentd.runtime.history import SessionHistory
from agentd.runtime.loop import RunExecutor, RunOutcome
from agentd.store import NewEvent, Steered
from agentd.store.records import UsageCharge

__all__ = ["AdapterExecutor"]

#: What a reported tool's name, input and output may hold (the adapter relays text
#: a model wrote: it is cut, never trusted).
_NAME_CHARS = 200
_OUTPUT_CHARS = 64 * 1024
_INPUT_BYTES = 64 * 1024


#: A reported call not ended yet: its call id here, name, start (monotonic), and the
#: framework's own id of it (None when it gave none).
_OpenCall = tuple[str, str, float, str | None]


class _TurnFailed(Exception):
    def __init__(self, error: AgentdError) -> None:
        super().__init__(error.message)
        self.error = error


def _arguments(value: Any) -> dict[str, Any]:
    """A reported tool input as the JSON object a ``tool.started`` holds."""
    if not isinstance(value, dict):
        value = {} if value is None else {"input": value}
    try:
        raw = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return {"input": str(value)[:_INPUT_BYTES]}
    if len(raw) > _INPUT_BYTES:
        return {"input": raw[:_INPUT_BYTES].decode(errors="replace"), "cut": len(raw)}
    return cast(dict[str, Any], orjson.loads(raw))


def _field(event: Any, key: str) -> Any:
    """A stream event's ``input``, ``output``, ``is_error`` or call id: agentd's
    :class:`StreamEvent` has them as attributes; termo-agent's own has none of them and
    its adapters put them in ``metadata`` (``{"input": ...}``, ``{"output": ...,
    "is_error": ...}``, with ``call_id`` or ``tool_use_id``), so both are read."""
    value = getattr(event, key, None)
    if value is None:
        metadata = getattr(event, "metadata", None)
        if isinstance(metadata, dict):
            value = metadata.get(key)
    return value


def _metadata(event: Any) -> dict[str, Any] | None:
    """A reported call's ``metadata`` as JSON (termo-agent's adapters put the call's
    id, input and output there), or None when there is none. Over the input bound,
    its ``input`` and ``output`` (logged in their own places, cut) are left out, then
    all of it."""
    metadata = getattr(event, "metadata", None)
    if not isinstance(metadata, dict) or not metadata:
        return None
    for keep in (metadata, {k: v for k, v in metadata.items()
                            if k not in ("input", "output")}):
        try:
            raw = orjson.dumps(keep, default=str, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return None
        if len(raw) <= _INPUT_BYTES:
            return cast(dict[str, Any], orjson.loads(raw)) or None
    return None


def _call_id(event: Any) -> str | None:
    """The framework's own id of a reported tool call, when it gives one."""
    for key in ("call_id", "tool_use_id"):
        value = _field(event, key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)[:_NAME_CHARS]
    return None


def _usage(reported: Any) -> Usage | None:
    """Token counts from an adapter's ``usage`` (OpenAI's or Anthropic's names)."""
    if not isinstance(reported, dict):
        return None

    def count(*keys: str) -> int:
        for key in keys:
            value = reported.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
        return 0

    usage = Usage(input_tokens=count("input_tokens", "prompt_tokens"),
                  output_tokens=count("output_tokens", "completion_tokens"))
    return usage if usage.input_tokens or usage.output_tokens else None


def _own_send_message(adapter: Any) -> bool:
    """Whether the adapter has a ``send_message`` of its own (not AdapterBase's, which
    is only a placeholder for an adapter that streams)."""
    return (callable(getattr(adapter, "send_message", None))
            and getattr(type(adapter), "send_message", None) is not AdapterBase.send_message)


class AdapterExecutor(RunExecutor):
    """Drives an adapter-backed agent's run (see the module).

    A run whose message asks for the reply whole (``message.user``'s ``whole``:
    termo-agent's ``/api/send`` without ``stream``) calls the adapter's own
    ``send_message``, as termo-agent does; other runs stream."""

    #: The run's first message asked for its reply whole (read with the message).
    _whole = False

    async def _execute(self) -> RunOutcome:
        # (A run started with its message is running before its first step: not resumed.)
        resumed = (self.run.status in ("running", "waiting_approval")
                   and not self.started)
        outcome = await self._begin()
        if outcome is not None:
            return outcome
        model = self.caller.targets[0].model
        adapters = self.services.get(Adapters)
        if not isinstance(model, AdapterModel) or not isinstance(adapters, Adapters):
            return await self._fail(AgentdError(
                "this agent's runs cannot be played by an adapter here",
                code="adapter_unavailable"))
        message = await self._pending_message(0)
        try:
            adapter = await adapters.get(self.run.agent_id, model)
        except AgentdError as exc:
            return await self._fail(exc)
        if resumed and message is not None and not getattr(adapter, "idempotent", False):
            effect_id = f"{self.run.id}:adapter:{self.steps + 1}"
            return await self._finish(RunInterrupted(data={
                "reason": f"adapter {model.target} was answering when the daemon stopped; "
                          "its outcome is unknown and the adapter is not idempotent, so "
                          "the message was not sent again",
                "effect_id": effect_id, "steps": self.steps, "usage": self._used()}))
        # The run's replies so far: committed together with its end (a reply to a
        # message steered in meanwhile follows the first one).
        replies: list[NewEvent] = []
        turns: list[dict[str, str]] = []
        charge: UsageCharge | None = None
        while True:
            if self._stop_reason is not None:
                return await self._cancel(self._stop_reason)
            if message is None:
                return await self._fail(AgentdError(
                    "the run's message could not be read", code="adapter_message"))
            if self.policy.budgeted:
                over = await self._over_budget()
                if over is not None:
                    return await self._fail(over)
            self.steps += 1
            context_seq = self.history.last_seq
            try:
                text, usage = await self._turn(adapter, model, message, turns)
            except _TurnFailed as failed:
                return await self._fail(failed.error)
            data: MessageAssistantData = {
                "text": text, "tool_calls": [], "finish_reason": "stop",
                "usage": None, "model": model.spec, "step": self.steps}
            warnings: list[NewEvent] = []
            if usage is not None:
                if self.policy.budgeted:
                    warnings = await self._budget_warnings(
                        usage.input_tokens + usage.output_tokens, 0.0)
                self.usage = self.usage + usage
                data["usage"] = {"input_tokens": usage.input_tokens,
                                 "output_tokens": usage.output_tokens,
                                 "cached_tokens": 0}
                charge = UsageCharge(
                    agent_id=self.payer_id, agent=self.payer_name,
                    tenant=self.policy.tenant, model=model.spec,
                    input_tokens=usage.input_tokens + (charge.input_tokens if charge
                                                       else 0),
                    output_tokens=usage.output_tokens + (charge.output_tokens if charge
                                                         else 0),
                    cached_tokens=0, cost_usd=0.0)
            replies += [self._new(MessageAssistant(data=data)), *warnings]
            turns += [{"role": "user", "content": message},
                      {"role": "assistant", "content": text}]
            end = RunCompleted(data={"output": text, "steps": self.steps,
                                     "usage": self._used()})
            if self.ok_token is not None and text.strip() == self.ok_token:
                # A heartbeat's "nothing to report" (as for a model's reply).
                replies[-1 - len(warnings)].data["silent"] = end.data["silent"] = True
            try:
                outcome = await self._finish(end, before=replies, steer_guard=context_seq,
                                             charge=charge)
            except Steered:
                # The adapter answered without the message steered in meanwhile: that
                # message is its next turn; the replies are committed together.
                message = await self._pending_message(context_seq)
                continue
            self._charged(charge)
            return outcome

    async def _pending_message(self, after: int) -> str | None:
        """The run's messages logged after seq ``after`` (0: all of them, the first
        and any steered in), joined."""
        queued = self.run.queued_seq
        start = max(after, queued - 2 if queued is not None and queued >= 2 else 0)
        messages = [event for event in await self.store.read_events(self.session_id,
                                                                     after=start)
                    if event.run_id == self.run.id and event.kind == "message.user"]
        if after == 0 and messages:
            self._whole = messages[0].data.get("whole") is True
        texts = [str(m.data.get("content") or "") for m in messages]
        return "\n\n".join(texts) if texts else None

    def _session(self, turns: list[dict[str, str]]) -> Session:
        """The turn's session: its earlier turns read from the log (the messages the
        run answers left out), then this run's earlier ``turns``."""
        history = _conversation(self.history)
        end = len(history)
        while end and history[end - 1]["role"] == "user":
            end -= 1
        return Session(key=self.session_key, agent=self.agent_name, run_id=self.run.id,
                       history=[*history[:end], *turns])

    async def _turn(self, adapter: Any, model: AdapterModel, message: str,
                    turns: list[dict[str, str]]) -> tuple[str, Usage | None]:
        """One adapter turn, bounded by the timeout: its text and reported usage."""
        timeout = self.agent_settings.timeout_s or self._timeout()
        token = _CURRENT.set(self._session(turns))
        self._in_model = True  # a cancel asked for meanwhile stops the turn at once
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await self._stream(adapter, message)
        except TimeoutError:
            if deadline.expired():
                raise _TurnFailed(AgentdError(
                    f"adapter {model.target} did not answer within {timeout:g}s "
                    "(settings.timeout_s, else [adapters] timeout_s)",
                    code="adapter_timeout", retryable=True)) from None
            raise _TurnFailed(self._raised(model, TimeoutError("timed out"))) from None
        except _TurnFailed:
            raise
        except Exception as exc:
            raise _TurnFailed(self._raised(model, exc)) from None
        finally:
            self._in_model = False
            _CURRENT.reset(token)

    def _timeout(self) -> float:
        adapters = self.services.get(Adapters)
        return adapters.timeout_s if isinstance(adapters, Adapters) else 300.0

    @staticmethod
    def _raised(model: AdapterModel, exc: BaseException) -> AgentdError:
        why = str(exc)[:500]
        return AgentdError(f"adapter {model.target} raised {type(exc).__name__}"
                           + (f": {why}" if why else ""), code="adapter_error")

    async def _stream(self, adapter: Any, message: str) -> tuple[str, Usage | None]:
        stream = getattr(adapter, "send_message_stream", None)
        if stream is None or (self._whole and _own_send_message(adapter)):
            text = await adapter.send_message(message, self.session_key)
            if not isinstance(text, str):
                raise TypeError(f"send_message returned {type(text).__name__}, not str")
            self._publish_text(text, False)
            return text, None
        parts: list[str] = []
        open_calls: list[_OpenCall] = []
        calls = 0
        async for event in stream(message, self.session_key):
            kind = getattr(event, "type", None)
            if kind == "token":
                piece = str(getattr(event, "content", "") or "")
                parts.append(piece)
                if piece:
                    self._publish_text(piece, False)
            elif kind == "tool_start":
                calls += 1
                await self._tool_started(event, calls, open_calls)
            elif kind == "tool_end":
                await self._tool_ended(event, open_calls)
            elif kind == "done":
                if not isinstance(event.content, str | None):
                    raise TypeError(f"the done event's content is "
                                    f"{type(event.content).__name__}, not str")
                text = event.content or "".join(parts)
                return text, _usage(event.usage)
            elif kind == "error":
                raise _TurnFailed(AgentdError(
                    f"the adapter reported an error: {str(event.content)[:500]}",
                    code="adapter_error"))
            elif kind in ("progress", "thinking"):
                continue  # informational (termo-agent's): nothing to log
            else:
                raise TypeError(f"unknown stream event {kind!r} (token, tool_start, "
                                "tool_end, done, error, progress, thinking)")
        return "".join(parts), None

    async def _tool_started(self, event: Any, calls: int, open_calls: list[_OpenCall]
                            ) -> None:
        """Log a tool call the adapter reports started (its ``calls``-th this turn)."""
        call_id = f"{self.run.id}:a{self.steps}.{calls}"
        name = str(getattr(event, "name", "") or "tool")[:_NAME_CHARS]
        open_calls.append((call_id, name, time.monotonic(), _call_id(event)))
        started: ToolStartedData = {
            "call_id": call_id, "name": name,
            "arguments": _arguments(_field(event, "input")),
            "effect_id": f"{self.run.id}:adapter:{self.steps}.{calls}"}
        if (metadata := _metadata(event)) is not None:
            started["metadata"] = metadata
        await self._commit([self._new(ToolStarted(data=started))])

    async def _tool_ended(self, event: Any, open_calls: list[_OpenCall]) -> None:
        """Log the end of an open call: paired by the framework's call id when both
        ends carry one, else by name (termo's Claude adapter names an end "unknown"
        when it lost track), else with the oldest open call; an end without a start
        is dropped."""
        name = str(getattr(event, "name", "") or "tool")[:_NAME_CHARS]
        theirs = _call_id(event)
        match = next((c for c in open_calls if theirs is not None and c[3] == theirs),
                     None) or next((c for c in open_calls if c[1] == name),
                                   open_calls[0] if open_calls else None)
        if match is None:
            return
        open_calls.remove(match)
        reported = _field(event, "output")
        output = reported if isinstance(reported, str) else (
            "" if reported is None else str(reported))
        finished: ToolFinishedData = {
            "call_id": match[0], "name": match[1], "output": output[:_OUTPUT_CHARS],
            "is_error": bool(_field(event, "is_error")),
            "duration_ms": round((time.monotonic() - match[2]) * 1000, 3)}
        if (metadata := _metadata(event)) is not None:
            finished["metadata"] = metadata
        await self._commit([self._new(ToolFinished(data=finished))])


class _Converted:
    """A session's conversation as adapters see it, as far as it was converted."""

    __slots__ = ("count", "first", "last", "messages", "turns")

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.turns: list[dict[str, str]] = []
        self.count = 0
        self.first = self.last = -1


#: Per session history (kept while the agent is awake): what was converted, so a turn
#: converts only the messages added since (a long session's turns would otherwise
#: cost in proportion to its length: bench/turns.py --adapter).
_CONVERTED: weakref.WeakKeyDictionary[SessionHistory, _Converted] = (
    weakref.WeakKeyDictionary())


def _conversation(history: SessionHistory) -> list[dict[str, str]]:
    """``{"role", "content"}`` for the history's user messages and assistant texts, in
    order. Incremental: the same message list, grown at its end since the last call
    (the origins of its first and last converted messages unchanged), converts only
    what is new; a compaction or a restore (the list replaced or cut) starts over."""
    messages, origins = history.messages, history.origins
    done = _CONVERTED.get(history)
    count = 0 if done is None else done.count
    if done is None or done.messages is not messages or len(messages) < count or (
            count and (origins[0] != done.first or origins[count - 1] != done.last)):
        done = _CONVERTED[history] = _Converted(messages)
        count = 0
    turns = done.turns
    for m in messages[count:]:
        if isinstance(m, UserMessage):
            turns.append({"role": "user", "content": m.content})
        elif isinstance(m, AssistantMessage) and m.text:
            turns.append({"role": "assistant", "content": m.text})
    done.count = len(messages)
    if messages:
        done.first, done.last = origins[0], origins[-1]
    return turns
