"""The stub LLM server's wire formats: one class per provider API.

A format renders a neutral :class:`StubTurn` as that API's streamed frames and JSON
body, checks requests the way the real API does, and supplies the error bodies and
broken frames the faults in :mod:`agentd.testing.stub_llm` send.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import orjson

from agentd.llm.output import strict_ready
from agentd.testing._cache import CacheResult, Provider, anthropic_cache_problem
from agentd.testing._media_wire import (
    anthropic_block_problem,
    openai_part_problem,
    seen_anthropic,
    seen_openai,
)

__all__ = ["AnthropicMessages", "Call", "OpenAIChat", "RateLimit", "StubTurn", "Wire"]

_WORDS = re.compile(r"\S+\s*|\s+")


@dataclass(kw_only=True)
class StubTurn:
    """One queued response, in neutral terms; each wire format renders it its own way."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    fault: str | None = None
    finish_reason: str | None = None
    #: Reasoning texts, one per thinking block (formats that have thinking blocks).
    thinking: list[str] = field(default_factory=list)
    #: Seconds between the stream's frames (0: all at once), so that text arrives as a
    #: real model's does, a word at a time.
    interval_s: float = 0.0


@dataclass(kw_only=True)
class Call:
    """One request being answered: what a fault needs to build its response."""

    wire: Wire
    turn: StubTurn
    body: dict[str, Any]
    number: int
    stopping: threading.Event
    #: The prompt's tokens and what the simulated prompt cache made of it.
    cache: CacheResult | None = None


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """One limit's state after a request, for the headers a provider sends about it."""

    name: Literal["requests", "tokens"]
    limit: int  # per minute
    remaining: int
    reset_s: float  # until the limit is whole again


class Wire(Protocol):
    media_type: str
    #: Whose prompt-cache rules the format's requests are judged by.
    provider: Provider

    def validate(self, body: dict[str, Any]) -> str | None:
        """Return why the real API would reject ``body`` with a 400, or None."""

    def last_user_text(self, body: dict[str, Any]) -> str: ...

    def output_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON Schema the request constrains its answer to (structured output)."""
        ...

    def wants_stream(self, body: dict[str, Any]) -> bool: ...

    def error_body(self, status: int, message: str) -> dict[str, Any]: ...

    def spend_limit_body(self, message: str) -> dict[str, Any]:
        """The 429 body for a spent quota, which retrying does not lift."""

    def broken_frame(self) -> bytes:
        """A stream frame cut short, as a broken proxy might deliver it."""

    def error_frame(self, message: str) -> bytes:
        """An "overloaded" error sent inside a stream that started with 200."""

    def ratelimit_headers(self, limits: list[RateLimit]) -> dict[str, str]:
        """The headers the API sends about its rate limits."""

    def frames(self, call: Call) -> list[bytes]:
        """The complete streamed response, one encoded SSE frame per item."""

    def completion(self, call: Call) -> dict[str, Any]:
        """The complete non-streamed response body."""


# --- OpenAI Chat Completions ------------------------------------------------------


class OpenAIChat:
    media_type = "text/event-stream"
    provider: Provider = "openai"

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "you must provide a model parameter"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty array"
        open_calls: set[str] = set()
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool"):
                return f"messages[{i}].role is invalid: {role!r}"
            if role == "assistant" and "tool_calls" in message:
                calls = message["tool_calls"]
                if not isinstance(calls, list) or not calls:
                    return f"messages[{i}].tool_calls: empty array; expected at least 1"
                for call in calls:
                    try:
                        orjson.loads(call["function"]["arguments"])
                    except (KeyError, TypeError, orjson.JSONDecodeError):
                        return f"messages[{i}].tool_calls: arguments must be a JSON string"
                    open_calls.add(call.get("id"))
                first = calls[0] if isinstance(calls[0], dict) else {}
                signed = ((first.get("extra_content") or {}).get("google") or {}).get(
                    "thought_signature")
                if _gemini(body) and signed != _signature(str(first.get("id"))):
                    return ("Function call is missing a thought_signature in functionCall "
                            f"parts (messages[{i}]). This is required for tools to work "
                            "correctly")
            elif role == "tool" and message.get("tool_call_id") not in open_calls:
                return (
                    f"messages[{i}]: messages with role 'tool' must be a response to a "
                    "preceding message with 'tool_calls'"
                )
            content = message.get("content")
            if isinstance(content, list):
                for j, part in enumerate(content):
                    problem = openai_part_problem(part, f"messages[{i}].content[{j}]",
                                                  str(role))
                    if problem is not None:
                        return problem
        return _openai_format_problem(body)

    def output_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_object":
            return {"type": "object"}
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None

    def last_user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    parts = [p for p in content if isinstance(p, dict)]
                    if all(p.get("type") == "text" for p in parts):
                        return "".join(p.get("text", "") for p in parts)
                    return " ".join(seen_openai(p) for p in parts)
                return str(content or "")
        return ""

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind, code = {
            401: ("invalid_request_error", "invalid_api_key"),
            403: ("invalid_request_error", "unsupported_country_region_territory"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def spend_limit_body(self, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": "insufficient_quota", "param": None,
                          "code": "insufficient_quota"}}

    def broken_frame(self) -> bytes:
        return b'data: {"id": "chatcmpl-broken", "choi\n\n'

    def error_frame(self, message: str) -> bytes:
        return _sse({"error": {"message": message, "type": "server_error", "param": None,
                               "code": None}})

    def ratelimit_headers(self, limits: list[RateLimit]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for limit in limits:
            headers[f"x-ratelimit-limit-{limit.name}"] = str(limit.limit)
            headers[f"x-ratelimit-remaining-{limit.name}"] = str(limit.remaining)
            headers[f"x-ratelimit-reset-{limit.name}"] = _go_duration(limit.reset_s)
        return headers

    def _calls(self, call: Call) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = [
            {
                "id": f"call_{call.number}_{i}",
                "type": "function",
                "function": {
                    "name": tc["name"],
                    "arguments": orjson.dumps(tc.get("arguments", {})).decode(),
                },
            }
            for i, tc in enumerate(call.turn.tool_calls)
        ]
        if calls and _gemini(call.body):
            # Gemini 3 signs the step's reasoning on its first function call.
            calls[0]["extra_content"] = {
                "google": {"thought_signature": _signature(calls[0]["id"])}}
        return calls

    def _usage(self, call: Call) -> dict[str, Any]:
        usage = _usage(call)
        return {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def frames(self, call: Call) -> list[bytes]:
        body, turn = call.body, call.turn
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-stub{call.number}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "system_fingerprint": "fp_stub",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data: dict[str, Any] = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return _sse(data)

        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": piece}) for piece in _WORDS.findall(turn.text)]
        for index, tool_call in enumerate(self._calls(call)):
            function = tool_call["function"]
            head = {"name": function["name"], "arguments": ""}
            first = {"index": index, "id": tool_call["id"], "type": "function", "function": head}
            if "extra_content" in tool_call:
                first["extra_content"] = tool_call["extra_content"]
            out.append(chunk({"tool_calls": [first]}))
            for piece in _fragments(function["arguments"]):
                out.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        out.append(chunk({}, _finish_reason(turn)))
        if include_usage:
            out.append(_sse({**base, "choices": [], "usage": self._usage(call)}))
        out.append(b"data: [DONE]\n\n")
        return out

    def completion(self, call: Call) -> dict[str, Any]:
        calls = self._calls(call)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": call.turn.text or None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-stub{call.number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.body.get("model", "stub"),
            "system_fingerprint": "fp_stub",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(call.turn),
                }
            ],
            "usage": self._usage(call),
        }


# --- Anthropic Messages -----------------------------------------------------------

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _gemini(body: dict[str, Any]) -> bool:
    """A request for a Gemini model (through Google's OpenAI-compatible endpoint)."""
    return str(body.get("model", "")).startswith("gemini")


def _signature(text: str) -> str:
    """What the stub signs a thinking block with, so it can check one sent back."""
    return "stubsig-" + hashlib.sha256(text.encode()).hexdigest()[:24]


class AnthropicMessages:
    media_type = "text/event-stream"
    provider: Provider = "anthropic"

    # complexity: the stub mirrors Anthropic's request validation one rule per field, in
    # the order the real API reports them.
    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                return (f"messages.{i}.role: Input should be 'user' or 'assistant'; put the "
                        "system prompt in the top-level `system` parameter")
            if i == 0 and role != "user":
                return 'messages: first message must use the "user" role'
            if i > 0 and messages[i - 1].get("role") == role:
                return ('messages: roles must alternate between "user" and "assistant", '
                        f'but found multiple "{role}" roles in a row')
            problem = self._check_content(i, message.get("content"))
            if problem is not None:
                return problem
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i + 1 == len(messages):
                continue  # a final assistant turn is a prefill: no results expected
            used = [b.get("id") for b in _content_blocks(message) if b.get("type") == "tool_use"]
            answered = [b.get("tool_use_id") for b in _content_blocks(messages[i + 1])
                        if b.get("type") == "tool_result"]
            missing = [u for u in used if u not in answered]
            if missing:
                return (f"messages.{i}: `tool_use` ids were found without `tool_result` "
                        f"blocks immediately after: {', '.join(map(str, missing))}. Each "
                        "`tool_use` block must have a corresponding `tool_result` block in "
                        "the next message.")
        for i, message in enumerate(messages):
            previous = messages[i - 1] if i > 0 else {}
            known = {b.get("id") for b in _content_blocks(previous) if b.get("type") == "tool_use"}
            for j, block in enumerate(_content_blocks(message)):
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in known:
                    return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                            f"`tool_result` blocks: {block.get('tool_use_id')}. Each "
                            "`tool_result` block must have a corresponding `tool_use` block "
                            "in the previous message.")
        return _anthropic_format_problem(body) or anthropic_cache_problem(body)

    def output_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
        return schema if isinstance(schema, dict) else None

    def _check_content(self, i: int, content: Any) -> str | None:
        if isinstance(content, str):
            return None if content else f"messages.{i}: content must be non-empty"
        if not isinstance(content, list) or not content:
            return f"messages.{i}: all messages must have non-empty content"
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            where = f"messages.{i}.content.{j}"
            if kind == "text":
                problem = _text_problem(block, where)
                if problem is not None:
                    return problem
            elif kind == "tool_use":
                if not isinstance(block.get("input"), dict):
                    return f"{where}.input: Input should be a valid dictionary"
            elif kind == "thinking":
                text = block.get("thinking")
                if not isinstance(text, str) or block.get("signature") != _signature(text):
                    return f"{where}: Invalid `signature` in `thinking` block"
            elif kind in ("image", "document"):
                problem = anthropic_block_problem(block, where)
                if problem is not None:
                    return problem
            elif kind == "tool_result":
                problem = _tool_result_problem(block, where)
                if problem is not None:
                    return problem
            elif kind != "redacted_thinking":
                return f"{where}.type: unknown content block type {kind!r}"
        return None

    def last_user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                if isinstance(message.get("content"), str):
                    return str(message["content"])
                blocks = _content_blocks(message)
                if any(b.get("type") in ("image", "document") for b in blocks):
                    return " ".join(seen_anthropic(b) for b in blocks
                                    if b.get("type") in ("text", "image", "document"))
                texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
                if texts:
                    return "".join(texts)
        return ""

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message},
                "request_id": "req_stub"}

    def spend_limit_body(self, message: str) -> dict[str, Any]:
        error = {"type": "rate_limit_error", "message": message,
                 "details": {"error_code": "enforced_spend_limit_reached"}}
        return {"type": "error", "error": error, "request_id": "req_stub"}

    def broken_frame(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'

    def error_frame(self, message: str) -> bytes:
        return _event(self.error_body(529, message))

    def ratelimit_headers(self, limits: list[RateLimit]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for limit in limits:
            reset = datetime.now(UTC) + timedelta(seconds=limit.reset_s)
            prefix = f"anthropic-ratelimit-{limit.name}"
            headers[f"{prefix}-limit"] = str(limit.limit)
            headers[f"{prefix}-remaining"] = str(limit.remaining)
            headers[f"{prefix}-reset"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
        return headers

    def _usage(self, call: Call) -> dict[str, Any]:
        usage = _usage(call)
        # Anthropic counts cache reads apart from input_tokens; the stub's figures are
        # neutral (input includes cached), so the wire gets the difference.
        cached = min(usage["cached_tokens"], usage["input_tokens"])
        written = min(usage["cache_write_tokens"], usage["input_tokens"] - cached)
        long_lived = min(usage["cache_write_1h_tokens"], written)
        return {
            "input_tokens": usage["input_tokens"] - cached - written,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": written,
            "cache_creation": {"ephemeral_5m_input_tokens": written - long_lived,
                               "ephemeral_1h_input_tokens": long_lived},
            "output_tokens": usage["output_tokens"],
        }

    def _blocks(self, call: Call) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [
            {"type": "thinking", "thinking": text, "signature": _signature(text)}
            for text in call.turn.thinking
        ]
        if call.turn.text:
            blocks.append({"type": "text", "text": call.turn.text})
        blocks += [
            {"type": "tool_use", "id": f"toolu_stub{call.number}_{i}", "name": tc["name"],
             "input": tc.get("arguments", {})}
            for i, tc in enumerate(call.turn.tool_calls)
        ]
        return blocks

    def _stop_reason(self, turn: StubTurn) -> str:
        return turn.finish_reason or ("tool_use" if turn.tool_calls else "end_turn")

    def _message(self, call: Call, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"msg_stub{call.number}",
            "type": "message",
            "role": "assistant",
            "model": call.body.get("model", "stub"),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(call),
        }

    def frames(self, call: Call) -> list[bytes]:
        usage = self._usage(call)
        start = self._message(call, [])
        start["usage"] = {**usage, "output_tokens": 1}
        out = [_event({"type": "message_start", "message": start}), _event({"type": "ping"})]
        for index, block in enumerate(self._blocks(call)):
            kind = block["type"]
            if kind == "thinking":
                head: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                pieces = [{"type": "thinking_delta", "thinking": p}
                          for p in _WORDS.findall(block["thinking"])]
                pieces.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "text":
                head = {"type": "text", "text": ""}
                pieces = [{"type": "text_delta", "text": p}
                          for p in _WORDS.findall(block["text"])]
            else:
                head = {**block, "input": {}}
                pieces = [{"type": "input_json_delta", "partial_json": p}
                          for p in _fragments(orjson.dumps(block["input"]).decode())]
            out.append(_event({"type": "content_block_start", "index": index,
                               "content_block": head}))
            out += [_event({"type": "content_block_delta", "index": index, "delta": p})
                    for p in pieces]
            out.append(_event({"type": "content_block_stop", "index": index}))
        out.append(_event({
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(call.turn), "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }))
        out.append(_event({"type": "message_stop"}))
        return out

    def completion(self, call: Call) -> dict[str, Any]:
        message = self._message(call, self._blocks(call))
        message["stop_reason"] = self._stop_reason(call.turn)
        return message


_FORMAT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _tool_result_problem(block: dict[str, Any], where: str) -> str | None:
    """A ``tool_result``'s content: a string, or text, image and document blocks."""
    content = block.get("content")
    if content is None or isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}.content: Input should be a valid string or list"
    for k, inner in enumerate(content):
        kind = inner.get("type") if isinstance(inner, dict) else None
        at = f"{where}.content.{k}"
        if kind in ("text", "image", "document"):
            problem = (_text_problem(inner, at) if kind == "text"
                       else anthropic_block_problem(inner, at))
            if problem is not None:
                return problem
        else:
            return f"{at}.type: {kind!r} is not a valid tool_result content block"
    return None


def _text_problem(block: dict[str, Any], where: str) -> str | None:
    if not isinstance(block.get("text"), str) or not block["text"]:
        return f"{where}: text content blocks must be non-empty"
    return None


def _openai_format_problem(body: dict[str, Any]) -> str | None:
    """OpenAI's checks of ``response_format`` (Structured Outputs): a named schema, and
    in strict mode every object closed with every property required."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object",
                                                             "json_schema"):
        return "Invalid value for 'response_format.type'"
    if fmt["type"] != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not _FORMAT_NAME.match(str(spec.get("name", ""))):
        return "Missing required parameter: 'response_format.json_schema.name'."
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        return "Invalid type for 'response_format.json_schema.schema': expected an object"
    if spec.get("strict") and not strict_ready(schema):
        return (f"Invalid schema for response_format '{spec['name']}': In context=(), "
                "'additionalProperties' is required to be supplied and to be false, and "
                "'required' is required to include every key in properties.")
    return None


def _anthropic_format_problem(body: dict[str, Any]) -> str | None:
    """Anthropic's checks of ``output_config.format`` (structured outputs)."""
    config = body.get("output_config")
    if config is None:
        return None
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        return "output_config.format.schema: Field required"
    if not strict_ready(schema):
        return ("output_config.format.schema: For 'object' type, 'additionalProperties' "
                "must be explicitly set to false")
    return None


def _content_blocks(message: Any) -> list[dict[str, Any]]:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict)]


def _event(data: dict[str, Any]) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _fragments(text: str, parts: int = 3) -> list[str]:
    """Split ``text`` into up to ``parts`` pieces, the way models stream arguments."""
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _go_duration(seconds: float) -> str:
    """A duration the way OpenAI's reset headers write it: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{round(rest, 3):g}s"
    return f"{int(minutes)}m{text}" if minutes else text


def _finish_reason(turn: StubTurn) -> str:
    return turn.finish_reason or ("tool_calls" if turn.tool_calls else "stop")


def _usage(call: Call) -> dict[str, int]:
    """The neutral counts: a queued turn's ``usage`` as given; what it leaves out (and
    all of it for a turn queued without one) from the prompt cache's result."""
    given = call.turn.usage
    cache = call.cache
    if cache is None:  # a call answered without the server (a wire used alone)
        chars = len(orjson.dumps(call.body.get("messages", [])))
        cache = CacheResult(provider="openai", model="", input_tokens=max(1, -(-chars // 4)))
    output = max(1, len(call.turn.text) // 4)
    if given is None:
        return {"input_tokens": cache.input_tokens, "output_tokens": output,
                "cached_tokens": cache.cached_tokens,
                "cache_write_tokens": cache.cache_write_tokens,
                "cache_write_1h_tokens": cache.cache_write_1h_tokens}
    return {
        "input_tokens": given.get("input_tokens", cache.input_tokens),
        "output_tokens": given.get("output_tokens", output),
        "cached_tokens": given.get("cached_tokens", 0),
        "cache_write_tokens": given.get("cache_write_tokens", 0),
        "cache_write_1h_tokens": 0,
    }
