"""The ``scripted`` model: offline, deterministic; the embedded default and test double.

Where a turn comes from, first match wins:

1. the in-process queue (:func:`enqueue`), for tests, per agent name or for all;
2. ``settings.script``: a list of turns played in order, one per model call within a
   session, starting over when exhausted. The position is the number of assistant
   messages already in the session, so it survives restarts with no state of its own;
3. rules: a message ``/tool NAME {json args}`` calls that tool, ``/system`` answers
   with the call's system prompt (``system: <prompt>``: what the agent's instructions,
   a caller's and a summary made of it), a tool result is summarised, anything else
   is echoed back as ``echo: <text>`` (an image or file the message carries as
   ``[image image/png 12x34]``, in its place among the text); a run asking for
   structured output (an output schema) gets a small value of its schema instead of
   the echo or the summary.

A request to summarise a conversation (compaction, :mod:`agentd.memory.compaction`:
its last message a ``<conversation_to_summarize>`` block) is answered before 2 and 3
with a deterministic summary, so tests can assert it exactly: ``Summary:``, the
previous summary's lines as they were, then ``- ROLE: first words`` per message.
A request to consolidate (:mod:`agentd.memory.consolidation`: a
``<conversation_to_consolidate>`` block) is answered with JSON: one memory per user
message (its text, tagged ``consolidated``), and, if the agent has a ``human`` block,
one line appended to it (``- said: first words`` of the first user message).

A turn is ``{"text": "..."}``, ``{"json": VALUE}`` (the text is that value as compact
JSON: a structured answer) or ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``,
optionally with ``"delay_ms"`` to simulate latency (the text is then streamed word by
word across the delay), ``"finish_reason"`` (``"length"`` plays an answer cut off by
the output limit) and ``"error"`` to make the call fail with that message: a failure
that retrying cannot mend, unless ``"retryable": true`` makes it a transient one (the
kernel then retries it, falls back or parks the run, as for a provider outage).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from agentd.errors import InvalidModel, ModelError
from agentd.llm.messages import (
    AssistantMessage,
    Finish,
    ModelRequest,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolResultMessage,
    Usage,
    UsageEvent,
    UserMessage,
)
from agentd.llm.model import Model
from agentd.llm.output import example
from agentd.llm.quoting import unquote

if TYPE_CHECKING:
    from agentd.llm.registry import ProviderInfo

__all__ = ["ScriptedModel", "clear_queue", "create", "enqueue", "validate_script"]

_ALL = "*"
_Message = UserMessage | AssistantMessage | ToolResultMessage
_queues: defaultdict[str, deque[dict[str, Any]]] = defaultdict(deque)
_TOOL_RE = re.compile(r"^/tool\s+([A-Za-z0-9_.\-]+)\s*(.*)$", re.DOTALL)
_WORDS = re.compile(r"\S+\s*|\s+")
_SUMMARY_OPEN = "<conversation_to_summarize>"
_CONSOLIDATE_OPEN = "<conversation_to_consolidate>"
_ENTRY = re.compile(r"^\[([^\]]+)\]\s?(.*)$")
#: Words of each message a scripted summary keeps.
SUMMARY_WORDS = 4


def enqueue(*turns: dict[str, Any], agent: str | None = None) -> None:
    """Queue turns for the next model calls of ``agent`` (or of any agent)."""
    for turn in turns:
        validate_turn(turn)
        _queues[agent or _ALL].append(turn)


def clear_queue() -> None:
    _queues.clear()


_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")


def validate_turn(turn: Any) -> None:
    if not isinstance(turn, dict):
        raise InvalidModel("each scripted turn must be an object")
    unknown = set(turn) - {"text", "json", "tool_calls", "delay_ms", "error", "retryable",
                           "finish_reason"}
    if unknown:
        raise InvalidModel(f"scripted turn has unknown keys: {', '.join(sorted(unknown))}")
    if not any(k in turn for k in ("text", "json", "tool_calls", "error")):
        raise InvalidModel("scripted turn needs 'text', 'json', 'tool_calls' or 'error'")
    if "text" in turn and "json" in turn:
        raise InvalidModel("scripted turn has both 'text' and 'json'")
    if "json" in turn:
        try:
            orjson.dumps(turn["json"])
        except orjson.JSONEncodeError as exc:
            raise InvalidModel(f"scripted turn 'json' cannot be written as JSON: {exc}"
                               ) from None
    if "text" in turn and not isinstance(turn["text"], str):
        raise InvalidModel("scripted turn 'text' must be a string")
    delay = turn.get("delay_ms", 0)
    if not isinstance(delay, int | float) or delay < 0:
        raise InvalidModel("scripted turn 'delay_ms' must be a number >= 0")
    if turn.get("finish_reason", "length") not in _FINISH_REASONS:
        raise InvalidModel("scripted turn 'finish_reason' must be one of "
                           + ", ".join(_FINISH_REASONS))
    if not isinstance(turn.get("retryable", False), bool):
        raise InvalidModel("scripted turn 'retryable' must be true or false")
    calls = turn.get("tool_calls", [])
    if not isinstance(calls, list):
        raise InvalidModel("scripted turn 'tool_calls' must be a list")
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise InvalidModel("each scripted tool call needs a 'name'")
        if not isinstance(call.get("arguments", {}), dict):
            raise InvalidModel("scripted tool call 'arguments' must be an object")


def validate_script(script: Any) -> list[dict[str, Any]]:
    if not isinstance(script, list) or not script:
        raise InvalidModel("settings.script must be a non-empty list of turns")
    for index, turn in enumerate(script):
        try:
            validate_turn(turn)
        except InvalidModel as exc:
            raise InvalidModel(f"settings.script[{index}]: {exc.message}") from None
    return script


class ScriptedModel(Model):
    def __init__(self, *, agent: str = "", script: list[dict[str, Any]] | None = None) -> None:
        self.agent = agent
        self.script = script

    def _next_turn(self, request: ModelRequest, last: _Message | None) -> dict[str, Any]:
        """The turn answering ``request`` (``last``: its last message, if any)."""
        for key in (self.agent, _ALL):
            queue = _queues.get(key)
            if queue:
                return queue.popleft()
        if isinstance(last, UserMessage):
            text = last.content
            if text.startswith(_SUMMARY_OPEN):
                return {"text": _summary(text)}
            if _CONSOLIDATE_OPEN in text:
                return {"text": _consolidation(text)}
        if self.script:
            calls_so_far = sum(isinstance(m, AssistantMessage) for m in request.messages)
            return self.script[calls_so_far % len(self.script)]
        return _rule_turn(request, last)

    def ready(self, request: ModelRequest) -> AssistantMessage | None:
        """A text turn with no delay and no error, answered at once (the message
        :meth:`stream` makes of it). A queued turn, or a ``stream`` replaced (a test
        recording the requests, a subclass), is streamed."""
        if (type(self).stream is not _STREAM or _queues.get(self.agent)
                or _queues.get(_ALL)):
            return None
        last = _last(request)
        turn = self._next_turn(request, last)
        if "tool_calls" in turn or "error" in turn or turn.get("delay_ms"):
            return None  # (nothing was taken off a queue: stream makes the turn again)
        text: str = (orjson.dumps(turn["json"]).decode() if "json" in turn
                     else turn.get("text", ""))
        return AssistantMessage(text=text, usage=_usage(request, last, text),
                                finish_reason=turn.get("finish_reason") or "stop",
                                model=self.spec)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        last = _last(request)
        turn = self._next_turn(request, last)
        delay = float(turn.get("delay_ms", 0)) / 1000.0
        if turn.get("error"):
            if delay:
                await asyncio.sleep(delay)
            retryable = bool(turn.get("retryable", False))
            raise ModelError(str(turn["error"]),
                             code="model_unavailable" if retryable else "model_error",
                             retryable=retryable, details={"provider": "scripted"})
        text: str = (orjson.dumps(turn["json"]).decode() if "json" in turn
                     else turn.get("text", ""))
        calls: list[dict[str, Any]] = turn.get("tool_calls", [])
        if text:
            if delay:
                pieces = _WORDS.findall(text) or [text]
                for piece in pieces:
                    await asyncio.sleep(delay / len(pieces))
                    yield TextDelta(text=piece)
            else:
                yield TextDelta(text=text)
        elif delay:
            await asyncio.sleep(delay)
        for index, call in enumerate(calls):
            yield ToolCallDelta(
                index=index,
                id=f"call_{index}",
                name=call["name"],
                arguments=orjson.dumps(call.get("arguments", {})).decode(),
            )
        yield UsageEvent(usage=_usage(request, last, text))
        yield Finish(reason=turn.get("finish_reason") or ("tool_calls" if calls else "stop"))


_STREAM = ScriptedModel.stream


def _last(request: ModelRequest) -> _Message | None:
    """The request's last message (None: it has none)."""
    messages = request.messages
    return messages[-1] if messages else None


def _usage(request: ModelRequest, last: _Message | None, text: str) -> Usage:
    """A cheap, deterministic stand-in for token counts (O(1) in the history size)."""
    said = _message_text(last) if last is not None else ""
    return Usage(input_tokens=1 + len(request.system) // 4 + 8 * len(request.messages)
                 + len(said) // 4,
                 output_tokens=max(1, len(text) // 4))


def _message_text(message: UserMessage | AssistantMessage | ToolResultMessage) -> str:
    if isinstance(message, UserMessage):
        return message.content
    if isinstance(message, ToolResultMessage):
        return message.content
    return message.text


def _seen(message: UserMessage) -> str:
    """A message as the scripted model echoes it: its text, each image or file it
    carries as ``[image image/png 12x34]`` (what a vision model would have seen)."""
    if not message.parts:
        return message.content
    return " ".join(p.text if isinstance(p, TextPart) else f"[{p.label()}]"
                    for p in message.parts if not isinstance(p, TextPart) or p.text)


def _summary(text: str) -> str:
    """The scripted summary of a summary request (its last message's ``text``)."""
    lines = ["Summary:"]
    body = text
    if "<previous_summary>\n" in text:
        rest = text.partition("<previous_summary>\n")[2]
        previous, _, body = rest.partition("\n</previous_summary>")
        lines += [unquote(line) for line in previous.splitlines() if line != "Summary:"]
    # The transcript is quoted (&lt; for <); a model writes the characters themselves.
    for line in body.splitlines():
        match = _ENTRY.match(line)
        if match:
            words = unquote(match.group(2)).split()[:SUMMARY_WORDS]
            lines.append(f"- {match.group(1)}: {' '.join(words)}".rstrip())
    return "\n".join(lines)


def _consolidation(text: str) -> str:
    """The scripted answer to a consolidation request (its last message's ``text``)."""
    # The transcript is quoted (&lt; for <); a model writes the characters themselves.
    said = [unquote(m.group(2)) for line in text.partition(_CONSOLIDATE_OPEN)[2].splitlines()
            if (m := _ENTRY.match(line)) and m.group(1) == "user"]
    answer: dict[str, Any] = {
        "memories": [{"content": s, "tags": ["consolidated"]} for s in said if s.strip()],
        "blocks": []}
    if said and "<human>" in text.partition(_CONSOLIDATE_OPEN)[0]:
        words = " ".join(said[0].split()[:SUMMARY_WORDS])
        answer["blocks"] = [{"label": "human", "append": f"- said: {words}"}]
    return orjson.dumps(answer).decode()


def _rule_turn(request: ModelRequest, last: _Message | None) -> dict[str, Any]:
    turn = _rule(request, last)
    if request.output is not None and "tool_calls" not in turn:
        # Asked for structured output: a final answer is a small value of the schema.
        return {"json": example(request.output.schema)}
    return turn


def _rule(request: ModelRequest, last: _Message | None) -> dict[str, Any]:
    if last is None:
        return {"text": "Hello! I am the scripted model."}
    if isinstance(last, ToolResultMessage):
        results = []
        for message in reversed(request.messages):
            if not isinstance(message, ToolResultMessage):
                break
            results.append(message)
        parts = [
            f"{m.name} {'failed' if m.is_error else 'returned'}: {m.content}"
            + "".join(f" [{p.label()}]" for p in m.parts)
            for m in reversed(results)
        ]
        return {"text": "; ".join(parts)}
    if isinstance(last, UserMessage):
        if last.content.strip() == "/system":
            return {"text": f"system: {request.system}"}
        match = _TOOL_RE.match(last.content.strip())
        if match:
            name, raw = match.group(1), match.group(2).strip()
            try:
                args = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                return {"text": f"I could not parse the arguments for {name}: {raw}"}
            if not isinstance(args, dict):
                return {"text": f"Arguments for {name} must be a JSON object."}
            return {"tool_calls": [{"name": name, "arguments": args}]}
        return {"text": f"echo: {_seen(last)}"}
    return {"text": last.text or "(nothing to say)"}


def create(
    *, provider: ProviderInfo, model: str, settings: dict[str, Any], agent: str
) -> ScriptedModel:
    del provider, model
    from agentd.llm.settings import ModelSettings  # (it imports this module's checks)

    script = ModelSettings.pick(settings).script
    return ScriptedModel(agent=agent, script=list(script) if script is not None else None)
