"""The requests the door takes, checked, and what they send to the agent.

Only what agentd can honour is taken: text content, images and files in a user's
message (Chat's ``image_url`` and ``file`` parts, Responses' ``input_image`` and
``input_file``: data URLs, base64 or http(s) URLs the daemon fetches; not file ids),
one choice, the agent's own tools; system and developer messages (and Responses'
``instructions``) are the caller's instructions for the run. Parameters that tune a
model call (``temperature``, ``max_tokens``, ``top_p``, ``stop``, ``seed``, ...) are
accepted and ignored, since the agent's settings decide them; parameters whose meaning
agentd cannot keep (``n`` > 1, audio, a forced ``tool_choice``) are refused, naming
the parameter. A JSON ``response_format`` (Responses: ``text.format``) is the run's
output schema: the answer is held to it (:mod:`agentd.llm.output`). The caller's function ``tools``
are offered to the model; a call of one ends the run and is handed back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.errors import InvalidInput
from agentd.events import ClientToolData
from agentd.llm.output import check_schema
from agentd.media import RawPart

__all__ = ["ChatRequest", "Conversation", "ResponsesRequest", "chat_conversation",
           "client_tools", "output_schema", "parse", "responses_conversation"]

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class _Lenient(BaseModel):
    # OpenAI's clients send many optional parameters; unknown ones are ignored.
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str = Field(min_length=1, max_length=256)
    #: Each checked by :func:`chat_conversation` as it is read (one pass, rather than a
    #: model per message: a client resends the whole conversation every turn).
    messages: list[Any] = Field(min_length=1, max_length=10_000)
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
    #: A string, or items (objects) each checked by :func:`responses_conversation`.
    input: str | list[Any]
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
    last assistant reply); the turns before (:meth:`earlier`), which a session that
    does not hold them yet gets as a transcript in front of it; ``instructions`` the
    request's system and developer messages (Responses: and ``instructions``), the
    caller's instructions for the run it starts (after the agent's own).

    The turns are kept as two lists, ``roles`` and ``texts`` (the first ``split`` of
    them earlier): a long conversation resent whole costs no object per turn beyond
    what reading its JSON made."""

    def __init__(self, roles: list[str], texts: list[str], split: int,
                 instructions: str = "", results: list[tuple[str, str]] | None = None
                 ) -> None:
        self.roles, self.texts, self.split = roles, texts, split
        #: The turns with images or files (by index): their pieces in order, text and
        #: parts (their text in ``texts`` names each part in brackets).
        self.media: dict[int, list[str | RawPart]] = {}
        self.new: list[tuple[str, str]] = list(zip(roles[split:], texts[split:],
                                                   strict=True))
        self.instructions = instructions
        #: The new turns' tool results (call id, output), when every new turn before
        #: the user's is one with a call id: results of the calls an earlier response
        #: handed to the caller, if the door finds them so (else they are text).
        self.results = results or []

    @property
    def has_earlier(self) -> bool:
        return self.split > 0

    def earlier(self) -> list[tuple[str, str]]:
        return list(zip(self.roles[:self.split], self.texts[:self.split], strict=True))

    def without_results(self) -> Conversation:
        """The conversation once its results are taken as results: the turns after
        them (the user's text, maybe none)."""
        rest = Conversation(self.roles, self.texts, self.split, self.instructions)
        rest.new = self.new[len(self.results):]
        rest.media = self.media
        return rest

    def parts(self, *, with_earlier: bool) -> list[RawPart] | None:
        """The message's parts, when a new turn carries images or files (None: text
        only, :meth:`content`): the transcript of the earlier turns as text, then each
        new turn's text and parts in their order."""
        start = len(self.roles) - len(self.new)
        if not any(i >= start for i in self.media):
            return None
        out: list[RawPart] = []
        if with_earlier and self.split:
            out.append(RawPart(kind="text", text=self._transcript()))
        for i in range(start, len(self.roles)):
            for piece in self.media.get(i, [self.texts[i]]):
                out.append(RawPart(kind="text", text=piece) if isinstance(piece, str)
                           else piece)
        return out

    def content(self, *, with_earlier: bool) -> str:
        new = "\n\n".join(text for _, text in self.new)
        if not with_earlier or not self.split:
            return new
        return self._transcript() + "\n\n" + new

    def _transcript(self) -> str:
        lines = [f"[{role}]: {text}" for role, text in self.earlier()]
        return ("<conversation_so_far>\n" + "\n\n".join(lines) +
                "\n</conversation_so_far>")


def _text_of(content: str | list[dict[str, Any]] | None, param: str,
             text_types: tuple[str, ...], media: list[str | RawPart] | None = None) -> str:
    """A message's text; its images and files (``media``: a user message's) are named
    in it in brackets, and kept in ``media`` with its text pieces, in order."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in text_types and isinstance(part.get("text"), str):
            parts.append(part["text"])
            if media is not None:
                media.append(part["text"])
        elif kind in ("refusal",) and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
        elif kind in _MEDIA_PARTS and media is not None:
            raw = _MEDIA_PARTS[kind](part, f"{param}[{j}]")
            raw.where = f"{param}[{j}]"
            parts.append(f"[{raw.kind} {raw.name or ''}]".replace(" ]", "]"))
            media.append(raw)
        else:
            raise _unsupported(f"{param}[{j}]", f"a content part of type {kind!r}")
    return "".join(parts)


def _parts_text(content: str | list[dict[str, Any]] | None, param: str,
                text_types: tuple[str, ...], role: str,
                found: dict[int, list[str | RawPart]], turn: int) -> str:
    """:func:`_text_of` a message; a user's images and files are kept in ``found`` at
    its turn's index."""
    media: list[str | RawPart] | None = [] if role == "user" else None
    text = _text_of(content, param, text_types, media)
    if media and any(isinstance(piece, RawPart) for piece in media):
        found[turn] = media
    return text


def _string(part: dict[str, Any], key: str, where: str) -> str | None:
    value = part.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{where}.{key}", "Input should be a valid string")
    return value


def _no_file_id(part: dict[str, Any], where: str) -> None:
    if part.get("file_id") is not None:
        raise _unsupported(f"{where}.file_id", "files uploaded to OpenAI (send the data "
                           "or a URL)")


def _chat_image(part: dict[str, Any], where: str) -> RawPart:
    """Chat Completions' ``{"type": "image_url", "image_url": {"url": ...}}``: a data
    URL or an http(s) URL the daemon fetches."""
    image = part.get("image_url")
    url = _string(image, "url", f"{where}.image_url") if isinstance(image, dict) else None
    if not url:
        raise _invalid(f"{where}.image_url.url", "Field required")
    return RawPart(kind="image", url=url)


def _chat_file(part: dict[str, Any], where: str) -> RawPart:
    """Chat Completions' ``{"type": "file", "file": {"file_data", "filename"}}``."""
    file = part.get("file")
    if not isinstance(file, dict):
        raise _invalid(f"{where}.file", "Field required")
    _no_file_id(file, f"{where}.file")
    return _file(_string(file, "file_data", f"{where}.file"),
                 _string(file, "filename", f"{where}.file"), None, f"{where}.file")


def _input_image(part: dict[str, Any], where: str) -> RawPart:
    """Responses' ``{"type": "input_image", "image_url": ...}``."""
    _no_file_id(part, where)
    url = _string(part, "image_url", where)
    if not url:
        raise _invalid(f"{where}.image_url", "Field required")
    return RawPart(kind="image", url=url)


def _input_file(part: dict[str, Any], where: str) -> RawPart:
    """Responses' ``{"type": "input_file", "file_data" | "file_url", "filename"}``."""
    _no_file_id(part, where)
    return _file(_string(part, "file_data", where), _string(part, "filename", where),
                 _string(part, "file_url", where), where)


def _file(data: str | None, name: str | None, url: str | None, where: str) -> RawPart:
    if data:
        # A data URL, as OpenAI's examples send it, or bare base64.
        if data.startswith("data:"):
            return RawPart(kind="file", url=data, name=name)
        return RawPart(kind="file", base64=data, name=name)
    if url:
        return RawPart(kind="file", url=url, name=name)
    raise _invalid(f"{where}.file_data", "Field required")


#: The image and file parts the doors take (a user's message only), by type.
_MEDIA_PARTS: dict[str, Callable[[dict[str, Any], str], RawPart]] = {
    "image_url": _chat_image, "file": _chat_file,
    "input_image": _input_image, "input_file": _input_file}


def _conversation(roles: list[str], texts: list[str], ids: list[str | None],
                  instructions: list[str], last_reply: int, param: str) -> Conversation:
    """The conversation of a request's turns (``roles`` and ``texts``: its system and
    developer messages left out, their texts are ``instructions``), with each turn's
    tool call id (a tool result's) and the index of the last assistant turn (-1:
    none)."""
    if not roles or roles[-1] not in ("user", "tool"):
        raise InvalidInput("the last message must be the user's (a reply needs a "
                           "message to answer)", field=param)
    conversation = Conversation(roles, texts, last_reply + 1, "\n\n".join(instructions))
    new = conversation.new
    results: list[tuple[str, str]] = []
    for (role, text), call_id in zip(new, ids[last_reply + 1:], strict=True):
        if role != "tool" or call_id is None:
            break
        results.append((call_id, text))
    if any(role == "tool" for role, _ in new[len(results):]):
        results = []  # tool turns after a user's, or without ids: text, as before
    if not new or (not results and not "".join(text for _, text in new).strip()):
        raise InvalidInput("the last message has no text", field=param)
    conversation.results = results
    return conversation


def output_schema(fmt: Any, param: str, *, flat: bool) -> dict[str, Any] | None:
    """The JSON Schema a request's response format asks the answer to match (Chat:
    ``response_format``, ``{"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}``; Responses, ``flat``: ``text.format``, ``{"type": "json_schema",
    "name", "schema", "strict"}``); ``json_object`` asks for any JSON object; None for
    text. The schema is checked here, to name the parameter (and again where every
    door's is: the Runtime's send)."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise InvalidInput(f"{param} must be an object", field=param)
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise _unsupported(f"{param}.type", f"a response format of type {kind!r}")
    spec = fmt if flat else fmt.get("json_schema")
    where = param if flat else f"{param}.json_schema"
    if not isinstance(spec, dict):
        raise InvalidInput(f"{where} must be an object", field=where)
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not _TOOL_NAME.match(name)):
        raise InvalidInput(f"{where}.name: a name is 1-64 letters, digits, _ or -",
                           field=f"{where}.name")
    schema = spec.get("schema")
    if schema is None:
        return {"$comment": "any JSON value"}  # (OpenAI's default)
    return check_schema(schema, f"{where}.schema")


def _invalid(where: str, what: str) -> InvalidInput:
    return InvalidInput(f"{where}: {what}", field=where)


_ROLE_WORDS = "'system', 'developer', 'user', 'assistant', 'tool' or 'function'"


def chat_conversation(request: ChatRequest) -> Conversation:
    """The checked conversation of a Chat Completions request: each message checked
    (a role of OpenAI's, text content, string ``name`` and ``tool_call_id``) and read
    in one pass."""
    if request.n not in (None, 1):
        raise _unsupported("n", "more than one choice")
    if request.functions:
        raise _unsupported("functions", "the deprecated functions parameter (use tools)")
    if request.modalities and set(request.modalities) - {"text"}:
        raise _unsupported("modalities", "output other than text")
    roles: list[str] = []
    texts: list[str] = []
    ids: list[str | None] = []
    instructions: list[str] = []
    found: dict[int, list[str | RawPart]] = {}
    last_reply = -1
    for i, message in enumerate(request.messages):
        if type(message) is not dict:
            raise _invalid(f"messages.{i}", "a message is an object with a role")
        role = message.get("role")
        if role not in _ROLES:
            raise _invalid(f"messages.{i}.role", f"Input should be {_ROLE_WORDS}"
                           if role is not None else "Field required")
        content = message.get("content")
        if type(content) is str:
            text = content
        elif content is None:
            text = ""
        elif type(content) is list and all(type(part) is dict for part in content):
            text = _parts_text(content, f"messages[{i}].content", ("text",), role, found,
                               len(roles))
        else:
            raise _invalid(f"messages.{i}.content", "a string, a list of content parts "
                           "(objects) or null")
        name = message.get("name")
        if name is not None and type(name) is not str:
            raise _invalid(f"messages.{i}.name", "Input should be a valid string")
        call_id = message.get("tool_call_id")
        if call_id is not None and (type(call_id) is not str or len(call_id) > 300):
            raise _invalid(f"messages.{i}.tool_call_id",
                           "a string of at most 300 characters")
        if role in ("system", "developer"):
            # Wherever they are, the caller's instructions (a framework's system
            # prompt), not turns of the conversation.
            if text.strip():
                instructions.append(text)
            continue
        if role == "assistant":
            last_reply = len(roles)
        roles.append(role)
        texts.append(text)
        ids.append(call_id if role == "tool" else None)
    conversation = _conversation(roles, texts, ids, instructions, last_reply, "messages")
    conversation.media = found
    return conversation


def responses_conversation(request: ResponsesRequest) -> Conversation:
    """The checked input of a Responses request (its items read in one pass)."""
    roles: list[str] = []
    texts: list[str] = []
    ids: list[str | None] = []
    instructions = [request.instructions] if request.instructions and (
        request.instructions.strip()) else []
    last_reply = -1
    found: dict[int, list[str | RawPart]] = {}
    items = [request.input] if isinstance(request.input, str) else request.input
    for i, item in enumerate(items):
        if type(item) is str and isinstance(request.input, str):
            role, text, call_id = "user", item, None
        elif type(item) is dict:
            content = item.get("content")
            if type(content) is str and item.get("role") in _ROLES and item.get(
                    "type", "message") == "message":
                # (A message with text content, what most items are.)
                role, text, call_id = item["role"], content, None
            else:
                (role, text), call_id = _input_turn(item, i, found, len(roles))
        else:
            raise _invalid(f"input.{i}", "an input item is an object")
        if role in ("system", "developer"):
            if text.strip():
                instructions.append(text)
            continue
        if role == "assistant":
            last_reply = len(roles)
        roles.append(role)
        texts.append(text)
        ids.append(call_id)
    conversation = _conversation(roles, texts, ids, instructions, last_reply, "input")
    conversation.media = found
    return conversation


def _input_turn(item: dict[str, Any], i: int, found: dict[int, list[str | RawPart]],
                turn: int) -> tuple[tuple[str, str], str | None]:
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
    content = item.get("content")
    if content is not None and type(content) is not str and not (
            type(content) is list and all(type(part) is dict for part in content)):
        raise _invalid(f"input[{i}].content", "a string or a list of content parts "
                       "(objects)")
    return (role, _parts_text(content, f"input[{i}].content",
                              ("input_text", "output_text", "text"), role, found, turn)), None
