"""The Messages API's stream events, read as the JSON they were sent.

The SDK's stream (``AsyncStream[object]``) still frames the server-sent events,
raises on an ``error`` event and skips pings; each event then comes as its JSON
object, not as the SDK's typed model (building one per event was about a fifth of a
provider turn's CPU, as it was for OpenAI's chunks: docs/benchmarks.md). What the
runtime reads of an event is checked for its JSON type here, since whatever answers
at the endpoint may send anything: a wrong shape is a :class:`BadEvent`, which the
provider reports as ``model_bad_output``.
"""

from __future__ import annotations

from typing import Any

import orjson

from agentd.llm.messages import (
    FinishReason,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)

__all__ = ["FINISH_REASONS", "BadEvent", "EventState", "event_deltas"]

#: The API's stop reasons as the neutral finish reasons.
FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    # A server-side tool loop paused: the answer is incomplete, as with a token limit.
    "pause_turn": "length",
    "refusal": "content_filter",
}


class BadEvent(Exception):
    """A stream event without the shape the Messages API gives it."""


class EventState:
    """What a stream has said so far besides its deltas."""

    __slots__ = ("finish", "start_inputs", "usage")

    def __init__(self) -> None:
        self.finish: FinishReason | None = None
        self.usage = Usage()
        #: Tool inputs normally arrive as input_json_delta pieces after an empty
        #: start; a start that already carries the input (and no pieces) is sent at
        #: its stop.
        self.start_inputs: dict[int, dict[str, Any]] = {}


def _of(value: Any, kind: type, where: str) -> Any:
    """``value`` if it is a ``kind`` (or None), else the event is refused."""
    if value is None or (isinstance(value, kind) and not (
            kind is int and isinstance(value, bool))):
        return value
    raise BadEvent(f"{where} is not {'a string' if kind is str else kind.__name__}")


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise BadEvent("a content block's index is not an integer")
    return index


def event_deltas(event: Any, state: EventState) -> list[StreamEvent]:
    """What one event says, as stream events (usage and the stop reason go to
    ``state``)."""
    if not isinstance(event, dict):
        raise BadEvent("the event is not a JSON object")
    kind = event.get("type")
    if kind == "content_block_delta":
        return _delta(event, state)
    if kind == "content_block_start":
        return _start(event, state)
    if kind == "content_block_stop":
        given = state.start_inputs.pop(_index(event), None)
        if given:
            return [ToolCallDelta(index=event["index"],
                                  arguments=orjson.dumps(given).decode())]
        return []
    if kind == "message_start":
        message = _of(event.get("message"), dict, "message") or {}
        usage = _of(message.get("usage"), dict, "message.usage")
        if usage is not None:
            state.usage = _usage(usage, state.usage)
    elif kind == "message_delta":
        usage = _of(event.get("usage"), dict, "usage")
        if usage is not None:
            state.usage = _delta_usage(usage, state.usage)
        delta = _of(event.get("delta"), dict, "delta") or {}
        reason = _of(delta.get("stop_reason"), str, "delta.stop_reason")
        if reason is not None:
            state.finish = FINISH_REASONS.get(reason, "stop")
    elif not isinstance(kind, str):
        raise BadEvent("the event has no type")
    return []  # message_stop, and kinds this version does not know


def _start(event: dict[str, Any], state: EventState) -> list[StreamEvent]:
    index = _index(event)
    block = _of(event.get("content_block"), dict, "content_block") or {}
    kind = block.get("type")
    if kind == "text":
        text = _of(block.get("text"), str, "content_block.text")
        return [TextDelta(text=text)] if text else []
    if kind == "tool_use":
        given = _of(block.get("input"), dict, "content_block.input")
        if given:
            state.start_inputs[index] = given
        return [ToolCallDelta(index=index, id=_of(block.get("id"), str, "content_block.id"),
                              name=_of(block.get("name"), str, "content_block.name"))]
    if kind == "thinking":
        return [ThinkingDelta(
            index=index, text=_of(block.get("thinking"), str, "content_block.thinking") or "",
            signature=_of(block.get("signature"), str, "content_block.signature"))]
    if kind == "redacted_thinking":
        return [ThinkingDelta(index=index,
                              redacted=_of(block.get("data"), str, "content_block.data"))]
    return []  # server-side tools: not used by agentd's requests


def _delta(event: dict[str, Any], state: EventState) -> list[StreamEvent]:
    index = _index(event)
    delta = _of(event.get("delta"), dict, "delta") or {}
    kind = delta.get("type")
    if kind == "text_delta":
        text = _of(delta.get("text"), str, "delta.text")
        return [TextDelta(text=text)] if text else []
    if kind == "input_json_delta":
        state.start_inputs.pop(index, None)
        piece = _of(delta.get("partial_json"), str, "delta.partial_json")
        return [ToolCallDelta(index=index, arguments=piece)] if piece else []
    if kind == "thinking_delta":
        return [ThinkingDelta(index=index,
                              text=_of(delta.get("thinking"), str, "delta.thinking") or "")]
    if kind == "signature_delta":
        return [ThinkingDelta(index=index,
                              signature=_of(delta.get("signature"), str, "delta.signature"))]
    return []


def _count(value: Any, where: str) -> int | None:
    """A reported token count (None: not reported)."""
    count: int | None = _of(value, int, where)
    if count is not None and count < 0:
        raise BadEvent(f"{where} is negative")
    return count


def _usage(raw: dict[str, Any], before: Usage) -> Usage:
    # Anthropic counts cache reads and writes apart from input_tokens; the neutral
    # input_tokens is the whole prompt (as OpenAI reports it), cached_tokens a part.
    cache_read = _count(raw.get("cache_read_input_tokens"), "cache_read_input_tokens") or 0
    cache_write = _count(raw.get("cache_creation_input_tokens"),
                         "cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=(_count(raw.get("input_tokens"), "input_tokens") or 0)
        + cache_read + cache_write,
        output_tokens=_count(raw.get("output_tokens"), "output_tokens")
        or before.output_tokens,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _delta_usage(raw: dict[str, Any], before: Usage) -> Usage:
    # message_delta counts are cumulative; input counts are only sometimes repeated.
    output = _count(raw.get("output_tokens"), "output_tokens")
    if raw.get("input_tokens") is None:
        return Usage(
            input_tokens=before.input_tokens,
            output_tokens=output if output is not None else before.output_tokens,
            cached_tokens=before.cached_tokens,
            cache_write_tokens=before.cache_write_tokens,
        )
    usage = _usage(raw, before)
    usage.output_tokens = output if output is not None else before.output_tokens
    return usage
