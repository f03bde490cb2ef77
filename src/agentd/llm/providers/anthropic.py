"""Anthropic's Messages API, natively, through the official ``anthropic`` SDK.

This module maps neutral requests to Messages parameters (system prompt apart, turns
that alternate, tool calls as ``tool_use`` blocks, tool results as ``tool_result``
blocks in a user turn, thinking blocks replayed with their signatures), the SDK's
stream events to neutral events, and its errors to :class:`~agentd.errors.ModelError`.
Nothing from the SDK escapes this module.

Configuration, first match wins:

- base URL: ``settings.base_url``, then ``AGENTD_ANTHROPIC_BASE_URL``, then the SDK's
  (``https://api.anthropic.com``; no ``/v1``: the SDK adds it).
- API key: the environment variable named by ``settings.api_key_env``, then
  ``ANTHROPIC_API_KEY``.
- ``max_tokens`` (required by the API): the request's, then ``settings.max_tokens``,
  then 4096.
- ``thinking``: an integer budget of thinking tokens (>= 1024, below ``max_tokens``)
  or ``"adaptive"``; off when absent.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Literal, NoReturn

import anthropic
import orjson
from anthropic._base_client import get_platform
from anthropic._models import FinalRequestOptions
from anthropic.types import (
    ThinkingConfigParam,
    ToolParam,
)

from agentd.errors import InvalidModel, ModelError
from agentd.llm import attachments as _media
from agentd.llm.memo import Joined
from agentd.llm.messages import (
    AssistantMessage,
    Finish,
    MediaPart,
    ModelRequest,
    StreamEvent,
    TextPart,
    ToolResultMessage,
    ToolSpec,
    UsageEvent,
    UserMessage,
)
from agentd.llm.model import Model
from agentd.llm.providers import settings as _settings
from agentd.llm.providers._anthropic_events import BadEvent, EventState, event_deltas
from agentd.llm.providers._wire import MAX_EVENT_BYTES, SdkParts, SseTooLarge, Wire, WireReply
from agentd.llm.registry import ProviderInfo
from agentd.security.tls import tls_context

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicModel", "create", "map_error"]

logger = logging.getLogger(__name__)

#: Used when neither the request nor the settings give ``max_tokens``.
DEFAULT_MAX_TOKENS = 4096
_SDK = SdkParts(timeout=anthropic.APITimeoutError, connection=anthropic.APIConnectionError,
                options=FinalRequestOptions, platform=get_platform)
# An ``error`` event inside a 200 stream has a type but no status: these stand in.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicModel(Model):
    """A Claude model reached through :class:`anthropic.AsyncAnthropic`."""

    strict_output_only = True

    def __init__(
        self,
        *,
        client: anthropic.AsyncAnthropic,
        provider: str,
        model: str,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        thinking: ThinkingConfigParam | None = None,
        secret: str | None = None,
        missing_key: str | None = None,
    ) -> None:
        self._wire = Wire(client, "/v1/messages", _SDK)
        self.provider = provider
        self.endpoint = str(client.base_url)
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.thinking = thinking
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
            # message of the history through its TypedDict transform on every call,
            # and its post() builds the same request again through its generic
            # pipeline: the SDK builds it once (the wire's template: URL, auth,
            # version, headers, time limits) and makes the errors; each event comes as
            # the JSON it was, read by _anthropic_events, not built into the SDK's
            # typed model (as OpenAI's chunks are not).
            reply = await self._wire.open(body)
        except anthropic.AnthropicError as exc:
            self._raise(exc)
        state = EventState()
        async with reply, aclosing(self._events(reply)) as events:
            async for event in events:
                try:
                    deltas = event_deltas(event, state)
                except BadEvent as exc:
                    raise ModelError(
                        f"{self.provider} sent a stream event that is not a Messages "
                        f"API event: {exc}", code="model_bad_output", retryable=True,
                        details={"provider": self.provider}) from None
                for delta in deltas:
                    yield delta
        if state.finish is None:
            # The stream closed cleanly but the model never said why it stopped: treat
            # it as a cut-off, not as a complete answer that happens to be short.
            raise ModelError(
                f"{self.provider} stream ended before the model finished",
                code="model_unavailable",
                retryable=True,
                details={"provider": self.provider},
            )
        yield UsageEvent(usage=state.usage)
        yield Finish(reason=state.finish)

    def _body(self, request: ModelRequest, temperature: float | None, max_tokens: int
              ) -> bytes:
        """The request's JSON body, with prompt-cache breakpoints (:func:`_turns`)."""
        params: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens,
                                  "stream": True}
        if request.system:
            # Instructions (and memory blocks) change less than the conversation: a
            # breakpoint of their own keeps them cached when the conversation's start
            # changes (a compaction).
            params["system"] = [{"type": "text", "text": request.system,
                                 "cache_control": _EPHEMERAL}]
        if request.tools:
            params["tools"] = [_tool_param(spec) for spec in request.tools]
        if self.thinking is not None:
            params["thinking"] = self.thinking
        fmt = request.output
        if fmt is not None and fmt.native:
            # Structured outputs (GA): the answer is constrained to the schema, which
            # closes and requires every object's properties (strict_output_only: any
            # other was asked for in the system prompt).
            params["output_config"] = {"format": {"type": "json_schema",
                                                  "schema": fmt.schema}}
        if temperature is not None:
            # The SDK no longer has a temperature parameter (current models fix
            # sampling); sent only when configured, for models that still take it.
            params["temperature"] = temperature
        turns = _turns(request)
        return b"".join([orjson.dumps(params)[:-1], b',"messages":[', *turns, b"]}"])

    async def _events(self, reply: WireReply) -> AsyncGenerator[object, None]:
        """The stream's events, each the JSON it was sent as, read as the SDK's stream
        reads them: ``ping`` and unnamed events skipped, an ``error`` event raised as
        the SDK's status error, events without data skipped."""
        try:
            async with aclosing(reply.events()) as events:
                async for sse in events:
                    if sse.event == "ping" or sse.event is None:
                        continue
                    if sse.event == "error":
                        raise _stream_error(sse.data, reply)
                    if sse.data:
                        yield orjson.loads(sse.data)
        except (anthropic.AnthropicError, ValueError) as exc:
            self._raise(exc)

    def _raise(self, exc: Exception) -> NoReturn:
        error = map_error(exc, provider=self.provider, secret=self._secret)
        logger.warning("model call to %s failed: %s", self.provider, error.code)
        try:
            raise error from exc
        finally:
            del error, exc  # no cycle through this frame (see the OpenAI provider's)

    async def aclose(self) -> None:
        await self._wire.aclose()


def map_error(exc: Exception, *, provider: str, secret: str | None = None) -> ModelError:
    """Turn an SDK or stream decoding error into a :class:`ModelError` (the wire raises
    transport failures as the SDK's own errors)."""
    details: dict[str, Any] = {"provider": provider}
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        text = _error_text(exc)
        if status < 400:
            # An ``error`` event in a stream that had started with 200.
            status = _STATUS_OF_TYPE.get(exc.type or "", 500)
            message = f"{provider} reported an error mid-stream: {text}"
        else:
            message = f"{provider} returned HTTP {status}: {text}"
        details["status"] = status
        if exc.error_code:
            details["error_code"] = exc.error_code
        if status == 429:
            retry_after = _settings.retry_after(exc.response.headers)
            if retry_after is not None:
                details["retry_after"] = retry_after
            # A spend limit is a 429 too, but waiting does not lift it: the API says
            # so with x-should-retry: false (the SDK then does not retry either).
            no_retry = exc.response.headers.get("x-should-retry") == "false"
            code, retryable = "model_rate_limited", not no_retry
        elif status in (401, 403):
            code, retryable = "model_auth", False
        elif status >= 500 or status in (408, 409):
            code, retryable = "model_unavailable", True
        else:  # 400, 404, 413, 422 and any other client error
            code, retryable = "model_bad_request", False
    elif isinstance(exc, anthropic.APITimeoutError) and \
            _settings.connection_cause(exc) is None:
        message = f"{provider} request timed out"
        code, retryable = "model_unavailable", True
    elif isinstance(exc, anthropic.APIConnectionError):
        cause = _settings.connection_cause(exc) or exc.__cause__
        reason = f": {cause}" if cause is not None and str(cause) else ""
        message = f"{provider} connection failed{reason}"
        code, retryable = "model_unavailable", True
    elif isinstance(exc, SseTooLarge):
        message = f"{provider} sent a stream event over {MAX_EVENT_BYTES >> 20} MiB"
        code, retryable = "model_bad_output", False
    elif isinstance(exc, anthropic.APIResponseValidationError | ValueError):
        message = f"{provider} sent a response or stream event that is not valid JSON"
        code, retryable = "model_bad_output", True
    else:
        message = f"{provider} call failed: {type(exc).__name__}: {exc}"
        code, retryable = "model_error", True
    if secret:
        message = message.replace(secret, "***")
    return ModelError(message, code=code, retryable=retryable, details=details)


def _stream_error(data: str, reply: WireReply) -> Exception:
    """The SDK's status error for an ``error`` event (as its stream makes it: the
    event's JSON as the message, else its text)."""
    body: object = data
    try:
        body = orjson.loads(data)
        message = f"{body}"
    except ValueError:
        message = data or f"Error code: {reply.response.status}"
    return reply.wire.status_error(message, body, reply.response)


def _error_text(exc: anthropic.APIStatusError) -> str:
    if exc.api_message:
        return exc.api_message
    body = exc.body
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message


# --- request mapping --------------------------------------------------------------


_EPHEMERAL = {"type": "ephemeral"}
_MARK = b',"cache_control":{"type":"ephemeral"}}'
#: The names of this format's encodings in a session's memo.
_MEMO, _MEMO_TURNS = "anthropic-blocks", "anthropic-turns"
#: Blocks that may not carry a breakpoint themselves.
_UNMARKABLE = (b'{"type":"thinking"', b'{"type":"redacted_thinking"')

_Role = Literal["user", "assistant"]
#: One message's role and its content blocks, each JSON.
_Blocks = tuple[_Role, list[bytes]]


class _Grouped:
    """The Messages API's turns of a session's last request, for the next one: the
    turns that are closed (followed by a message of the other role) and, for each,
    the index of that following message; the last turn is never closed (the next
    message may join it)."""

    __slots__ = ("closed", "encoded", "ends", "joined", "last_end")

    def __init__(self) -> None:
        #: Each closed turn's role and blocks, and its JSON (after a comma).
        self.closed: list[tuple[_Role, list[bytes]]] = []
        self.encoded: list[bytes] = []
        self.ends: list[int] = []
        #: How many messages the last request had.
        self.last_end = 0
        #: The closed turns' JSON that stayed the same, joined once.
        self.joined = Joined()


def _turns(request: ModelRequest) -> list[bytes]:
    """Neutral messages as Messages API turns (each JSON, after a comma but the first),
    which must alternate user / assistant, with prompt-cache breakpoints.

    Tool results travel as ``tool_result`` blocks in a user turn, so consecutive
    results (and a user message steered in after them) merge into one user turn.

    Breakpoints (``cache_control``), besides the system prompt's: on the last block
    of the conversation, so that the next call reads all of this one from the cache;
    and on the last block of the previous call's conversation while it is not in the
    last turn, so that a step that added more blocks than the API looks back over
    (about 20) still finds what the previous call wrote. A session's memo keeps both
    the messages' blocks and the closed turns, so a call encodes only what is new.
    """
    messages = request.messages
    memo = request.memo
    if memo is None:
        blocks = [_blocks(m) for m in messages]
        state, kept = _Grouped(), 0
    else:
        per = memo.per_message(_MEMO, _blocks)
        blocks = per.values(messages, request.provenance)
        state = memo.get(_MEMO_TURNS)
        if state is None or per.dropped:
            state = _Grouped()
            memo.put(_MEMO_TURNS, state)
        kept = per.kept if not per.dropped else 0
    previous = state.last_end if kept >= state.last_end else 0
    closed, encoded, ends = state.closed, state.encoded, state.ends
    while ends and ends[-1] >= kept:
        closed.pop()
        encoded.pop()
        ends.pop()
    unchanged = len(encoded)
    # Group what follows the closed turns: every turn but the last is closed.
    role: _Role | None = None
    group: list[bytes] = []
    for index in range(ends[-1] if ends else 0, len(messages)):
        message_role, message_blocks = blocks[index]
        if not message_blocks:
            continue  # the API refuses empty turns and empty text blocks
        if message_role != role:
            if role is not None:
                closed.append((role, group))
                encoded.append(_turn(role, group))
                ends.append(index)
            role, group = message_role, []
        group.extend(message_blocks)
    state.last_end = len(messages)
    marked: bytes | None = None
    at = len(encoded)
    if previous and ends and previous <= ends[-1]:
        # The previous call's last message is in a closed turn: mark that turn.
        at = bisect.bisect_left(ends, previous)
        marked = _turn(*_marked_turn(closed[at]))
    last = [_turn(role, _marked(group))] if role is not None else []
    # The closed turns before the marked one (all, without one) joined as they stayed
    # from one call to the next (memo.Joined), then the rest.
    out = state.joined.chunks(encoded, unchanged, at, lead=False)
    rest = ([*encoded[at:], *last] if marked is None
            else [marked, *encoded[at + 1:], *last])
    if not out and rest:
        rest[0] = rest[0][1:]  # (no comma before the first)
    out.extend(rest)
    return out


def _marked_turn(turn: tuple[_Role, list[bytes]]) -> tuple[_Role, list[bytes]]:
    return turn[0], _marked(turn[1])


def _turn(role: _Role, blocks: list[bytes]) -> bytes:
    return b"".join([b',{"role":"', role.encode(), b'","content":[', b",".join(blocks),
                     b"]}"])


def _marked(blocks: list[bytes]) -> list[bytes]:
    """``blocks`` with a breakpoint on the last that may carry one."""
    for i in range(len(blocks) - 1, -1, -1):
        if not blocks[i].startswith(_UNMARKABLE):
            return [*blocks[:i], blocks[i][:-1] + _MARK, *blocks[i + 1:]]
    return blocks


def _blocks(message: UserMessage | AssistantMessage | ToolResultMessage) -> _Blocks:
    if isinstance(message, UserMessage):
        if message.parts:
            return "user", [orjson.dumps(b) for b in _part_blocks(message.parts)]
        return "user", [orjson.dumps({"type": "text", "text": message.content})] \
            if message.content else []
    if isinstance(message, ToolResultMessage):
        content: str | list[dict[str, Any]] = message.content
        if message.parts:
            # A tool_result holds images itself (a screenshot the model then sees).
            content = [*([{"type": "text", "text": message.content}]
                         if message.content else []),
                       *_part_blocks(list(message.parts))]
        return "user", [orjson.dumps({
            "type": "tool_result", "tool_use_id": message.call_id,
            "content": content, "is_error": message.is_error})]
    blocks: list[bytes] = []
    # Thinking first, unmodified and in order: the API checks their signatures.
    for thought in message.thinking:
        if thought.redacted is not None:
            blocks.append(orjson.dumps({"type": "redacted_thinking",
                                        "data": thought.redacted}))
        else:
            blocks.append(orjson.dumps({"type": "thinking", "thinking": thought.text,
                                        "signature": thought.signature}))
    if message.text:
        blocks.append(orjson.dumps({"type": "text", "text": message.text}))
    for call in message.tool_calls:
        blocks.append(orjson.dumps({"type": "tool_use", "id": call.id, "name": call.name,
                                    "input": call.arguments}))
    return "assistant", blocks


def _part_blocks(parts: list[TextPart | MediaPart]) -> list[dict[str, Any]]:
    """A message's parts as Messages API content blocks: an image as an ``image``
    block, a PDF as a ``document`` with its base64, a text file as a ``document`` with
    a text source (its name as the title)."""
    return _media.render(
        parts, text=lambda text: {"type": "text", "text": text},
        image=lambda p: {"type": "image", "source": {
            "type": "base64", "media_type": p.media_type, "data": _media.b64(p)}},
        pdf=lambda p: _document(p, {"type": "base64", "media_type": "application/pdf",
                                    "data": _media.b64(p)}),
        text_file=lambda p: _document(p, {
            "type": "text", "media_type": "text/plain",
            "data": (p.data or b"").decode("utf-8", errors="replace")}))


def _document(part: MediaPart, source: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.name:
        block["title"] = part.name
    return block


def _tool_param(spec: ToolSpec) -> ToolParam:
    param: ToolParam = {"name": spec.name, "input_schema": spec.parameters}
    if spec.description:
        param["description"] = spec.description
    return param


# --- construction -----------------------------------------------------------------


def create(
    *, provider: ProviderInfo, model: str, settings: dict[str, Any], agent: str
) -> AnthropicModel:
    """Build a model for ``anthropic:MODEL``; raise :class:`InvalidModel` on bad config.

    Runs when an agent is created or loaded. A missing key is not reported then (that
    would tell any token which variables the daemon has): the calls fail with
    ``model_auth``, and the log names the variable.
    """
    del agent
    own = _settings.model_settings(settings)
    base_url = _settings.base_url(provider, own)
    api_key, missing_key = _settings.key_of(provider, own)
    timeout, temperature = own.timeout_s, own.temperature
    max_tokens = own.max_tokens or DEFAULT_MAX_TOKENS
    thinking = _thinking(own.thinking, max_tokens)
    _settings.send_bodies_whole()
    client = anthropic.AsyncAnthropic(
        api_key=api_key or "missing",  # (calls fail first: missing_key)
        base_url=base_url,
        timeout=anthropic.not_given if timeout is None else timeout,
        # Retries are the kernel's (runtime/kernel.py): each goes back through the
        # scheduler and is seen by the provider's breaker. settings.max_retries sets them.
        max_retries=0,
        # Only for the wire's template (agentd.llm.providers._wire): calls go out on the
        # wire's own aiohttp session. (This client's TLS context is the daemon's.)
        http_client=anthropic.DefaultAioHttpClient(verify=tls_context(trust_env=True)),
    )
    return AnthropicModel(
        client=client,
        provider=provider.name,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        thinking=thinking,
        secret=api_key,
        missing_key=missing_key,
    )


def _thinking(value: int | str | None, max_tokens: int) -> ThinkingConfigParam | None:
    # The value's type and range are ModelSettings'; its bound by max_tokens is here.
    if value is None:
        return None
    if value == "adaptive" or not isinstance(value, int):
        return {"type": "adaptive"}
    if value >= max_tokens:
        raise InvalidModel(
            f"settings.thinking ({value}) must be below max_tokens ({max_tokens}): "
            "raise settings.max_tokens"
        )
    return {"type": "enabled", "budget_tokens": value}
