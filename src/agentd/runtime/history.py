"""A session's conversation, derived from its event log.

The log is the truth; this is a fold over it. The runtime keeps recently used
histories in a small LRU and brings one up to date by reading only the events
after the seq it has seen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from agentd.llm.messages import (
    AssistantMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentd.store.records import EventRecord

__all__ = ["HistoryCache", "SessionHistory"]

AnyMessage = UserMessage | AssistantMessage | ToolResultMessage


class SessionHistory:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.last_seq = 0
        self.messages: list[AnyMessage] = []

    def apply(self, event: EventRecord) -> None:
        if event.seq <= self.last_seq:
            return
        if event.seq != self.last_seq + 1:
            raise ValueError(f"gap in session log: have {self.last_seq}, got {event.seq}")
        self.last_seq = event.seq
        data = event.data
        if event.kind == "message.user":
            self.messages.append(UserMessage(content=data["content"]))
        elif event.kind == "message.assistant":
            usage = data.get("usage")
            self.messages.append(AssistantMessage(
                text=data.get("text", ""),
                tool_calls=[ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"])
                            for c in data.get("tool_calls", [])],
                usage=Usage(**usage) if usage else None,
                finish_reason=data.get("finish_reason", "stop"),
                model=data.get("model"),
            ))
        elif event.kind == "tool.finished":
            self.messages.append(ToolResultMessage(
                call_id=data["call_id"], name=data["name"], content=data["output"],
                is_error=bool(data.get("is_error")),
            ))

    def extend(self, events: Iterable[EventRecord]) -> None:
        for event in events:
            self.apply(event)

    def for_model(self) -> list[AnyMessage]:
        """The messages to send, with every tool call answered.

        A run that was cancelled or failed between a tool call and its result leaves
        a call with no answer, which providers reject; it gets an error result here.
        """
        out: list[AnyMessage] = []
        pending: dict[str, str] = {}
        for message in self.messages:
            if isinstance(message, ToolResultMessage):
                pending.pop(message.call_id, None)
                out.append(message)
                continue
            out.extend(_unanswered(pending))
            pending.clear()
            out.append(message)
            if isinstance(message, AssistantMessage):
                pending = {c.id: c.name for c in message.tool_calls}
        out.extend(_unanswered(pending))
        return out


def _unanswered(pending: dict[str, str]) -> list[ToolResultMessage]:
    return [ToolResultMessage(call_id=cid, name=name, is_error=True,
                              content="no result: the run ended before this call finished")
            for cid, name in pending.items()]


class HistoryCache:
    """A bounded LRU of session histories, each brought up to date from the log."""

    def __init__(self, read_after: Callable[[str, int], Awaitable[list[EventRecord]]],
                 capacity: int = 1024) -> None:
        self._read_after = read_after
        self._capacity = capacity
        self._items: OrderedDict[str, SessionHistory] = OrderedDict()

    async def get(self, session_id: str) -> SessionHistory:
        history = self._items.pop(session_id, None) or SessionHistory(session_id)
        try:
            history.extend(await self._read_after(session_id, history.last_seq))
        except ValueError:
            history = SessionHistory(session_id)
            history.extend(await self._read_after(session_id, 0))
        self._items[session_id] = history
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return history

    def drop(self, session_id: str) -> None:
        self._items.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._items)
