"""The requests the door takes, checked, and what they send to the agent.

Only what agentd can honour is taken: text content, one choice, the agent's own
tools; system and developer messages (and Responses' ``instructions``) are the
caller's instructions for the run. Parameters that tune a model call
(``temperature``, ``max_tokens``, ``top_p``, ``stop``, ``seed``, ...) are accepted and
ignored, since the agent's settings decide them; parameters whose meaning agentd
cannot keep (``n`` > 1, a JSON ``response_format``, audio, images, a forced
``tool_choice``) are refused, naming the parameter. The caller's function ``tools``
are offered to the model; a call of one ends the run and is handed back.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.errors import InvalidInput
from agentd.events import ClientToolData

__all__ = ["ChatRequest", "Conversation", "ResponsesRequest", "chat_conversation",
           "client_tools", "parse", "responses_conversation"]

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class _Lenient(BaseModel):
    # OpenAI's clients send many optional parameters; unknown ones are ignored.
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = Field(default=None, max_length=300)


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    n: int | None = None
    tools: list[Any] | None = Field(default=None, max_length=128)
    tool_choice: Any = None
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
    tools: list[Any] | None = Field(default=None, max_length=128)
    tool_choice: Any = None
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


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def client_tools(tools: list[Any] | None, tool_choice: Any, *, flat: bool
                 ) -> list[ClientToolData]:
    """The caller's function tools (Chat: ``{"type": "function", "function": {...}}``;
    Responses, ``flat``: ``{"type": "function", "name", ...}``), checked; none when
    ``tool_choice`` is ``"none"``."""
    if tool_choice not in (None, "auto", "none"):
        raise _unsupported("tool_choice", "a tool_choice other than auto or none")
    out: list[ClientToolData] = []
    for i, tool in enumerate(tools or ()):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise _unsupported(where, f"a tool of type {kind!r} (function tools only)")
        spec = tool if flat else tool.get("function")
        if not isinstance(spec, dict):
            raise InvalidInput(f"{where}.function must be an object", field=where)
        name, description = spec.get("name"), spec.get("description") or ""
        parameters = spec.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidInput(f"{where}: a tool name is 1-64 letters, digits, _ or -",
                               field=f"{where}.name")
        if not isinstance(description, str) or not isinstance(parameters, dict):
            raise InvalidInput(f"{where}: description is a string, parameters an object "
                               "(a JSON schema)", field=where)
        if any(t["name"] == name for t in out):
            raise InvalidInput(f"{where}: two tools are named {name!r}", field=f"{where}.name")
        out.append({"name": name, "description": description, "parameters": parameters})
    return [] if tool_choice == "none" else out


class Conversation:
    """What a request sends: ``new`` is the message for the agent (the turns after the
    last assistant reply); ``earlier`` the turns before, which a session that does
    not hold them yet gets as a transcript in front of it; ``instructions`` the
    request's system and developer messages (Responses: and ``instructions``), the
    caller's instructions for the run it starts (after the agent's own)."""

    def __init__(self, new: list[tuple[str, str]], earlier: list[tuple[str, str]],
                 instructions: str = "", results: list[tuple[str, str]] | None = None
                 ) -> None:
        self.new = new
        self.earlier = earlier
        self.instructions = instructions
        #: The new turns' tool results (call id, output), when every new turn before
        #: the user's is one with a call id: results of the calls an earlier response
        #: handed to the caller, if the door finds them so (else they are text).
        self.results = results or []

    def without_results(self) -> Conversation:
        """The conversation once its results are taken as results: the turns after
        them (the user's text, maybe none)."""
        return Conversation(self.new[len(self.results):], self.earlier, self.instructions)

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


def _split(turns: list[tuple[str, str]], param: str,
           call_ids: list[str | None] | None = None) -> Conversation:
    """``call_ids``: each turn's tool call id (a tool result's), if any."""
    ids = call_ids or [None] * len(turns)
    # System and developer messages, wherever they are, are the caller's instructions
    # (a framework's system prompt), not turns of the conversation.
    instructions = "\n\n".join(text for role, text in turns
                                if role in ("system", "developer") and text.strip())
    kept = [(t, i) for t, i in zip(turns, ids, strict=True)
            if t[0] not in ("system", "developer")]
    turns, ids = [t for t, _ in kept], [i for _, i in kept]
    if not turns or turns[-1][0] not in ("user", "tool"):
        raise InvalidInput("the last message must be the user's (a reply needs a "
                           "message to answer)", field=param)
    last_reply = max((i for i, (role, _) in enumerate(turns) if role == "assistant"),
                     default=-1)
    new = turns[last_reply + 1:]
    earlier = turns[:last_reply + 1]
    results: list[tuple[str, str]] = []
    for (role, text), call_id in zip(new, ids[last_reply + 1:], strict=True):
        if role != "tool" or call_id is None:
            break
        results.append((call_id, text))
    if any(role == "tool" for role, _ in new[len(results):]):
        results = []  # tool turns after a user's, or without ids: text, as before
    if not new or (not results and not "".join(text for _, text in new).strip()):
        raise InvalidInput("the last message has no text", field=param)
    return Conversation(new, earlier, instructions, results)


def chat_conversation(request: ChatRequest) -> Conversation:
    """The checked conversation of a Chat Completions request."""
    if request.n not in (None, 1):
        raise _unsupported("n", "more than one choice")
    if request.functions:
        raise _unsupported("functions", "the deprecated functions parameter (use tools)")
    if request.response_format and request.response_format.get("type") not in (None, "text"):
        raise _unsupported("response_format", "a response format other than text")
    if request.modalities and set(request.modalities) - {"text"}:
        raise _unsupported("modalities", "output other than text")
    turns: list[tuple[str, str]] = [
        (m.role, _text_of(m.content, f"messages[{i}].content", ("text",)))
        for i, m in enumerate(request.messages)]
    return _split(turns, "messages",
                  [m.tool_call_id if m.role == "tool" else None for m in request.messages])


def responses_conversation(request: ResponsesRequest) -> Conversation:
    """The checked input of a Responses request."""
    fmt = (request.text or {}).get("format") or {}
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _unsupported("text.format", "a response format other than text")
    turns: list[tuple[str, str]] = []
    ids: list[str | None] = []
    if request.instructions:
        turns.append(("system", request.instructions))
        ids.append(None)
    if isinstance(request.input, str):
        turns.append(("user", request.input))
        ids.append(None)
    else:
        for i, item in enumerate(request.input):
            turn, call_id = _input_turn(item, i)
            turns.append(turn)
            ids.append(call_id)
    return _split(turns, "input", ids)


def _input_turn(item: dict[str, Any], i: int) -> tuple[tuple[str, str], str | None]:
    """One Responses input item as a turn, with its call id when it is a tool's
    result: a ``function_call`` is the model's (an assistant turn), its
    ``function_call_output`` the caller's result."""
    kind = item.get("type", "message")
    if kind == "function_call":
        return ("assistant", ""), None
    if kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str) or not isinstance(output, str):
            raise InvalidInput(f"input[{i}]: a function_call_output has a call_id and a "
                               "string output", field=f"input[{i}]")
        return ("tool", output), call_id
    role = item.get("role")
    if kind != "message" or role not in _ROLES:
        raise _unsupported(f"input[{i}]", f"an input item of type {kind!r}")
    return (role, _text_of(item.get("content"), f"input[{i}].content",
                           ("input_text", "output_text", "text"))), None
