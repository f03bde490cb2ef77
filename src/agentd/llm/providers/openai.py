"""OpenAI Chat Completions, and every server that speaks it (vLLM, Ollama, DeepSeek, ...).

The official ``openai`` SDK does the HTTP; this module maps neutral requests to its
parameters, its stream chunks to neutral events, and its errors to
:class:`~agentd.errors.ModelError`. Nothing from the SDK escapes this module.

Configuration, first match wins:

- base URL: ``settings.base_url``, then ``AGENTD_<PROVIDER>_BASE_URL`` (for example
  ``AGENTD_OPENAI_COMPATIBLE_BASE_URL``), then the provider's default, then the SDK's.
- API key: the environment variable named by ``settings.api_key_env``, then the
  provider's (``OPENAI_API_KEY`` for ``openai``). Keys never live in settings, because
  settings are stored and returned by the API.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any, NoReturn

import openai
import orjson
from openai._base_client import get_platform
from openai._models import FinalRequestOptions
from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
    ChatCompletionToolParam,
)

from agentd.errors import ModelError
from agentd.llm import attachments as _media
from agentd.llm.memo import Joined
from agentd.llm.messages import (
    AssistantMessage,
    Finish,
    FinishReason,
    MediaPart,
    ModelRequest,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolResultMessage,
    ToolSpec,
    Usage,
    UsageEvent,
    UserMessage,
)
from agentd.llm.model import Model
from agentd.llm.providers import settings as _settings
from agentd.llm.providers._wire import MAX_EVENT_BYTES, SdkParts, SseTooLarge, Wire, WireReply
from agentd.llm.registry import ProviderInfo
from agentd.security.tls import tls_context

__all__ = ["OpenAIChatModel", "create"]

logger = logging.getLogger(__name__)

_PLACEHOLDER_KEY = "not-needed"
_SDK = SdkParts(timeout=openai.APITimeoutError, connection=openai.APIConnectionError,
                options=FinalRequestOptions, platform=get_platform)
_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}


class OpenAIChatModel(Model):
    """A Chat Completions model reached through :class:`openai.AsyncOpenAI`."""

    def __init__(
        self,
        *,
        client: openai.AsyncOpenAI,
        provider: str,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        secret: str | None = None,
        missing_key: str | None = None,
    ) -> None:
        self._wire = Wire(client, "/chat/completions", _SDK)
        self.provider = provider
        self.endpoint = str(client.base_url)
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        # Kept only to scrub it from error messages a server might echo back.
        self._secret = secret
        #: Why no call can be made (no key where the provider needs one).
        self._missing_key = missing_key

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        if self._missing_key is not None:
            raise ModelError(self._missing_key, code="model_auth", retryable=False)
        temperature = request.temperature if request.temperature is not None else self.temperature
        max_tokens = request.max_tokens if request.max_tokens is not None else self.max_tokens
        body = self._body(request, temperature, max_tokens)
        try:
            # The body is already on the wire: the SDK's own create() would walk every
            # message of the history through its TypedDict transform on every call
            # (most of a long session's CPU), and its post() builds the same request
            # again through its generic pipeline (more than the rest of a turn): the
            # SDK builds it once (the wire's template: URL, auth, headers, time
            # limits) and makes the errors; each chunk comes as the JSON it was, read
            # by ``_chunk_events``, not built into the SDK's model (a fifth of a turn).
            reply = await self._wire.open(body)
        except openai.OpenAIError as exc:
            self._raise(exc)

        state = _StreamState()
        async with reply, aclosing(self._chunks(reply)) as chunks:
            async for chunk in chunks:
                try:
                    events = _chunk_events(chunk, state)
                except _BadChunk as exc:
                    raise ModelError(
                        f"{self.provider} sent a stream chunk that is not a chat "
                        f"completion chunk: {exc}", code="model_bad_output",
                        retryable=True) from None
                for event in events:
                    yield event
        if state.finish is None:
            # The stream closed cleanly but the model never said it was done: treat it
            # as a cut-off, not as a complete answer that happens to be short.
            raise ModelError(
                f"{self.provider} stream ended before the model finished",
                code="model_unavailable",
                retryable=True,
            )
        if state.usage is not None:
            yield UsageEvent(usage=state.usage)
        yield Finish(reason=state.finish)

    def _body(self, request: ModelRequest, temperature: float | None,
              max_tokens: int | None) -> bytes:
        """The request's JSON body: the messages the session's memo has encoded
        already, and the new ones, then the rest of the parameters."""
        params: dict[str, Any] = {"model": self.model, "stream": True,
                                  "stream_options": {"include_usage": True}}
        if request.tools:
            params["tools"] = [_tool_param(spec) for spec in request.tools]
        fmt = request.output
        if fmt is not None and fmt.native:
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": fmt.name, "schema": fmt.schema, "strict": fmt.strict}}
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            # OpenAI's own API deprecated max_tokens (reasoning models reject it);
            # compatible servers mostly only know max_tokens.
            key = "max_completion_tokens" if self.provider == "openai" else "max_tokens"
            params[key] = max_tokens
        if request.cache_key and self.provider == "openai":
            # Routes the call to the machines holding this conversation's prefix.
            params["prompt_cache_key"] = request.cache_key
        memo = request.memo
        head = b'{"messages":[' + (orjson.dumps({"role": "system", "content": request.system})
                                   if request.system else b"")
        tail = b"],", orjson.dumps(params)[1:]
        if memo is not None:
            per = memo.per_message(_MEMO, _encoded)
            parts = per.values(request.messages, request.provenance)
            images = _ToolImages.of(memo, per.dropped, per.kept)
        else:
            per, parts, images = None, [_encoded(m) for m in request.messages], _ToolImages()
        if images.update(request.messages):
            # A tool's images go in a user message after its step: the parts move, so
            # they are joined afresh (and what Joined kept is not theirs any more).
            chunks = images.placed(parts, request.messages)
            if memo is not None:
                memo.put(_MEMO_JOINED, None)
        elif memo is not None and per is not None:
            # Each part starts with its comma; what stayed the same since the last call
            # is joined once (memo.Joined): the body is one copy, with per-part work
            # only for what is new (a long session's body is a megabyte).
            joined = memo.get(_MEMO_JOINED)
            if joined is None:
                joined = Joined()
                memo.put(_MEMO_JOINED, joined)
            return b"".join([head, *joined.chunks(parts, 0 if per.dropped else per.kept,
                                                  len(parts), lead=bool(request.system)),
                             *tail])
        else:
            chunks = list(parts)
        if chunks and not request.system:
            chunks[0] = chunks[0][1:]  # (no comma before the first)
        return b"".join([head, *chunks, *tail])

    async def _chunks(self, reply: WireReply) -> AsyncGenerator[object, None]:
        """The stream's chunks, each the JSON it was sent as, read as the SDK's stream
        reads them: ``[DONE]`` ends it (the rest of the body read for the connection's
        sake), a chunk with an ``error`` raises its ``APIError``."""
        try:
            async with aclosing(reply.events()) as events:
                async for sse in events:
                    if sse.data.startswith("[DONE]"):
                        await reply.drain()
                        return
                    chunk = orjson.loads(sse.data)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        raise _stream_error(chunk["error"], reply)
                    yield chunk
        except (openai.OpenAIError, ValueError) as exc:
            self._raise(exc)

    def _raise(self, exc: Exception) -> NoReturn:
        error = map_error(exc, provider=self.provider, secret=self._secret)
        logger.warning("model call to %s failed: %s", self.provider, error.code)
        try:
            raise error from exc
        finally:
            # This frame is in the error's traceback: holding the error (and the SDK's
            # exception) here would make a cycle, freed only by the cyclic collector,
            # and with it the SDK's abandoned stream generators, finalized then on
            # whatever loop is current, or none (tests: an unraisable exception).
            del error, exc

    async def aclose(self) -> None:
        await self._wire.aclose()


def map_error(exc: Exception, *, provider: str, secret: str | None = None) -> ModelError:
    """Turn an SDK (or stream decoding) error into a :class:`ModelError`."""
    details: dict[str, Any] = {"provider": provider}
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        details["status"] = status
        message = f"{provider} returned HTTP {status}: {_error_text(exc)}"
        if status == 429:
            retry_after = _settings.retry_after(exc.response.headers)
            if retry_after is not None:
                details["retry_after"] = retry_after
            code, retryable = "model_rate_limited", True
            if _spent(exc.response):
                # A spent quota or billing limit: waiting does not lift it.
                details["error_code"] = "insufficient_quota"
                retryable = False
        elif status in (401, 403):
            code, retryable = "model_auth", False
        elif status >= 500 or status in (408, 409):
            code, retryable = "model_unavailable", True
        else:  # 400, 404, 422 and any other client error
            code, retryable = "model_bad_request", False
    elif isinstance(exc, openai.APITimeoutError) and _settings.connection_cause(exc) is None:
        message = f"{provider} request timed out"
        code, retryable = "model_unavailable", True
    elif isinstance(exc, openai.APIConnectionError):
        cause = _settings.connection_cause(exc) or exc.__cause__
        reason = f": {cause}" if cause is not None and str(cause) else ""
        message = f"{provider} connection failed{reason}"
        code, retryable = "model_unavailable", True
    elif isinstance(exc, openai.APIError):
        # An error object sent inside an otherwise successful stream.
        message = f"{provider} reported an error mid-stream: {exc.message}"
        code, retryable = "model_error", True
    elif isinstance(exc, SseTooLarge):
        message = f"{provider} sent a stream event over {MAX_EVENT_BYTES >> 20} MiB"
        code, retryable = "model_bad_output", False
    elif isinstance(exc, ValueError):
        message = f"{provider} sent a stream chunk that is not valid JSON"
        code, retryable = "model_bad_output", True
    else:
        message = f"{provider} call failed: {type(exc).__name__}: {exc}"
        code, retryable = "model_error", True
    if secret and secret != _PLACEHOLDER_KEY:
        message = message.replace(secret, "***")
    return ModelError(message, code=code, retryable=retryable, details=details)


def _spent(response: Any) -> bool:
    """Whether a 429 is a spent quota (OpenAI's ``insufficient_quota``), not a rate
    limit: the server's ``x-should-retry: false``, or the error code in the body."""
    if response.headers.get("x-should-retry", "").lower() == "false":
        return True
    try:
        error = response.json().get("error") or {}
    except Exception:  # not JSON, or not read: not a body we can tell by
        return False
    return isinstance(error, dict) and "insufficient_quota" in (error.get("code"),
                                                               error.get("type"))


def _stream_error(error: Any, reply: WireReply) -> openai.APIError:
    """The SDK's error for a chunk that carries an ``error`` (as its stream makes it)."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message, reply.wire.sdk_request(), body=error)


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        text = body.get("message")
        if isinstance(text, str) and text:
            return text
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message


class _BadChunk(Exception):
    """A stream chunk that does not have a chat completion chunk's shape."""


class _StreamState:
    """What a stream has said so far besides its deltas."""

    __slots__ = ("finish", "usage")

    def __init__(self) -> None:
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None


def _of(value: Any, kind: type, where: str) -> Any:
    """``value`` if it is a ``kind`` (or None), else the chunk is refused."""
    if value is None or isinstance(value, kind):
        return value
    raise _BadChunk(f"{where} is not {'a string' if kind is str else kind.__name__}")


# complexity: one branch per field of a chunk (text, refusal, tool calls, the legacy
# function call, the finish reason, usage), each checked for its JSON type.
def _chunk_events(chunk: Any, state: _StreamState) -> list[StreamEvent]:
    """What one chunk of a Chat Completions stream says, as stream events (the JSON
    as sent: every field the runtime reads is checked for its type, since a
    compatible server may send anything)."""
    if not isinstance(chunk, dict):
        raise _BadChunk("the chunk is not a JSON object")
    events: list[StreamEvent] = []
    reported = _of(chunk.get("usage"), dict, "usage")
    if reported is not None:
        # Keep the last report: OpenAI sends one, some compatible servers send a
        # running total on every chunk, so summing would overcount.
        state.usage = _usage(reported)
    for choice in _of(chunk.get("choices"), list, "choices") or ():
        if not isinstance(choice, dict):
            raise _BadChunk("a choice is not a JSON object")
        if choice.get("index", 0) != 0:
            continue
        delta = _of(choice.get("delta"), dict, "delta") or {}
        content = _of(delta.get("content"), str, "delta.content")
        if content:
            events.append(TextDelta(text=content))
        refusal = _of(delta.get("refusal"), str, "delta.refusal")
        if refusal:
            events.append(TextDelta(text=refusal))
        for call in _of(delta.get("tool_calls"), list, "delta.tool_calls") or ():
            events.append(_call_delta(call))
        legacy = _of(delta.get("function_call"), dict, "delta.function_call")
        if legacy is not None:
            events.append(ToolCallDelta(
                index=0, name=_of(legacy.get("name"), str, "function_call.name") or None,
                arguments=_of(legacy.get("arguments"), str,
                              "function_call.arguments") or ""))
        reason = _of(choice.get("finish_reason"), str, "finish_reason")
        if reason is not None:
            state.finish = _FINISH_REASONS.get(reason, "stop")
    return events


def _call_delta(call: Any) -> ToolCallDelta:
    if not isinstance(call, dict):
        raise _BadChunk("a tool call is not a JSON object")
    index = call.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise _BadChunk("a tool call's index is not an integer")
    function = _of(call.get("function"), dict, "tool_calls.function") or {}
    # Gemini signs its reasoning on the call (extra_content); it must come back
    # verbatim or the next request is refused.
    extra = call.get("extra_content")
    return ToolCallDelta(
        index=index,
        id=_of(call.get("id"), str, "tool_calls.id") or None,
        name=_of(function.get("name"), str, "tool_calls.function.name") or None,
        arguments=_of(function.get("arguments"), str,
                      "tool_calls.function.arguments") or "",
        extra={"extra_content": extra} if isinstance(extra, dict) else None,
    )


def _count(value: Any) -> int:
    """A reported token count; anything but a positive integer counts as none."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_count(cached),
    )


# --- request mapping --------------------------------------------------------------


#: The names of this format's encodings in a session's memo.
_MEMO, _MEMO_IMAGES, _MEMO_JOINED = "openai-chat", "openai-chat-images", "openai-chat-joined"


def _encoded(message: UserMessage | AssistantMessage | ToolResultMessage) -> bytes:
    """One message as Chat Completions JSON, after the comma that separates it from
    the one before."""
    return b"," + orjson.dumps(_message_param(message))


def _message_param(message: UserMessage | AssistantMessage | ToolResultMessage
                   ) -> ChatCompletionMessageParam:
    if isinstance(message, UserMessage):
        if message.parts:
            return {"role": "user", "content": _content_parts(message.parts)}
        return {"role": "user", "content": message.content}
    if isinstance(message, AssistantMessage):
        return _assistant_param(message)
    # Chat Completions has no error flag on tool results; say it in the text so the
    # model does not read a failure as output.
    content = f"error: {message.content}" if message.is_error else message.content
    return {"role": "tool", "tool_call_id": message.call_id, "content": content}


def _content_parts(parts: list[TextPart | MediaPart]) -> list[ChatCompletionContentPartParam]:
    """A message's parts as Chat Completions content parts: images as ``image_url``
    with a data URL, a PDF as a ``file`` with its data, a text file as text."""
    out: list[ChatCompletionContentPartParam] = _media.render(
        parts, text=lambda text: {"type": "text", "text": text},
        image=lambda p: {"type": "image_url", "image_url": {"url": _media.data_url(p)}},
        pdf=lambda p: {"type": "file", "file": {"filename": p.name or "document.pdf",
                                                "file_data": _media.data_url(p)}},
        text_file=lambda p: {"type": "text", "text": _media.file_text(p)})
    return out or [{"type": "text", "text": "(empty message)"}]


class _ToolImages:
    """Images tools returned, placed for Chat Completions: a tool message holds text
    only, so a result's images go in a user message after the last tool message of
    its step (a user message between two tool messages would part the second from
    its call). Kept in the session's memo from one call to the next: only the new
    messages are looked through, and each image is encoded once."""

    __slots__ = ("encoded", "kept")

    def __init__(self) -> None:
        #: The index in the last call's messages of each result with images, and the
        #: user message (JSON, after its comma) that shows them.
        self.encoded: dict[int, bytes] = {}
        #: How many of this call's first messages the last call had.
        self.kept = 0

    @classmethod
    def of(cls, memo: Any, dropped: int, kept: int) -> _ToolImages:
        state: _ToolImages | None = memo.get(_MEMO_IMAGES)
        if state is None:
            state = cls()
            memo.put(_MEMO_IMAGES, state)
        if state.encoded and (dropped or kept):
            state.encoded = {i - dropped: v for i, v in state.encoded.items()
                             if dropped <= i < dropped + kept}
        elif state.encoded:
            state.encoded = {}
        state.kept = kept
        return state

    def update(self, messages: Sequence[Any]) -> bool:
        """Take in the results with images among the messages not seen yet; whether
        there are any in the request."""
        for i in range(self.kept, len(messages)):
            message = messages[i]
            if isinstance(message, ToolResultMessage) and message.parts:
                self.encoded[i] = b"," + orjson.dumps(_images_param(message))
        return bool(self.encoded)

    def placed(self, parts: list[bytes], messages: Sequence[Any]) -> list[bytes]:
        """``parts`` with each result's images after the tool messages of its step."""
        after: dict[int, list[bytes]] = {}
        for i in sorted(self.encoded):
            end = i
            while end + 1 < len(messages) and isinstance(messages[end + 1],
                                                          ToolResultMessage):
                end += 1
            after.setdefault(end, []).append(self.encoded[i])
        out: list[bytes] = []
        start = 0
        for end in sorted(after):
            out.extend(parts[start:end + 1])
            out.extend(after[end])
            start = end + 1
        out.extend(parts[start:])
        return out


def _images_param(message: ToolResultMessage) -> ChatCompletionMessageParam:
    content: list[ChatCompletionContentPartParam] = [{"type": "text", "text": (
        _media.tool_images_note(message.name, message.call_id, len(message.parts)))}]
    content.extend(_content_parts(list(message.parts)))
    return {"role": "user", "content": content}


def _assistant_param(message: AssistantMessage) -> ChatCompletionMessageParam:
    if not message.tool_calls:
        return {"role": "assistant", "content": message.text}
    calls: list[ChatCompletionMessageToolCallParam] = []
    for call in message.tool_calls:
        param: ChatCompletionMessageToolCallParam = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
        }
        if call.extra:
            # Gemini's extra_content (its thought signature), which the SDK's types
            # do not know; the SDK sends unknown keys of a message as they are.
            param.update(call.extra)  # type: ignore[typeddict-item]
        calls.append(param)
    # OpenAI wants content null (not "") beside tool calls with no text.
    return {"role": "assistant", "content": message.text or None, "tool_calls": calls}


def _tool_param(spec: ToolSpec) -> ChatCompletionToolParam:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


# --- construction -----------------------------------------------------------------


def create(
    *, provider: ProviderInfo, model: str, settings: dict[str, Any], agent: str
) -> OpenAIChatModel:
    """Build a model for ``provider:model``; raise :class:`InvalidModel` on bad config.

    Runs when an agent is created or loaded, so a missing base URL is reported then.
    A missing key is not (that would tell any token which variables the daemon has):
    the calls fail with ``model_auth``, and the log names the variable.
    """
    del agent
    own = _settings.model_settings(settings)
    base_url = _settings.base_url(provider, own)
    api_key, missing_key = _settings.key_of(provider, own)
    timeout, max_tokens, temperature = own.timeout_s, own.max_tokens, own.temperature
    _settings.send_bodies_whole()
    client = openai.AsyncOpenAI(
        api_key=api_key or _PLACEHOLDER_KEY,
        base_url=base_url,
        timeout=openai.not_given if timeout is None else timeout,
        # Retries are the kernel's (runtime/kernel.py): each goes back through the
        # scheduler and is seen by the provider's breaker. settings.max_retries sets them.
        max_retries=0,
        # Only for the wire's template (agentd.llm.providers._wire): calls go out on the
        # wire's own aiohttp session. (This client's TLS context is the daemon's, not
        # one made afresh from certifi's bundle per model.)
        http_client=openai.DefaultAioHttpClient(verify=tls_context(trust_env=True)),
    )
    return OpenAIChatModel(
        client=client,
        provider=provider.name,
        model=model,
        temperature=temperature,
        max_tokens=max_tokens,
        secret=api_key,
        missing_key=missing_key,
    )
