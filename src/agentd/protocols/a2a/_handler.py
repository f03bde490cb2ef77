"""The A2A request handler: the official SDK's JSON-RPC dispatcher calls it, it calls
the Runtime facade.

The SDK's own ``DefaultRequestHandler`` runs an ``AgentExecutor`` in the request's
process and keeps tasks in a ``TaskStore``; here the runtime already is both (a run is
durable, leased, resumed after a crash), so this handler implements the SDK's
``RequestHandler`` interface directly over ``runtime.send``, ``wait``, ``get_run``,
``cancel_run``, ``list_runs``, ``subscribe`` and ``read_events``. Every answer is
rebuilt from the stored run, so ``GetTask`` after a restart answers as before it.

Answers are built as A2A's JSON (:mod:`._tasks`): :meth:`A2AHandler.send_message` and
:meth:`A2AHandler.stream_message` give them as they are to the door's JSON-RPC front
(:mod:`._rpc`), which serves every turn; the ``on_*`` methods give them to the SDK's
dispatcher as its protobuf types.

The agent is the one the URL names (``/a2a/{agent}``); the route checked it exists
before the SDK saw the request. See docs/protocols/a2a.md for what maps to what.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import (
    A2AError,
    ContentTypeNotSupportedError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from agentd.assembly import Runtime
from agentd.doors.http import actor
from agentd.doors.sse import HEARTBEAT_S, is_silent
from agentd.errors import (
    AgentdError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RunNotFound,
    Unauthorized,
    UnsupportedMedia,
)
from agentd.events import TERMINAL_KINDS
from agentd.protocols.a2a._tasks import (
    STATUSES_OF,
    Json,
    artifact_update,
    event_proto,
    message_parts,
    message_text,
    status_update,
    task_json,
    task_proto,
)
from agentd.runtime import SendResult, Token
from agentd.store.records import RunRecord

__all__ = ["A2AHandler", "StreamItem"]

#: What a stream gives: an item of A2A's stream (``{"task": ...}``, ``{"statusUpdate":
#: ...}``, ``{"artifactUpdate": ...}``), or None when nothing more is ready for now:
#: the items so far can go out together (or, after a quiet while, a heartbeat).
StreamItem = Json | None

log = logging.getLogger(__name__)

_IDEMPOTENCY_PREFIX = "a2a:"
_MAX_MESSAGE_ID = 256 - len(_IDEMPOTENCY_PREFIX)
_MAX_PAGE = 100


def a2a_error(exc: AgentdError, *, task: bool = False) -> A2AError:
    """The A2A error a runtime error is answered with (its agentd code in ``data``)."""
    data = {"code": exc.code, **({"details": exc.details} if exc.details else {})}
    if isinstance(exc, NotFound) and task:
        return TaskNotFoundError(exc.message, data=data)
    if isinstance(exc, PayloadTooLarge):
        return InvalidRequestError(exc.message, data=data)
    if isinstance(exc, UnsupportedMedia):
        return ContentTypeNotSupportedError(exc.message, data=data)
    if isinstance(exc, Unauthorized):
        return InvalidRequestError(exc.message, data=data)
    if 400 <= exc.status < 500:
        return InvalidParamsError(exc.message, data=data)
    return InternalError(exc.message, data=data)


class A2AHandler(RequestHandler):
    """One daemon's A2A handler; ``context.state["agent"]`` names the agent."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime

    # -- helpers ---------------------------------------------------------------------

    async def _run(self, agent: str, task_id: str) -> tuple[RunRecord, str]:
        """The run ``task_id`` names and its session key, if it is one of ``agent``'s
        (another agent's run is "not found": a door names only its own agent's)."""
        if not task_id:
            raise InvalidParamsError("the task id is required", data={"field": "id"})
        try:
            run, owner, key = await self._runtime().get_run(task_id)
        except RunNotFound:
            run, owner, key = None, None, ""
        except AgentdError as exc:
            raise a2a_error(exc, task=True) from None
        if run is None or owner != agent:
            # One answer, word for word, for another agent's run (of this token's scope
            # or not) and for none: the door must not tell which ids exist elsewhere.
            # (In the words of A2A's TaskNotFoundError: "Task not found".)
            raise TaskNotFoundError(f"task {task_id!r} not found (agent {agent!r})",
                                    data={"code": "run_not_found"})
        return run, key

    async def _pending(self, run: RunRecord, agent: str) -> dict[str, Any] | None:
        if run.status != "waiting_approval":
            return None
        for request in await self._runtime().approvals.pending(agent):
            if request.get("run_id") == run.id:
                return request
        return None

    async def _task(self, run: RunRecord, key: str, agent: str,
                    history_length: int | None = None) -> Json:
        return task_json(run, key, history_length=history_length,
                         pending=await self._pending(run, agent))

    async def _send(self, params: SendMessageRequest, context: ServerCallContext, *,
                    stream: bool) -> tuple[SendResult | None, RunRecord, str]:
        """Commit the message (or, for a task waiting for a decision, the decision);
        the new (or decided) run and its session key."""
        agent: str = context.state["agent"]
        runtime = self._runtime()
        message: Message = params.message
        if not message.message_id:
            raise InvalidParamsError("message.messageId is required",
                                     data={"field": "message.messageId"})
        # Missing, or a value protobuf does not know (which the dispatcher's parse
        # turns into 0): A2A 1.0 requires a message's role.
        if message.role == Role.ROLE_UNSPECIFIED:
            raise InvalidParamsError("message.role is required: ROLE_USER or ROLE_AGENT",
                                     data={"field": "message.role"})
        if len(message.message_id) > _MAX_MESSAGE_ID:
            raise InvalidParamsError(f"message.messageId is over {_MAX_MESSAGE_ID} "
                                     "characters", data={"field": "message.messageId"})
        text = message_text(message)
        limit = runtime.settings.max_message_bytes
        if len(text.encode()) > limit:
            raise InvalidRequestError(f"the message is over {limit} bytes",
                                      data={"code": "payload_too_large"})
        if message.task_id:
            run, key = await self._run(agent, message.task_id)
            if message.context_id and message.context_id != key:
                raise InvalidParamsError("message.contextId is not the task's context",
                                         data={"field": "message.contextId"})
            return None, await self._answer(run, agent, text, context), key
        key = message.context_id or f"a2a:{secrets.token_hex(12)}"
        # The session mode (what happens when the session has a run already), as on
        # the native API: the message's metadata "mode", enqueue by default.
        # (a protobuf Struct: no .get)
        mode = message.metadata["mode"] if "mode" in message.metadata else "enqueue"  # noqa: SIM401
        if not isinstance(mode, str):
            raise InvalidParamsError("message.metadata.mode must be a string",
                                     data={"field": "message.metadata.mode"})
        try:
            parts = message_parts(message)
            attachments = (await runtime.media.prepare(parts, where="message.parts")
                           if parts is not None else None)
            sent = await runtime.send(agent, key, text,
                                      idempotency_key=_IDEMPOTENCY_PREFIX + message.message_id,
                                      mode=mode, priority="interactive", stream=stream,
                                      origin=context.state.get("origin"),
                                      attachments=attachments)
        except AgentdError as exc:
            raise a2a_error(exc) from None
        return sent, sent.run, key

    async def _answer(self, run: RunRecord, agent: str, text: str,
                      context: ServerCallContext) -> RunRecord:
        """A message to a task that is input-required decides what its run waits for:
        its text is one of the options the task's status names. Only a person decides,
        as on the native API: the request needs a daemon token."""
        if run.status != "waiting_approval":
            if run.terminal:
                raise UnsupportedOperationError(
                    f"task {run.id} is {run.status}: it takes no more input (send a "
                    "message without taskId, with its contextId, to continue)")
            raise UnsupportedOperationError(
                f"task {run.id} is {run.status}, not waiting for input")
        pending = await self._pending(run, agent)
        if pending is None:
            raise UnsupportedOperationError(f"task {run.id} no longer waits for input")
        action = text.strip().lower()
        options = list(pending.get("options") or [])
        if action not in options:
            raise InvalidParamsError(
                f"answer task {run.id} with one of {', '.join(options)}",
                data={"field": "message.parts", "options": options})
        try:
            who = actor(context.state["scope"], "deciding an approval")
            await self._runtime().approvals.decide(pending["approval_id"], action,
                                                   actor=who)
            decided, _, _ = await self._runtime().get_run(run.id)
        except AgentdError as exc:
            raise a2a_error(exc) from None
        return decided

    # -- messages ----------------------------------------------------------------------

    async def send_message(self, params: SendMessageRequest, context: ServerCallContext
                           ) -> Json:
        """SendMessage: the task, once it ended (or waits for a decision)."""
        agent: str = context.state["agent"]
        _, run, key = await self._send(params, context, stream=False)
        if not params.configuration.return_immediately:
            try:
                run = await self._runtime().wait(run.id)
            except AgentdError as exc:
                raise a2a_error(exc) from None
        history = (params.configuration.history_length
                   if params.configuration.HasField("history_length") else None)
        return await self._task(run, key, agent, history)

    async def on_message_send(self, params: SendMessageRequest,
                              context: ServerCallContext) -> Task | Message:
        return task_proto(await self.send_message(params, context))

    async def on_message_send_stream(self, params: SendMessageRequest,
                                     context: ServerCallContext) -> AsyncGenerator[Event]:
        async for item in self.stream_message(params, context):
            if item is not None:  # the SDK's response pings on its own
                yield event_proto(item)

    async def stream_message(self, params: SendMessageRequest, context: ServerCallContext
                             ) -> AsyncGenerator[StreamItem]:
        """SendStreamingMessage: the task, then its progress until it ends or waits."""
        agent: str = context.state["agent"]
        runtime = self._runtime()
        if not params.message.task_id:
            sent, run, key = await self._send(params, context, stream=True)
            assert sent is not None
            if not sent.duplicate:
                sub = runtime.subscribe(sent.session.id)
                try:
                    yield {"task": task_json(run, key)}
                    yield None  # the task goes out at once, its run may wait its turn
                    after = sent.events[0].seq - 1 if sent.events else sent.session.last_seq
                    async for item in self._progress(run, key, agent, sub, after,
                                                     sent.events):
                        yield item
                finally:
                    sub.close()
                return
            # The same message sent again: its task as it is, then what follows.
            sub = runtime.subscribe(run.session_id)
            try:
                after = (await self._session(agent, key)).last_seq
                async for item in self._resume(run.id, agent, sub, after):
                    yield item
            finally:
                sub.close()
            return
        # An answer to a task waiting for input: subscribed before the decision, so
        # nothing the run does once decided is missed.
        run, key = await self._run(agent, params.message.task_id)
        sub = runtime.subscribe(run.session_id)
        try:
            after = (await self._session(agent, key)).last_seq
            await self._send(params, context, stream=True)
            async for item in self._resume(run.id, agent, sub, after, decided=True):
                yield item
        finally:
            sub.close()

    async def _session(self, agent: str, key: str) -> Any:
        try:
            _, session = await self._runtime().get_session(agent, key)
        except AgentdError as exc:
            raise a2a_error(exc) from None
        return session

    async def _resume(self, run_id: str, agent: str, sub: Any, after: int, *,
                      decided: bool = False) -> AsyncIterator[StreamItem]:
        """The task as it is now, then its progress after the session's ``after``
        (``sub``, the session's subscription, opened before ``after`` was read, so
        nothing committed in between is missed). ``decided``: the run waited for a
        decision at ``after`` and was decided since, so what it did next is after
        ``after`` even if it has ended (or waits again) by now: it is followed."""
        run, key = await self._run(agent, run_id)
        yield {"task": await self._task(run, key, agent)}
        yield None  # the task goes out at once
        if not decided and (run.terminal or run.status == "waiting_approval"):
            return
        async for item in self._progress(run, key, agent, sub, after, None):
            yield item

    async def _progress(self, run: RunRecord, key: str, agent: str, sub: Any,
                        after: int, known: Any) -> AsyncIterator[StreamItem]:
        """The run's progress as A2A events until it ends or waits for a decision: its
        text as chunks of the reply artifact, its state changes as status updates."""
        runtime = self._runtime()
        session_id = run.session_id
        # The reply's text as sent so far (None: nothing sent): the artifact is sent in
        # chunks that append; a chunk with append=false starts it over (a step whose
        # text the model took back, and at the end, if what was sent is not the reply
        # as stored: text of earlier steps, or tokens sent before this stream began).
        sent: list[str] | None = None
        try:
            async for item in runtime.follow(session_id, after, known=known, subscription=sub,
                                             heartbeat_s=HEARTBEAT_S):
                if item is None:
                    yield None
                    continue
                if isinstance(item, Token):
                    if item.run_id != run.id:
                        continue
                    if item.reset:
                        sent = None if sent is None else []
                    if not item.text:
                        continue
                    yield artifact_update(run.id, key, item.text, append=bool(sent),
                                          last=False)
                    sent = [*(sent or []), item.text]
                elif item.run_id != run.id:
                    continue
                elif item.kind == "run.started":
                    # Working as of this event (the run as stored may be further on: its
                    # end comes in its own event, after its text).
                    yield status_update(replace(run, status="running"), key)
                elif item.kind == "approval.requested":
                    current, _, _ = await runtime.get_run(run.id)
                    yield status_update(current, key, await self._pending(current, agent))
                    return
                elif item.kind in TERMINAL_KINDS and not is_silent(item):
                    current, _, _ = await runtime.get_run(run.id)
                    if current.status == "completed":
                        output = current.output or ""
                        if sent is not None and "".join(sent) == output:
                            yield artifact_update(run.id, key, "", append=True, last=True)
                        else:
                            yield artifact_update(run.id, key, output, append=False, last=True)
                    yield status_update(current, key)
                    return
                else:
                    continue
                if sub.queue.empty():
                    yield None  # what was yielded goes out together
        except AgentdError as exc:  # the session deleted meanwhile, the store down
            raise a2a_error(exc) from None

    # -- tasks -------------------------------------------------------------------------

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext
                          ) -> Task | None:
        agent: str = context.state["agent"]
        run, key = await self._run(agent, params.id)
        history = params.history_length if params.HasField("history_length") else None
        return task_proto(await self._task(run, key, agent, history))

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext
                            ) -> ListTasksResponse:
        agent: str = context.state["agent"]
        # 0 given is refused, not taken for "unspecified" (A2A 1.0: "the minimum
        # value is 1"; the field is optional, so protobuf tells them apart).
        size = params.page_size if params.HasField("page_size") else 50
        if not 1 <= size <= _MAX_PAGE:
            raise InvalidParamsError(f"pageSize must be 1 to {_MAX_PAGE}",
                                     data={"field": "pageSize"})
        if params.HasField("history_length") and params.history_length < 0:
            raise InvalidParamsError("historyLength must not be negative",
                                     data={"field": "historyLength"})
        statuses = None
        if params.status != TaskState.TASK_STATE_UNSPECIFIED:
            statuses = STATUSES_OF.get(params.status)
            if statuses is None:
                return ListTasksResponse(page_size=size)
        since = (params.status_timestamp_after.ToNanoseconds() / 1e9
                 if params.HasField("status_timestamp_after") else None)
        history = params.history_length if params.HasField("history_length") else None
        try:
            page = await self._runtime().list_runs(
                agent=agent, session=params.context_id or None, statuses=statuses,
                since=since, cursor=params.page_token or None, limit=size, count=True)
        except AgentdError as exc:
            raise a2a_error(exc) from None
        tasks = [task_proto(task_json(run, key, history_length=history,
                                      artifacts=params.include_artifacts))
                 for run, _, key in page.runs]
        # pageSize: the size this page was asked for (A2A 1.0 §3.1.4's example answers
        # pageSize 10 with totalSize 5); totalSize: every match, "before pagination".
        return ListTasksResponse(tasks=tasks, next_page_token=page.next_cursor or "",
                                 page_size=size, total_size=page.total or 0)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext
                             ) -> Task | None:
        agent: str = context.state["agent"]
        run, key = await self._run(agent, params.id)
        if run.terminal:
            raise TaskNotCancelableError(f"task {run.id} is already {run.status}")
        try:
            run, _, _ = await self._runtime().cancel_run(run.id)
        except Conflict:
            run, key = await self._run(agent, params.id)
            if not run.terminal:
                raise TaskNotCancelableError(f"task {run.id} cannot be cancelled now"
                                             ) from None
        except AgentdError as exc:
            raise a2a_error(exc, task=True) from None
        return task_proto(await self._task(run, key, agent))

    async def on_subscribe_to_task(self, params: SubscribeToTaskRequest,
                                   context: ServerCallContext) -> AsyncGenerator[Event]:
        async for item in self.subscribe(params, context):
            if item is not None:
                yield event_proto(item)

    async def subscribe(self, params: SubscribeToTaskRequest, context: ServerCallContext
                        ) -> AsyncGenerator[StreamItem]:
        """SubscribeToTask: the task as it is, then its progress until it ends."""
        agent: str = context.state["agent"]
        run, key = await self._run(agent, params.id)
        if run.terminal:
            raise UnsupportedOperationError(
                f"task {run.id} is {run.status}: there is nothing to subscribe to "
                "(GetTask answers it)")
        sub = self._runtime().subscribe(run.session_id)
        try:
            after = (await self._session(agent, key)).last_seq
            async for item in self._resume(run.id, agent, sub, after):
                yield item
        finally:
            sub.close()

    # -- not offered -------------------------------------------------------------------

    async def on_create_task_push_notification_config(
            self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError(
            "push notifications are not offered: subscribe, or use agentd's webhooks")

    async def on_get_task_push_notification_config(
            self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError("push notifications are not offered")

    async def on_list_task_push_notification_configs(
            self, params: ListTaskPushNotificationConfigsRequest,
            context: ServerCallContext) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError("push notifications are not offered")

    async def on_delete_task_push_notification_config(
            self, params: DeleteTaskPushNotificationConfigRequest,
            context: ServerCallContext) -> None:
        raise PushNotificationNotSupportedError("push notifications are not offered")

    async def on_get_extended_agent_card(self, params: GetExtendedAgentCardRequest,
                                         context: ServerCallContext) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError("this agent has no extended card")
