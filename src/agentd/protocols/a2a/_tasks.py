"""A run as an A2A task, and an A2A message as the text of a native one.

A task is a run (its id is the run's id), a context is a session (the context id is the
session's key). The task is rebuilt from the run as stored every time it is asked for,
so nothing about it lives in memory: a restart forgets nothing a client relies on.
"""

from __future__ import annotations

from typing import Any

import orjson
from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import ContentTypeNotSupportedError, InvalidParamsError
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]

from agentd.store.records import RunRecord

__all__ = ["STATE_OF", "STATUSES_OF", "artifact_event", "message_text", "reply_id",
           "status_event", "task_of"]

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


def reply_id(run: RunRecord) -> str:
    """The id of the artifact that holds a task's reply."""
    return f"{run.id}-reply"


def message_text(message: Message) -> str:
    """The text an A2A message gives the agent: its text parts, and its data parts as
    JSON, in order; a file part (raw bytes or a URL) is refused, the agent reads text."""
    texts: list[str] = []
    for index, part in enumerate(message.parts):
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            texts.append(orjson.dumps(MessageToDict(part.data)).decode())
        elif kind in ("raw", "url"):
            raise ContentTypeNotSupportedError(
                f"message.parts[{index}] is a file ({kind}); this agent takes text and "
                "data parts", data={"field": f"message.parts[{index}]"})
        else:
            raise InvalidParamsError(f"message.parts[{index}] has no content",
                                     data={"field": f"message.parts[{index}]"})
    text = "\n".join(texts)
    if not text.strip():
        raise InvalidParamsError("the message has no text",
                                 data={"field": "message.parts"})
    return text


def _agent_message(run: RunRecord, key: str, text: str, suffix: str,
                   metadata: dict[str, Any] | None = None) -> Message:
    message = Message(message_id=f"{run.id}-{suffix}", context_id=key, task_id=run.id,
                      role=Role.ROLE_AGENT, parts=[Part(text=text)])
    if metadata:
        message.metadata.update(metadata)
    return message


def _status(run: RunRecord, key: str, pending: dict[str, Any] | None) -> TaskStatus:
    status = TaskStatus(state=STATE_OF.get(run.status, TaskState.TASK_STATE_WORKING))
    at = run.finished_at or run.started_at or run.created_at
    if at:
        status.timestamp.FromNanoseconds(int(at * 1e9))
    if run.status == "waiting_approval":
        if pending is not None:
            options = list(pending.get("options") or [])
            text = (f"the agent waits for a decision on the tool call {pending['name']} "
                    f"({pending.get('reason') or 'policy'}): answer this task with a "
                    f"message whose text is one of {', '.join(options)}")
            status.message.CopyFrom(_agent_message(run, key, text, "input", {
                "approval_id": pending["approval_id"], "tool": pending["name"],
                "arguments": pending.get("arguments") or {}, "options": options}))
        else:
            status.message.CopyFrom(_agent_message(
                run, key, "the agent waits for a decision on a tool call", "input"))
    elif run.status in ("failed", "cancelled", "interrupted"):
        error = run.error or {}
        text = str(error.get("message") or f"the run was {run.status}")
        status.message.CopyFrom(_agent_message(run, key, text, "status", {
            "code": str(error.get("code") or f"run_{run.status}")}))
    return status


def task_of(run: RunRecord, key: str, *, history_length: int | None = None,
            pending: dict[str, Any] | None = None, artifacts: bool = True) -> Task:
    """The task that ``run`` (of the session ``key``) is now. ``pending``: the approval
    it waits for, if it does; ``history_length`` None: the whole history."""
    task = Task(id=run.id, context_id=key, status=_status(run, key, pending))
    if run.status == "completed" and artifacts:
        task.artifacts.append(Artifact(artifact_id=reply_id(run), name="reply",
                                       parts=[Part(text=run.output or "")]))
    history = [Message(message_id=f"{run.id}-in", context_id=key, task_id=run.id,
                       role=Role.ROLE_USER, parts=[Part(text=run.input)])]
    if run.status == "completed":
        history.append(_agent_message(run, key, run.output or "", "out"))
    if history_length is not None:
        if history_length < 0:
            raise InvalidParamsError("historyLength must be 0 or more",
                                     data={"field": "historyLength"})
        history = history[len(history) - history_length:] if history_length else []
    task.history.extend(history)
    return task


def status_event(run: RunRecord, key: str, pending: dict[str, Any] | None = None
                 ) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=run.id, context_id=key,
                                 status=_status(run, key, pending))


def artifact_event(run: RunRecord, key: str, text: str, *, append: bool,
                   last: bool) -> TaskArtifactUpdateEvent:
    return TaskArtifactUpdateEvent(
        task_id=run.id, context_id=key, append=append, last_chunk=last,
        artifact=Artifact(artifact_id=reply_id(run), name="reply", parts=[Part(text=text)]))
