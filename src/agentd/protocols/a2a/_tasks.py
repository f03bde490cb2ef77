"""A run as an A2A task, and an A2A message as the text of a native one.

A task is a run (its id is the run's id), a context is a session (the context id is the
session's key). The task is rebuilt from the run as stored every time it is asked for,
so nothing about it lives in memory: a restart forgets nothing a client relies on.

Tasks and their updates are built here as A2A's JSON (the ProtoJSON the SDK's own
dispatcher prints: camelCase names, enum names, RFC 3339 timestamps, fields at their
default value left out), which the door's JSON-RPC front sends as it is; the SDK's
dispatcher gets the same value as its protobuf type (:func:`task_proto`,
:func:`event_proto`), and prints it back to the same JSON (tests/protocols/
test_a2a_tasks.py checks that every shape here is that fixed point).
"""

from __future__ import annotations

from typing import Any

import orjson
from a2a.server.events.event_queue import Event
from a2a.types.a2a_pb2 import Message, StreamResponse, Task, TaskState
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import (  # type: ignore[import-untyped]
    MessageToDict,
    ParseDict,
)
from google.protobuf.struct_pb2 import Struct  # type: ignore[import-untyped]
from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]

from agentd.media import IMAGE_TYPES, RawPart
from agentd.store.records import RunRecord

__all__ = ["STATE_OF", "STATUSES_OF", "artifact_update", "event_proto", "message_parts",
           "message_text", "reply_id", "status_update", "task_json", "task_proto"]

#: A task's JSON: a dict as ProtoJSON has it.
Json = dict[str, Any]

STATE_OF: dict[str, TaskState] = {
    "queued": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "waiting_approval": TaskState.TASK_STATE_INPUT_REQUIRED,
    "completed": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "cancelled": TaskState.TASK_STATE_CANCELED,
    # A run interrupted by a newer message of its session (mode "interrupt").
    "interrupted": TaskState.TASK_STATE_CANCELED,
}
#: The run statuses a task state filter of tasks/list stands for.
STATUSES_OF: dict[TaskState, list[str]] = {}
for _run_status, _state in STATE_OF.items():
    STATUSES_OF.setdefault(_state, []).append(_run_status)
_STATE_NAME = {status: TaskState.Name(state) for status, state in STATE_OF.items()}
_WORKING = TaskState.Name(TaskState.TASK_STATE_WORKING)


def reply_id(run_id: str) -> str:
    """The id of the artifact that holds a task's reply."""
    return f"{run_id}-reply"


def message_text(message: Message) -> str:
    """The text an A2A message gives the agent: its text parts, and its data parts as
    JSON, in order (a file part, raw bytes or a URL, is named in brackets: see
    :func:`message_parts`)."""
    texts: list[str] = []
    for index, part in enumerate(message.parts):
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            texts.append(orjson.dumps(MessageToDict(part.data)).decode())
        elif kind in ("raw", "url"):
            texts.append(f"[file {part.filename}]" if part.filename else "[file]")
        else:
            raise InvalidParamsError(f"message.parts[{index}] has no content",
                                     data={"field": f"message.parts[{index}]"})
    text = "\n".join(texts)
    if not text.strip():
        raise InvalidParamsError("the message has no text",
                                 data={"field": "message.parts"})
    return text


def message_parts(message: Message) -> list[RawPart] | None:
    """An A2A message's parts, when it has file parts (None: text only): a file part's
    bytes (``raw``) or URL (``url``: fetched by the daemon under the egress rules), with
    its ``mediaType`` and ``filename``; an image type is an image part."""
    if not any(p.WhichOneof("content") in ("raw", "url") for p in message.parts):
        return None
    out: list[RawPart] = []
    for index, part in enumerate(message.parts):
        kind = part.WhichOneof("content")
        if kind == "text":
            out.append(RawPart(kind="text", text=part.text))
        elif kind == "data":
            out.append(RawPart(kind="text", text=orjson.dumps(
                MessageToDict(part.data)).decode()))
        else:
            image = part.media_type.split(";")[0].strip().lower() in IMAGE_TYPES
            out.append(RawPart(kind="image" if image else "file",
                               data=part.raw if kind == "raw" else None,
                               url=part.url if kind == "url" else None,
                               media_type=part.media_type or None,
                               name=part.filename or None,
                               where=f"message.parts[{index}]"))
    return out


# -- ProtoJSON ---------------------------------------------------------------------


def _timestamp(at: float) -> str:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return str(stamp.ToJsonString())


def _struct(values: dict[str, Any]) -> Json:
    """``values`` as a ``google.protobuf.Struct`` carries them (its numbers are
    doubles: a tool call's arguments read back as the SDK would send them)."""
    struct = Struct()
    struct.update(values)
    printed: Json = MessageToDict(struct)
    return printed


def _message(run: RunRecord, key: str, text: str, suffix: str, *,
             role: str = "ROLE_AGENT", metadata: dict[str, Any] | None = None) -> Json:
    message: Json = {"messageId": f"{run.id}-{suffix}", "contextId": key,
                     "taskId": run.id, "role": role, "parts": [{"text": text}]}
    if metadata:
        message["metadata"] = _struct(metadata)
    return message


def _status(run: RunRecord, key: str, pending: dict[str, Any] | None) -> Json:
    status: Json = {"state": _STATE_NAME.get(run.status, _WORKING)}
    if run.status == "waiting_approval":
        if pending is not None:
            options = list(pending.get("options") or [])
            text = (f"the agent waits for a decision on the tool call {pending['name']} "
                    f"({pending.get('reason') or 'policy'}): answer this task with a "
                    f"message whose text is one of {', '.join(options)}")
            status["message"] = _message(run, key, text, "input", metadata={
                "approval_id": pending["approval_id"], "tool": pending["name"],
                "arguments": pending.get("arguments") or {}, "options": options})
        else:
            status["message"] = _message(
                run, key, "the agent waits for a decision on a tool call", "input")
    elif run.status in ("failed", "cancelled", "interrupted"):
        error = run.error or {}
        text = str(error.get("message") or f"the run was {run.status}")
        status["message"] = _message(run, key, text, "status", metadata={
            "code": str(error.get("code") or f"run_{run.status}")})
    at = run.finished_at or run.started_at or run.created_at
    if at:
        status["timestamp"] = _timestamp(at)
    return status


def _reply(run_id: str, text: str) -> Json:
    return {"artifactId": reply_id(run_id), "name": "reply", "parts": [{"text": text}]}


def task_json(run: RunRecord, key: str, *, history_length: int | None = None,
              pending: dict[str, Any] | None = None, artifacts: bool = True) -> Json:
    """The task that ``run`` (of the session ``key``) is now. ``pending``: the approval
    it waits for, if it does; ``history_length`` None: the whole history."""
    task: Json = {"id": run.id, "contextId": key, "status": _status(run, key, pending)}
    if run.status == "completed" and artifacts:
        task["artifacts"] = [_reply(run.id, run.output or "")]
    history = [_message(run, key, run.input, "in", role="ROLE_USER")]
    if run.status == "completed":
        history.append(_message(run, key, run.output or "", "out"))
    if history_length is not None:
        if history_length < 0:
            raise InvalidParamsError("historyLength must be 0 or more",
                                     data={"field": "historyLength"})
        history = history[len(history) - history_length:] if history_length else []
    if history:
        task["history"] = history
    return task


def status_update(run: RunRecord, key: str, pending: dict[str, Any] | None = None
                  ) -> Json:
    """A stream's status update (``StreamResponse.statusUpdate``)."""
    return {"statusUpdate": {"taskId": run.id, "contextId": key,
                             "status": _status(run, key, pending)}}


def artifact_update(run_id: str, key: str, text: str, *, append: bool, last: bool
                    ) -> Json:
    """A stream's chunk of the reply artifact (``StreamResponse.artifactUpdate``)."""
    update: Json = {"taskId": run_id, "contextId": key, "artifact": _reply(run_id, text)}
    if append:
        update["append"] = True
    if last:
        update["lastChunk"] = True
    return {"artifactUpdate": update}


# -- the SDK's types ---------------------------------------------------------------


def task_proto(task: Json) -> Task:
    """A task's JSON as the SDK's ``Task`` (for the methods its dispatcher serves)."""
    parsed: Task = ParseDict(task, Task())
    return parsed


def event_proto(item: Json) -> Event:
    """A stream item (``{"task"|"statusUpdate"|"artifactUpdate": ...}``) as the event
    the SDK's dispatcher streams."""
    response: StreamResponse = ParseDict(item, StreamResponse())
    event: Event = getattr(response, str(response.WhichOneof("payload")))
    return event
