"""The model interface: one streaming method; everything else is derived from it."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any

import orjson

from agentd.errors import ModelError
from agentd.llm.messages import (
    AssistantMessage,
    Finish,
    FinishReason,
    ModelRequest,
    StreamEvent,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

__all__ = ["Model", "StreamAccumulator"]


class Model(abc.ABC):
    """A chat model behind a provider.

    Subclasses implement :meth:`stream`; :meth:`complete` is built from it.
    Providers raise :class:`agentd.errors.ModelError` (never SDK errors).
    """

    #: The ``provider:model`` string this model was resolved from.
    spec: str = ""
    #: The provider's name (``openai``, ``anthropic``, ...) and the endpoint it is
    #: reached at: the kernel's scheduler lanes and circuit breakers are per provider
    #: and endpoint (two ``openai-compatible`` servers are two providers).
    provider: str = ""
    endpoint: str = ""
    #: Its native structured output takes only schemas fit for strict mode (every
    #: object closed, every property required): others are asked for in the prompt.
    strict_output_only: bool = False

    @abc.abstractmethod
    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Stream neutral events for one model call, ending with a ``Finish``."""

    def ready(self, request: ModelRequest) -> AssistantMessage | None:
        """The whole answer to ``request`` when the model has it at once (no I/O, no
        delay): exactly the message :meth:`stream`'s events would make, each of them
        as it would have been made, the text in one delta. The kernel takes it instead
        of streaming (an async generator and an event per chunk cost a call more than
        such an answer). None, as here: stream it."""
        del request
        return None

    async def complete(self, request: ModelRequest) -> AssistantMessage:
        """Run one call to completion and return the assembled message."""
        acc = StreamAccumulator(model=self.spec)
        async for event in self.stream(request):
            acc.add(event)
        return acc.message()

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release network clients; the runtime calls it when the model is dropped."""


class StreamAccumulator:
    """Folds stream events into one :class:`AssistantMessage`."""

    def __init__(self, *, model: str | None = None) -> None:
        self._model = model
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._thinking: dict[int, dict[str, Any]] = {}
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.setdefault(event.index, {"id": None, "name": "", "args": [],
                                                        "extra": None})
            if event.id:
                call["id"] = event.id
            if event.extra:
                call["extra"] = {**(call["extra"] or {}), **event.extra}
            if event.name:
                call["name"] += event.name
            if event.arguments:
                call["args"].append(event.arguments)
        elif isinstance(event, ThinkingDelta):
            block = self._thinking.setdefault(
                event.index, {"text": [], "signature": [], "redacted": None}
            )
            if event.text:
                block["text"].append(event.text)
            if event.signature:
                block["signature"].append(event.signature)
            if event.redacted is not None:
                block["redacted"] = event.redacted
        elif isinstance(event, UsageEvent):
            self._usage = event.usage if self._usage is None else self._usage + event.usage
        elif isinstance(event, Finish):
            self._finish = event.reason

    @property
    def text(self) -> str:
        return "".join(self._text)

    def message(self) -> AssistantMessage:
        calls: list[ToolCall] = []
        for index in sorted(self._calls):
            raw = self._calls[index]
            arg_text = "".join(raw["args"]).strip()
            try:
                args = orjson.loads(arg_text) if arg_text else {}
            except orjson.JSONDecodeError as exc:
                raise ModelError(
                    f"model returned malformed arguments for tool {raw['name']!r}",
                    code="model_bad_output",
                ) from exc
            if not isinstance(args, dict):
                raise ModelError(
                    f"model returned non-object arguments for tool {raw['name']!r}",
                    code="model_bad_output",
                )
            try:  # orjson reads 1024 levels but writes 255: the event log must take them
                orjson.dumps(args)
            except orjson.JSONEncodeError:
                raise ModelError(
                    f"model returned arguments nested too deeply for tool {raw['name']!r}",
                    code="model_bad_output",
                ) from None
            calls.append(
                ToolCall(id=raw["id"] or f"call_{index}", name=raw["name"], arguments=args,
                         extra=raw["extra"])
            )
        finish: FinishReason = self._finish or ("tool_calls" if calls else "stop")
        thinking = [
            Thinking(
                text="".join(block["text"]),
                signature="".join(block["signature"]),
                redacted=block["redacted"],
            )
            for _, block in sorted(self._thinking.items())
        ]
        return AssistantMessage(
            text=self.text,
            tool_calls=calls,
            usage=self._usage,
            finish_reason=finish,
            model=self._model,
            thinking=thinking,
        )
