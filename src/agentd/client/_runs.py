"""Messages and runs: send, stream, read, list, cancel, decide."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from agentd.client._errors import APIError, ClientError, RunFailed
from agentd.client._parts import Part, content_of
from agentd.client._sessions import SessionsAPI
from agentd.client._sse import TERMINAL_FRAMES, SSEEvent, dropped
from agentd.client.base import segment

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["RunsAPI"]

M = TypeVar("M", bound="BaseModel")
#: An output schema as the client takes it: a JSON Schema, or a pydantic model class.
Schema = dict[str, Any] | type["BaseModel"]


def _schema_of(output_schema: Schema | None) -> dict[str, Any] | None:
    """The JSON Schema of a pydantic model class (its ``model_json_schema()``), or
    the schema given."""
    if output_schema is None or isinstance(output_schema, dict):
        return output_schema
    if isinstance(output_schema, type) and hasattr(output_schema, "model_json_schema"):
        schema: dict[str, Any] = output_schema.model_json_schema()
        return schema
    raise TypeError("output_schema must be a JSON Schema (a dict) or a pydantic model class")


class RunsAPI(SessionsAPI):
    """Sending messages and following, listing and settling runs."""

    def send(
        self,
        agent: str,
        key: str,
        content: str | Sequence[Part],
        wait: bool = True,
        *,
        idempotency_key: str | None = None,
        mode: str = "enqueue",
        priority: str | None = None,
        output_schema: Schema | None = None,
    ) -> dict[str, Any]:
        """Send a message to a session (created on first use) and return its run.

        Args:
            agent: Agent name.
            key: Session key, any string (``user:1``, ``a/b``).
            content: The message: text, or its parts in order, text and images and
                files (``["what is this?", image("photo.png")]``: see
                :func:`agentd.client.image` and :func:`agentd.client.file`).
            wait: Return the finished run (True) or the queued run at once (False).
            idempotency_key: Sent as ``Idempotency-Key`` so a retry never runs twice.
            mode: What a busy session does with it: ``enqueue``, ``reject`` (APIError
                409 ``session_busy``), ``interrupt`` or ``steer`` (the running run
                takes it in; that run is returned).
            priority: The run's class in the kernel's scheduler: ``interactive``,
                ``background`` or ``batch``. Default: interactive when waiting, else
                the agent's ``settings.priority``, else background.
            output_schema: Structured output: a JSON Schema (a dict) or a pydantic
                model class the run's final answer must match; the run's ``output``
                is then that JSON value (see :meth:`send_parsed` for the value
                itself).

        Returns:
            The Run object. A run that failed is returned, not raised: check
            ``run["status"]`` and ``run["error"]``.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body: dict[str, Any] = {"content": content_of(content), "stream": False,
                                "wait": wait, "mode": mode}
        if priority:
            body["priority"] = priority
        schema = _schema_of(output_schema)
        if schema is not None:
            body["output_schema"] = schema
        result: dict[str, Any] = self._request(
            "POST", f"{self._session_path(agent, key)}/messages", json_body=body,
            headers=headers)
        return result

    @overload
    def send_parsed(self, agent: str, key: str, content: str, output_schema: type[M], *,
                    idempotency_key: str | None = None, mode: str = "enqueue",
                    priority: str | None = None) -> M: ...

    @overload
    def send_parsed(self, agent: str, key: str, content: str,
                    output_schema: dict[str, Any], *, idempotency_key: str | None = None,
                    mode: str = "enqueue", priority: str | None = None) -> Any: ...

    def send_parsed(self, agent: str, key: str, content: str, output_schema: Schema, *,
                    idempotency_key: str | None = None, mode: str = "enqueue",
                    priority: str | None = None) -> Any:
        """Send a message whose run must answer with a value of ``output_schema``, wait
        for it, and return that value: an instance of the pydantic model class given,
        else the JSON value (dict, list, ...) the daemon validated against the schema.

        The daemon holds the answer to the schema (natively where the model supports
        it), asks the model again with the first schema error a bounded number of
        times, and fails the run with ``output_invalid`` after that.

        Raises:
            RunFailed: The run did not complete (``output_invalid``, ``max_steps``,
                a model error, cancelled, or waiting for a decision); ``.run`` is it.
            APIError: The daemon refused the message (422 for a schema that is not a
                JSON Schema, or recursive without end).
        """
        run = self.send(agent, key, content, idempotency_key=idempotency_key, mode=mode,
                        priority=priority, output_schema=output_schema)
        if run.get("status") != "completed" or run.get("output") is None:
            raise RunFailed(run)
        text: str = run["output"]
        if isinstance(output_schema, type):
            return output_schema.model_validate_json(text)
        return json.loads(text)

    def stream(
        self,
        agent: str,
        key: str,
        content: str | Sequence[Part],
        *,
        idempotency_key: str | None = None,
        mode: str | None = None,
        priority: str | None = None,
        timeout: float | None = None,
        output_schema: Schema | None = None,
    ) -> Generator[SSEEvent, None, None]:
        """Send a message and yield the run's frames as they happen.

        Frames are ``token`` (``data["text"]``; with ``data["reset"]`` true, drop the
        text this step showed so far: the answer starts again), ``waiting`` (what the
        run waits for: ``reason``, ``model``, ``cause``, ``retry_in_s``),
        ``tool_start``, ``tool_end``, committed events under their kind, and finally
        ``done`` or ``error``, after which the iterator ends. If the connection drops
        mid-run, it resumes from the last frame seen through the session's event
        stream, so nothing committed is missed.

        Args:
            agent: Agent name.
            key: Session key.
            content: The message: text, or its parts (see :meth:`send`).
            idempotency_key: Sent as ``Idempotency-Key`` (see :meth:`send`).
            mode: What a busy session does with it (see :meth:`send`); ``steer``
                streams the running run that takes the message in.
            priority: The run's scheduling class (see :meth:`send`).
            timeout: Raise :class:`WaitTimeout` when the run has not ended within this
                many seconds (the run goes on); default: wait as long as it takes.
            output_schema: Structured output (see :meth:`send`): ``token`` frames
                may then carry answers the daemon sends back to the model; the
                ``done`` frame's output is the one that matched.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        deadline = None if timeout is None else time.monotonic() + timeout
        body: dict[str, Any] = {"content": content_of(content), "stream": True}
        if mode is not None:
            body["mode"] = mode
        if priority is not None:
            body["priority"] = priority
        schema = _schema_of(output_schema)
        if schema is not None:
            body["output_schema"] = schema
        run_id: str | None = None
        last_id: int | None = None
        last_raw: str | None = None
        try:
            for frame in self._frames(
                "POST",
                f"{self._session_path(agent, key)}/messages",
                json_body=body,
                headers=headers,
                deadline=deadline,
            ):
                run_id = run_id or frame.run_id
                if frame.id is not None:
                    last_id, last_raw = frame.id, frame.raw_id
                yield frame
                if frame.event in TERMINAL_FRAMES and frame.run_id in (None, run_id):
                    return
            return
        except APIError:
            raise
        except ClientError as exc:
            # Dropped mid-run: the run goes on without us; pick it up from the log.
            if run_id is None or last_id is None or not dropped(exc):
                raise
        for frame in self._follow(agent, key, after=last_id, last_event_id=last_raw,
                                  deadline=deadline):
            if frame.run_id not in (None, run_id):
                continue
            yield frame
            if frame.event in TERMINAL_FRAMES:
                return

    def get_run(self, run_id: str) -> dict[str, Any]:
        """A run by id (``run_not_found`` when unknown)."""
        result: dict[str, Any] = self._request("GET", f"/v1/runs/{segment(run_id)}")
        return result

    def run_trace(self, run_id: str) -> dict[str, Any]:
        """A run's spans, built from its log, as an OTLP/JSON
        ``ExportTraceServiceRequest``."""
        result: dict[str, Any] = self._request("GET", f"/v1/runs/{segment(run_id)}/trace")
        return result

    def list_runs(
        self,
        *,
        agent: str | None = None,
        session: str | None = None,
        status: str | Sequence[str] | None = None,
        since: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of runs, newest first (``GET /v1/runs``).

        Args:
            agent: Only this agent's runs (by name).
            session: Only this session's runs (a key; with ``agent``).
            status: Only runs in this status, or any of these (``queued``,
                ``running``, ``waiting_approval``, ``completed``, ``failed``,
                ``cancelled``, ``interrupted``).
            since: Only runs created at or after this time (ISO 8601, e.g.
                ``2025-01-31`` or ``2025-01-31T12:00:00Z``).
            limit: At most this many runs (1-1000; default 50).
            cursor: The ``next_cursor`` of the page before, for the next page.

        Returns:
            ``{"runs": [Run], "next_cursor": str | None}``; ``next_cursor`` is None on
            the last page.

        Raises:
            APIError: ``invalid_input`` (422) for an unknown status, a bad time or
                cursor, or ``session`` without ``agent``.
        """
        statuses = status if status is None or isinstance(status, str) else ",".join(status)
        result: dict[str, Any] = self._request("GET", "/v1/runs", params={
            "agent": agent, "session": session, "status": statuses, "since": since,
            "limit": limit, "cursor": cursor})
        return result

    def iter_runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every run matching the filters of :meth:`list_runs`, newest first, page by
        page (``limit`` sets the page size)."""
        cursor: str | None = None
        while True:
            page = self.list_runs(**filters, cursor=cursor)
            yield from page.get("runs", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def decide_run(self, run_id: str, action: str, output: str | None = None
                   ) -> dict[str, Any]:
        """Decide about a run waiting on a tool call of unknown outcome.

        Args:
            run_id: The run (status ``waiting_approval``).
            action: ``retry``, ``skip`` (with ``output`` as the call's result) or ``fail``.
            output: The result the model gets when skipping.
        """
        body: dict[str, Any] = {"action": action}
        if output is not None:
            body["output"] = output
        result: dict[str, Any] = self._request(
            "POST", f"/v1/runs/{segment(run_id)}/decide", json_body=body)
        return result

    def subtasks(self, run_id: str) -> list[dict[str, Any]]:
        """The child runs a run started (``subtask_start``, ``agent_call``), in order:
        each ``{"id", "type", "agent", "session", "run_id", "status", "output", ...}``."""
        result: dict[str, Any] = self._request("GET",
                                               f"/v1/runs/{segment(run_id)}/subtasks")
        return list(result["subtasks"])

    def replay_run(self, run_id: str) -> dict[str, Any]:
        """Run a finished run again from its log, in a scratch session, calling no
        model and running no tool, and compare the two logs.

        Returns:
            ``{run_id, session, status, model_calls, tools_executed, matches,
            first_divergence}``; ``first_divergence`` is ``{step, index, expected,
            got}`` where the loop first decided differently, else None.
        """
        result: dict[str, Any] = self._request("POST", f"/v1/runs/{segment(run_id)}/replay")
        return result

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Cancel a queued or running run; returns the run."""
        result: dict[str, Any] = self._request("POST", f"/v1/runs/{segment(run_id)}/cancel")
        return result

