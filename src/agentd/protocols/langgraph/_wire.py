"""The Agent Protocol's bodies as ``langgraph-sdk`` sends them, and agentd's records in
the shapes it reads back (assistants, threads, runs, LangChain-style messages)."""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.errors import InvalidInput
from agentd.events import MessageAddedData
from agentd.store.records import AgentRecord, EventRecord, RunRecord

__all__ = [
    "STREAM_MODES",
    "AssistantSearch",
    "NamespaceSearch",
    "RunCreate",
    "StateUpdate",
    "StoreGet",
    "StorePut",
    "StoreSearch",
    "ThreadCreate",
    "ThreadSearch",
    "added_messages",
    "assistant",
    "check_new_ids",
    "input_text",
    "iso",
    "message",
    "parse",
    "run_status",
    "run_view",
    "thread_status",
    "unsupported",
    "values_of",
]

#: The stream modes the door serves (LangGraph's others: custom, debug, events,
#: tasks, checkpoints, are refused).
STREAM_MODES = ("values", "messages", "messages-tuple", "updates")
_MAX_LIMIT = 1000


def parse(model: type[BaseModel], data: Any) -> Any:
    """``data`` as ``model``; the first problem as a 422 naming its field."""
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}", field="body." + where) from None


def unsupported(field: str, what: str) -> InvalidInput:
    return InvalidInput(f"{what} is not supported by agentd's Agent Protocol door "
                        "(docs/protocols/langgraph.md)", field=field, code="unsupported")


class _Body(BaseModel):
    # The SDK sends every field it knows (None for unset ones are dropped); fields
    # this door does not serve are checked by name below, the rest ignored.
    model_config = ConfigDict(extra="ignore")


class AssistantSearch(_Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(10, ge=1, le=_MAX_LIMIT)
    offset: int = Field(0, ge=0)


class ThreadCreate(_Body):
    thread_id: str | None = Field(None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] | None = None
    graph_id: str | None = None


class ThreadSearch(_Body):
    metadata: dict[str, Any] | None = None
    ids: list[str] | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(10, ge=1, le=_MAX_LIMIT)
    offset: int = Field(0, ge=0)


class RunCreate(_Body):
    assistant_id: str = Field(min_length=1)
    input: dict[str, Any] | None = None
    command: dict[str, Any] | None = None
    stream_mode: str | list[str] = "values"
    metadata: dict[str, Any] | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] | None = None
    if_not_exists: Literal["create", "reject"] | None = None
    # Refused when given (agentd has no graph nodes, checkpoints of LangGraph's kind,
    # or delayed runs); see :meth:`check`.
    interrupt_before: Any = None
    interrupt_after: Any = None
    checkpoint: Any = None
    checkpoint_id: Any = None
    webhook: Any = None
    after_seconds: Any = None

    def check(self) -> None:
        for name in ("interrupt_before", "interrupt_after", "checkpoint",
                     "checkpoint_id", "webhook", "after_seconds"):
            if getattr(self, name) is not None:
                raise unsupported("body." + name, name)
        if self.multitask_strategy == "rollback":
            raise unsupported("body.multitask_strategy", "multitask_strategy 'rollback'")
        if (self.input is None) == (self.command is None):
            raise InvalidInput("a run needs either input (messages) or a command "
                               "(resume)", field="body.input")

    def modes(self) -> list[str]:
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else self.stream_mode
        for mode in modes:
            if mode not in STREAM_MODES:
                raise unsupported("body.stream_mode", f"stream_mode {mode!r}")
        return modes or ["values"]


class StateUpdate(_Body):
    """``threads.update_state``'s body (``values`` is read by :func:`added_messages`)."""

    values: Any = None
    as_node: str | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_id: str | None = None


class StorePut(_Body):
    namespace: list[str]
    key: str = Field(min_length=1, max_length=200)
    value: dict[str, Any] | None
    index: Any = None
    ttl: Any = None


class StoreGet(_Body):
    namespace: list[str]
    key: str = Field(min_length=1, max_length=200)


class StoreSearch(_Body):
    namespace_prefix: list[str]
    filter: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0)
    query: str | None = None


class NamespaceSearch(_Body):
    prefix: list[str] | None = None
    suffix: list[str] | None = None
    max_depth: int | None = Field(None, ge=1)
    limit: int = Field(100, ge=1, le=_MAX_LIMIT)
    offset: int = Field(0, ge=0)


# -- the input ---------------------------------------------------------------------


def _part_text(part: Any, where: str) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(
            part.get("text"), str):
        return str(part["text"])
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    raise InvalidInput(f"{where}: content part {kind!r} is not supported (text only)",
                       field=where, code="unsupported")


def _message_text(item: Any, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, list) and len(item) == 2:  # ("user", "hello") as LangChain has it
        role, content = item
    elif isinstance(item, dict):
        role = item.get("role", item.get("type"))
        content = item.get("content")
    else:
        raise InvalidInput(f"{where}: a message is a string, an object with role and "
                           "content, or a [role, content] pair", field=where)
    if role not in ("user", "human"):
        raise InvalidInput(f"{where}: only user messages can be sent (got role "
                           f"{role!r:.40}); the thread keeps the agent's own replies",
                           field=where, code="unsupported")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(p, f"{where}.content.{i}") for i, p in enumerate(content))
    raise InvalidInput(f"{where}: content must be a string or a list of text parts",
                       field=where)


def _state_messages(state: dict[str, Any], name: str) -> list[Any]:
    """The ``messages`` of a state object (a run's ``input``, ``update_state``'s
    ``values``: ``name``), at least one; any other key is refused (an agent's state is
    its messages)."""
    unknown = sorted(set(state) - {"messages"})
    if unknown:
        raise InvalidInput(f"{name} holds {', '.join(unknown)}: an agent's state is its "
                           "messages", field=f"body.{name}.{unknown[0]}", code="unsupported")
    messages = state.get("messages")
    if isinstance(messages, (str, dict)):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(f"{name}.messages must hold at least one message",
                           field=f"body.{name}.messages")
    return messages


def input_text(value: dict[str, Any]) -> str:
    """The text a run's ``input`` sends: its ``messages`` (user messages only), one
    after another."""
    messages = _state_messages(value, "input")
    texts = [_message_text(m, f"body.input.messages.{i}") for i, m in enumerate(messages)]
    text = "\n\n".join(texts)
    if not text.strip():
        raise InvalidInput("the message is empty", field="body.input.messages")
    return text


_ROLES = {"user": "user", "human": "user", "HumanMessageChunk": "user",
          "assistant": "assistant", "ai": "assistant", "AIMessageChunk": "assistant"}


def _added(item: Any, where: str) -> MessageAddedData:
    if isinstance(item, str):
        return {"role": "user", "content": item}
    msg_id: Any = None
    if isinstance(item, list) and len(item) == 2:
        role, content = item
    elif isinstance(item, dict):
        role, content = item.get("type") or item.get("role"), item.get("content")
        msg_id = item.get("id")
        if role == "remove":
            raise InvalidInput(f"{where}: removing messages (RemoveMessage) is not kept: "
                               "a thread's log is append-only (agentd's own API restores "
                               "its session to an earlier seq)", field=where,
                               code="unsupported")
        if item.get("tool_calls") or item.get("invalid_tool_calls"):
            raise InvalidInput(f"{where}: a message with tool calls cannot be added (the "
                               "agent's tool calls are its runs' own)", field=where,
                               code="unsupported")
    else:
        raise InvalidInput(f"{where}: a message is a string, an object with type (or "
                           "role) and content, or a [role, content] pair", field=where)
    kept = _ROLES.get(role) if isinstance(role, str) else None
    if kept is None:
        raise InvalidInput(f"{where}: only user and assistant messages can be added (got "
                           f"{role!r:.40}); the agent's instructions are its settings",
                           field=where, code="unsupported")
    if isinstance(content, list):
        content = "".join(_part_text(p, f"{where}.content.{i}")
                          for i, p in enumerate(content))
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput(f"{where}: content must be some text (a string or text parts)",
                           field=where)
    out: MessageAddedData = {"role": "user" if kept == "user" else "assistant",
                             "content": content}
    if msg_id is not None:
        if not isinstance(msg_id, str) or not 0 < len(msg_id) <= 200:
            raise InvalidInput(f"{where}.id: a message id is a string of 1-200 characters",
                               field=f"{where}.id")
        out["id"] = msg_id
    return out


def added_messages(values: Any) -> list[MessageAddedData]:
    """The messages ``update_state``'s ``values`` add to a thread: its ``messages``
    (user and assistant messages, text only), each appended (LangGraph's
    ``add_messages``; see :func:`check_new_ids` for ids)."""
    if isinstance(values, list):
        raise unsupported("body.values", "a list of updates")
    if not isinstance(values, dict):
        raise InvalidInput("values must be an object: {\"messages\": [...]}",
                           field="body.values")
    messages = _state_messages(values, "values")
    out = [_added(m, f"body.values.messages.{i}") for i, m in enumerate(messages)]
    check_new_ids(out, set())
    return out


def check_new_ids(messages: list[MessageAddedData], known_ids: set[str]) -> None:
    """Refuse a message whose id is in ``known_ids`` (the thread's) or earlier in
    ``messages``: LangGraph's ``add_messages`` would replace that message, which is
    not kept (a thread's messages are only appended)."""
    seen = set(known_ids)
    for i, message in enumerate(messages):
        msg_id = message.get("id")
        if msg_id is None:
            continue
        if msg_id in seen:
            raise InvalidInput(f"body.values.messages.{i}: a message with id {msg_id!r:.60} "
                               "is in the thread already: replacing a message is not kept "
                               "(messages are only appended)",
                               field=f"body.values.messages.{i}.id", code="unsupported")
        seen.add(msg_id)


# -- what goes back ----------------------------------------------------------------


def iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat()


def assistant(agent: AgentRecord) -> dict[str, Any]:
    return {"assistant_id": agent.name, "graph_id": agent.name, "name": agent.name,
            "description": None, "config": {}, "context": {}, "metadata": {},
            "version": 1, "created_at": iso(agent.created_at),
            "updated_at": iso(agent.updated_at or agent.created_at)}


def message(kind: Literal["human", "ai"], text: str, msg_id: str) -> dict[str, Any]:
    """A LangChain message as LangGraph serialises one."""
    out: dict[str, Any] = {"type": kind, "content": text, "id": msg_id, "name": None,
                           "additional_kwargs": {}, "response_metadata": {}}
    if kind == "ai":
        out.update(tool_calls=[], invalid_tool_calls=[], usage_metadata=None)
    return out


def values_of(events: list[EventRecord]) -> dict[str, Any]:
    """A thread's state values from its session's log: the user's messages, the
    agent's replies and the messages added by ``update_state`` (a run's tool calls
    stay in agentd's own log)."""
    messages: list[dict[str, Any]] = []
    for event in events:
        if event.kind == "message.user":
            messages.append(message("human", str(event.data.get("content", "")),
                                    f"msg-{event.seq}"))
        elif event.kind == "run.completed" and not event.data.get("silent"):
            messages.append(message("ai", str(event.data.get("output", "")),
                                    f"run-{event.run_id}"))
        elif event.kind == "message.added":
            messages.append(message(
                "human" if event.data.get("role") == "user" else "ai",
                str(event.data.get("content", "")),
                str(event.data.get("id") or f"msg-{event.seq}")))
    return {"messages": messages}


_RUN_STATUS = {"queued": "pending", "running": "running",
               "waiting_approval": "interrupted", "completed": "success",
               "failed": "error", "cancelled": "interrupted",
               "interrupted": "interrupted"}


def run_status(run: RunRecord) -> str:
    return _RUN_STATUS.get(run.status, "running")


def thread_status(last: RunRecord | None) -> str:
    if last is None:
        return "idle"
    return {"queued": "busy", "running": "busy", "waiting_approval": "interrupted",
            "failed": "error"}.get(last.status, "idle")


def run_view(run: RunRecord, thread_id: str, agent: str) -> dict[str, Any]:
    return {"run_id": run.id, "thread_id": thread_id, "assistant_id": agent,
            "status": run_status(run), "created_at": iso(run.created_at),
            "updated_at": iso(run.finished_at or run.started_at or run.created_at),
            "metadata": {}, "multitask_strategy": "enqueue", "kwargs": {}}
