"""The requests the door takes, checked, and what they send to the agent.

Only what agentd can honour is taken: text content, one choice, the agent's own
tools. Parameters that tune a model call (``temperature``, ``max_tokens``, ``top_p``,
``stop``, ``seed``, ...) are accepted and ignored, since the agent's settings decide
them; parameters whose meaning agentd cannot keep (client-side ``tools``, ``n`` > 1,
a JSON ``response_format``, audio, images) are refused, naming the parameter.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.errors import InvalidInput

__all__ = ["ChatRequest", "Conversation", "ResponsesRequest", "chat_conversation",
           "parse", "responses_conversation"]

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class _Lenient(BaseModel):
    # OpenAI's clients send many optional parameters; unknown ones are ignored.
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None


class ResponsesRequest(_Lenient):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=300)
    stream: bool = False
    user: str | None = Field(default=None, max_length=256)
    tools: list[Any] | None = None
    text: dict[str, Any] | None = None


def parse(model: type[BaseModel], data: Any) -> Any:
    """``data`` as ``model``; the first problem as a 400 naming its parameter."""
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None


def _unsupported(param: str, what: str) -> InvalidInput:
    return InvalidInput(f"{what} is not supported by agentd's OpenAI-compatible API "
                        "(docs/protocols/openai.md)", field=param, code="unsupported")


class Conversation:
    """What a request sends: ``new`` is the message for the agent (the turns after the
    last assistant reply); ``earlier`` the turns before, which a session that does
    not hold them yet gets as a transcript in front of it."""

    def __init__(self, new: list[tuple[str, str]], earlier: list[tuple[str, str]]) -> None:
        self.new = new
        self.earlier = earlier

    def content(self, *, with_earlier: bool) -> str:
        new = "\n\n".join(text for _, text in self.new)
        if not with_earlier or not self.earlier:
            return new
        lines = [f"[{role}]: {text}" for role, text in self.earlier]
        return ("<conversation_so_far>\n" + "\n\n".join(lines) +
                "\n</conversation_so_far>\n\n" + new)


def _text_of(content: str | list[dict[str, Any]] | None, param: str,
             text_types: tuple[str, ...]) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in text_types and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind in ("refusal",) and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
        else:
            raise _unsupported(f"{param}[{j}]", f"a content part of type {kind!r}")
    return "".join(parts)


def _split(turns: list[tuple[str, str]], param: str) -> Conversation:
    if not turns or turns[-1][0] not in ("user", "tool"):
        raise InvalidInput("the last message must be the user's (a reply needs a "
                           "message to answer)", field=param)
    last_reply = max((i for i, (role, _) in enumerate(turns) if role == "assistant"),
                     default=-1)
    new = [t for t in turns[last_reply + 1:] if t[0] != "system" and t[0] != "developer"]
    earlier = turns[:last_reply + 1] + [t for t in turns[last_reply + 1:]
                                        if t[0] in ("system", "developer")]
    if not new or not "".join(text for _, text in new).strip():
        raise InvalidInput("the last message has no text", field=param)
    return Conversation(new, earlier)


def chat_conversation(request: ChatRequest) -> Conversation:
    """The checked conversation of a Chat Completions request."""
    if request.n not in (None, 1):
        raise _unsupported("n", "more than one choice")
    if request.tools or request.functions:
        raise _unsupported("tools", "client-side tools (the agent's own tools run on "
                                    "the server)")
    if request.response_format and request.response_format.get("type") not in (None, "text"):
        raise _unsupported("response_format", "a response format other than text")
    if request.modalities and set(request.modalities) - {"text"}:
        raise _unsupported("modalities", "output other than text")
    turns: list[tuple[str, str]] = [
        (m.role, _text_of(m.content, f"messages[{i}].content", ("text",)))
        for i, m in enumerate(request.messages)]
    return _split(turns, "messages")


def responses_conversation(request: ResponsesRequest) -> Conversation:
    """The checked input of a Responses request."""
    if request.tools:
        raise _unsupported("tools", "client-side tools (the agent's own tools run on "
                                    "the server)")
    fmt = (request.text or {}).get("format") or {}
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _unsupported("text.format", "a response format other than text")
    turns: list[tuple[str, str]] = []
    if request.instructions:
        turns.append(("system", request.instructions))
    if isinstance(request.input, str):
        turns.append(("user", request.input))
    else:
        for i, item in enumerate(request.input):
            kind = item.get("type", "message")
            role = item.get("role")
            if kind != "message" or role not in _ROLES:
                raise _unsupported(f"input[{i}]", f"an input item of type {kind!r}")
            turns.append((role, _text_of(item.get("content"), f"input[{i}].content",
                                         ("input_text", "output_text", "text"))))
    return _split(turns, "input")
