"""Provider-neutral messages, requests and stream events.

Every provider maps its wire format to these types at its boundary; the runtime,
the store and the API only ever see these. They are keyword-only dataclasses with a
``kind`` discriminator, serialised by one pydantic TypeAdapter each.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, overload

from pydantic import ConfigDict, Field, TypeAdapter

if TYPE_CHECKING:
    from agentd.llm.memo import PrefixMemo

__all__ = [
    "AssistantMessage",
    "Finish",
    "FinishReason",
    "MediaPart",
    "Message",
    "ModelRequest",
    "OutputFormat",
    "Part",
    "Prefix",
    "StreamEvent",
    "TextDelta",
    "TextPart",
    "Thinking",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolResultMessage",
    "ToolSpec",
    "Usage",
    "UsageEvent",
    "UserMessage",
    "message_adapter",
    "messages_adapter",
    "stream_event_adapter",
]

FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "error"]


@dataclass(kw_only=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    #: Of ``input_tokens``: read from the provider's prompt cache.
    cached_tokens: int = 0
    #: Of ``input_tokens``: written to the provider's prompt cache (Anthropic counts
    #: them; OpenAI's automatic cache reports none).
    cache_write_tokens: int = 0

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Usage:
        """The token counts of a logged ``usage`` object (which may carry more keys,
        such as ``cost_usd``)."""
        return cls(input_tokens=int(data.get("input_tokens") or 0),
                   output_tokens=int(data.get("output_tokens") or 0),
                   cached_tokens=int(data.get("cached_tokens") or 0),
                   cache_write_tokens=int(data.get("cache_write_tokens") or 0))

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(kw_only=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    #: Opaque provider data that must come back with the call on the next request
    #: (Gemini's ``extra_content``, which carries its thought signature).
    extra: dict[str, Any] | None = None


@dataclass(kw_only=True, slots=True)
class Thinking:
    """A reasoning block the provider wants back, unmodified, on the next request.

    Anthropic signs its thinking blocks and rejects a tool-use turn replayed without
    them, so they are kept with the assistant message. A redacted block carries only
    the provider's opaque ``redacted`` payload.
    """

    text: str = ""
    signature: str = ""
    redacted: str | None = None


@dataclass(kw_only=True, slots=True)
class TextPart:
    """Text, in a message made of parts (:attr:`UserMessage.parts`)."""

    kind: Literal["text"] = "text"
    text: str


@dataclass(kw_only=True, slots=True)
class MediaPart:
    """An image or a file a message carries, by reference: its bytes are a blob the
    store keeps once (content-addressed by ``blob``, the SHA-256 of the bytes), and
    the runtime fills :attr:`data` in before a model call (providers encode it)."""

    kind: Literal["image", "file"]
    #: The SHA-256 of the bytes, hex.
    blob: str
    media_type: str
    size: int
    width: int | None = None
    height: int | None = None
    #: A file's name as its sender gave it.
    name: str | None = None
    #: A PDF's page count.
    pages: int | None = None
    #: The bytes, once loaded from the store (never serialised, never compared).
    data: Annotated[bytes | None, Field(exclude=True)] = field(
        default=None, compare=False, repr=False)

    def label(self) -> str:
        """What the part is in a few words: ``image image/png 12x34``, ``file
        application/pdf report.pdf 3 pages``."""
        words = [self.kind, self.media_type]
        if self.name:
            words.append(self.name)
        if self.width and self.height:
            words.append(f"{self.width}x{self.height}")
        if self.pages:
            words.append(f"{self.pages} page{'s' if self.pages != 1 else ''}")
        return " ".join(words)


Part = TextPart | MediaPart


@dataclass(kw_only=True, slots=True)
class UserMessage:
    kind: Literal["user"] = "user"
    #: The message's text (its text parts joined with newlines, when it has parts).
    content: str
    #: The message's parts in order (text, images, files), when it has more than text;
    #: empty for a text-only message, which is :attr:`content`.
    parts: list[TextPart | MediaPart] = field(default_factory=list)


@dataclass(kw_only=True, slots=True)
class AssistantMessage:
    kind: Literal["assistant"] = "assistant"
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: FinishReason = "stop"
    model: str | None = None
    #: Reasoning blocks, in order, for providers that need them replayed (Anthropic).
    thinking: list[Thinking] = field(default_factory=list)


@dataclass(kw_only=True, slots=True)
class ToolResultMessage:
    kind: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str
    is_error: bool = False
    #: Images the tool returned besides its text (a screenshot), after ``content``.
    parts: list[MediaPart] = field(default_factory=list)


Message = Annotated[
    UserMessage | AssistantMessage | ToolResultMessage, Field(discriminator="kind")
]


@dataclass(kw_only=True, slots=True)
class ToolSpec:
    """What a model is told about a tool: name, description, JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputFormat:
    """The JSON Schema a final answer must match (:mod:`agentd.llm.output`)."""

    schema: dict[str, Any] = field(hash=False)
    #: The schema's name for providers that want one (OpenAI's ``json_schema.name``).
    name: str = "output"
    #: The schema is fit for the providers' strict mode as it is.
    strict: bool = False
    #: This model gets the schema natively (its provider's structured-output
    #: parameter); else the request's system prompt asks for it.
    native: bool = False


_T = TypeVar("_T")


class Prefix(Sequence[_T]):
    """The first ``len(items)`` items of ``items``, a list that is only ever appended
    to, as they are now: a snapshot of it in O(1), not a copy.

    A session's history hands one to each model call (:meth:`agentd.runtime.history.
    SessionHistory.for_request`): its list grows by the turn's events while the call
    is under way, and a compaction gives the history a new list rather than changing
    this one, so what the call reads stays what it was given. Copying the list instead
    cost each call time in proportion to the conversation."""

    __slots__ = ("_items", "_n")

    def __init__(self, items: list[_T]) -> None:
        self._items = items
        self._n = len(items)

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...

    def __getitem__(self, index: int | slice) -> _T | list[_T]:
        n = self._n
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                return self._items[start:stop]
            items = self._items
            return [items[i] for i in range(start, stop, step)]
        i = index.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("Prefix index out of range")
        return self._items[i]

    def __iter__(self) -> Iterator[_T]:
        return itertools.islice(self._items, self._n)

    def __reversed__(self) -> Iterator[_T]:
        items = self._items
        return (items[i] for i in range(self._n - 1, -1, -1))

    def __eq__(self, other: object) -> bool:
        # (Equal to the list it reads as, as a list is; not to a tuple, as a list is not.)
        if isinstance(other, Prefix | list):
            return len(other) == self._n and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Prefix({self._items[:self._n]!r})"


@dataclass(kw_only=True, slots=True)
class ModelRequest:
    system: str = ""
    #: The conversation: a list, or a :class:`Prefix` of the session's history (read
    #: it, never change it).
    messages: Sequence[UserMessage | AssistantMessage | ToolResultMessage] = field(
        default_factory=list
    )
    tools: list[ToolSpec] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    #: The session's memo of what earlier calls derived from these messages (their
    #: wire encodings, their token estimates), so that a call converts only the new
    #: ones (:mod:`agentd.llm.memo`); None for a one-off request.
    memo: PrefixMemo | None = field(default=None, compare=False, repr=False)
    #: Where the messages come from, for the memo: (the history's generation, the
    #: position of the first, how many of the first are the history's own), so that
    #: what a call shares with the last one is known without comparing them
    #: (:mod:`agentd.llm.memo`); None: compared.
    provenance: tuple[int, int, int] | None = field(default=None, compare=False,
                                                    repr=False)
    #: A stable key for the conversation (a digest of the session's id, not the id),
    #: which providers may use to route the call to where its prefix is cached.
    cache_key: str | None = None
    #: The JSON Schema the final answer must match, if any.
    output: OutputFormat | None = None


# --- stream events -------------------------------------------------------------


@dataclass(kw_only=True, slots=True)
class TextDelta:
    kind: Literal["text_delta"] = "text_delta"
    text: str


@dataclass(kw_only=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call; ``index`` groups the pieces of one call."""

    kind: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    extra: dict[str, Any] | None = None


@dataclass(kw_only=True, slots=True)
class ThinkingDelta:
    """A piece of a reasoning block; ``index`` groups the pieces of one block."""

    kind: Literal["thinking_delta"] = "thinking_delta"
    index: int
    text: str = ""
    signature: str = ""
    redacted: str | None = None


@dataclass(kw_only=True, slots=True)
class UsageEvent:
    kind: Literal["usage"] = "usage"
    usage: Usage


@dataclass(kw_only=True, slots=True)
class Finish:
    kind: Literal["finish"] = "finish"
    reason: FinishReason = "stop"


StreamEvent = Annotated[
    TextDelta | ToolCallDelta | ThinkingDelta | UsageEvent | Finish, Field(discriminator="kind")
]

# Built on first use (about 70 ms at import otherwise): a tool worker's zygote and the
# CLI import these types and never validate a message.
_DEFERRED = ConfigDict(defer_build=True)
message_adapter: TypeAdapter[UserMessage | AssistantMessage | ToolResultMessage] = (
    TypeAdapter(Message, config=_DEFERRED)
)
messages_adapter: TypeAdapter[list[UserMessage | AssistantMessage | ToolResultMessage]] = (
    TypeAdapter(list[Message], config=_DEFERRED)
)
stream_event_adapter: TypeAdapter[
    TextDelta | ToolCallDelta | ThinkingDelta | UsageEvent | Finish
] = TypeAdapter(StreamEvent, config=_DEFERRED)
