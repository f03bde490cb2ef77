"""A synchronous Python client for the agentd HTTP API.

It speaks HTTP only (httpx, httpx-sse) and imports nothing from the server, the
runtime or the store, so it works against a daemon on this machine or any other::

    from agentd.client import Client

    with Client() as client:  # AGENTD_URL / AGENTD_TOKEN, else http://127.0.0.1:8721
        client.create_agent("demo", model="scripted")
        run = client.send("demo", "user:1", "hello")
        print(run["output"])
        for frame in client.stream("demo", "user:1", "and again"):
            if frame.event == "token":
                print(frame.data["text"], end="", flush=True)

Errors::

    ClientError             anything this client raises on purpose
    ├── APIError            the daemon answered with an error (status, code, message, ...)
    └── ConnectionFailed    the daemon could not be reached at all
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, SSEError

from agentd.security.tokens import read_token

__all__ = [
    "APIError",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "SSEEvent",
]

DEFAULT_URL = "http://127.0.0.1:8721"

#: SSE frame names that end a run (see docs/api.md, "Server-Sent Events").
_TERMINAL_FRAMES = frozenset({"done", "error"})
#: How often `follow` tries to reconnect in a row before giving up.
_MAX_RECONNECTS = 8


class ClientError(Exception):
    """Base class of every error :class:`Client` raises on purpose."""


class APIError(ClientError):
    """The daemon answered with an error.

    Attributes:
        status: HTTP status code (404, 409, 422, ...).
        code: Stable error code from the body (``agent_not_found``, ``agent_paused``, ...).
        message: Human-readable message from the daemon.
        retryable: Whether sending the same request again may succeed.
        details: Extra structured information (``details.errors`` for 422s).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retryable: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"

    def __repr__(self) -> str:
        return (
            f"APIError(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, retryable={self.retryable!r})"
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        """Build an error from a response whose body may or may not be agentd's JSON."""
        status = response.status_code
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            details = err.get("details")
            return cls(
                status,
                str(err.get("code") or f"http_{status}"),
                str(err.get("message") or response.reason_phrase or "error"),
                bool(err.get("retryable", False)),
                details if isinstance(details, dict) else None,
            )
        # Not agentd's error shape: a proxy, or a framework default such as {"detail": ...}.
        text = response.text.strip()
        if isinstance(body, dict) and "detail" in body:
            text = str(body["detail"])
        message = text[:300] if text else (response.reason_phrase or "error")
        return cls(status, f"http_{status}", message, status in (429, 502, 503, 504))


class ConnectionFailed(ClientError):
    """The daemon could not be reached (nothing listening, DNS failure, refused)."""

    def __init__(self, url: str, reason: str = "") -> None:
        self.url = url
        self.reason = reason
        because = f" ({reason})" if reason else ""
        super().__init__(
            f"the agentd daemon at {url} is not reachable{because}; "
            "start it with `agentd start` (or set AGENTD_URL / --url to where it runs)"
        )


@dataclass(frozen=True, kw_only=True)
class SSEEvent:
    """One Server-Sent-Events frame.

    Attributes:
        event: Frame name: ``token``, ``tool_start``, ``tool_end``, ``done``, ``error``,
            or an event kind such as ``message.user`` / ``message.assistant``.
        id: The session sequence number the frame carries (``None`` when absent).
        data: The frame's JSON payload, parsed (the raw string if it is not JSON).
        raw_id: The frame's id exactly as sent, ``"<seq>@<session tag>"``: what to give
            ``follow(last_event_id=...)`` to resume, so that the daemon can tell an id
            from another session (one deleted and created again) apart. Not compared.
    """

    event: str
    id: int | None
    data: Any = field(default=None)
    raw_id: str | None = field(default=None, compare=False)

    @property
    def run_id(self) -> str | None:
        """The run the frame belongs to, when the payload names one."""
        if isinstance(self.data, dict):
            value = self.data.get("run_id")
            return value if isinstance(value, str) else None
        return None


def _is_local(url: str) -> bool:
    host = (httpx.URL(url).host or "").lower()
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _local_home() -> Path:
    raw = os.environ.get("AGENTD_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".agentd"


def _segment(value: str) -> str:
    """Encode one path segment; '/' too, so keys like ``a/b`` stay one segment."""
    return quote(value, safe="")


def _target(checkpoint: str | None, seq: int | None) -> dict[str, Any]:
    """The body naming a restore or fork target; the daemon checks there is one."""
    body: dict[str, Any] = {}
    if checkpoint is not None:
        body["checkpoint"] = checkpoint
    if seq is not None:
        body["seq"] = seq
    return body


def _dropped(exc: ClientError) -> bool:
    """Whether an error is a lost or refused connection (worth reconnecting after)."""
    cause = exc.__cause__
    # SSEError is a TransportError too, but a reply that is no stream stays one.
    return isinstance(cause, httpx.TransportError) and not isinstance(cause, SSEError)


def _seq_of(raw_id: str | None) -> int | None:
    """The seq in a frame id: ids are ``<seq>@<session tag>`` (or a bare ``<seq>``)."""
    try:
        return int(raw_id.partition("@")[0]) if raw_id else None
    except ValueError:
        return None


def _parse_frame(event: str, raw_id: str, raw_data: str) -> SSEEvent:
    data: Any
    try:
        data = json.loads(raw_data) if raw_data else None
    except ValueError:
        data = raw_data
    return SSEEvent(event=event, id=_seq_of(raw_id), data=data, raw_id=raw_id or None)


class Client:
    """Synchronous client for one agentd daemon.

    Args:
        base_url: Daemon URL; defaults to ``$AGENTD_URL`` or ``http://127.0.0.1:8721``.
        token: Bearer token; defaults to ``$AGENTD_TOKEN`` (none when unset).
        timeout: Seconds to wait for a reply. ``send(..., wait=True)`` waits for the
            whole run, so raise it for long runs. Streams wait between frames forever.
        transport: An httpx transport to use instead of the network (tests).

    Raises (from every method):
        APIError: The daemon answered with an error.
        ConnectionFailed: The daemon is not reachable.
        ClientError: Another transport failure (a timeout, a dropped connection).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = base_url or os.environ.get("AGENTD_URL") or DEFAULT_URL
        self.base_url = url.rstrip("/")
        token = token if token is not None else os.environ.get("AGENTD_TOKEN") or None
        if token is None and _is_local(self.base_url):
            # The local daemon's bootstrap token, when this user may read it.
            token = read_token(_local_home())
        headers = {"Accept": "application/json", "User-Agent": "agentd-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    # -- plumbing ----------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> ClientError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
            return ConnectionFailed(self.base_url, str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(
                f"no reply from the agentd daemon at {self.base_url} within "
                f"{self._timeout:g}s ({type(exc).__name__})"
            )
        return ClientError(f"request to the agentd daemon at {self.base_url} failed: {exc!r}")

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if headers:
            kwargs["headers"] = dict(headers)
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.is_error:
            raise APIError.from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(
                f"the daemon at {self.base_url} sent a reply that is not JSON "
                f"(HTTP {response.status_code} {method} {path})"
            ) from exc

    def _frames(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_ms: list[int] | None = None,
    ) -> Generator[SSEEvent, None, None]:
        """Open one SSE request and yield its frames until the server ends it."""
        req_headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        req_headers.update(headers or {})
        kwargs: dict[str, Any] = {
            "headers": req_headers,
            # Frames may be far apart (slow tools, an idle session): wait between
            # them for as long as it takes, but still bound connecting and writing.
            "timeout": httpx.Timeout(self._timeout, read=None),
        }
        if json_body is not None:
            kwargs["json"] = json_body
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise APIError.from_response(response)
                source = EventSource(response)
                try:
                    for sse in source.iter_sse():
                        if sse.retry is not None and retry_ms is not None:
                            retry_ms[:] = [sse.retry]
                        if sse.event == "message" and not sse.data:
                            continue  # a bare id:/retry: block carries no frame
                        yield _parse_frame(sse.event, sse.id, sse.data)
                except SSEError as exc:
                    raise ClientError(
                        f"the daemon at {self.base_url} did not answer {method} {path} "
                        f"with an event stream: {exc}"
                    ) from exc
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    @staticmethod
    def _session_path(agent: str, key: str) -> str:
        return f"/v1/agents/{_segment(agent)}/sessions/{_segment(key)}"

    # -- daemon ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health``: status, version, store, sandbox, agents, active_runs."""
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    # -- agents ------------------------------------------------------------------

    def create_agent(
        self,
        name: str,
        model: str | None = None,
        instructions: str | None = None,
        tools: list[str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create an agent; fields left ``None`` take the daemon's defaults.

        Raises:
            APIError: ``agent_exists`` (409), ``invalid_input`` / ``invalid_model`` (422).
        """
        body: dict[str, Any] = {"name": name}
        for key, value in (
            ("model", model),
            ("instructions", instructions),
            ("tools", tools),
            ("settings", settings),
        ):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self._request("POST", "/v1/agents", json_body=body)
        return result

    def list_agents(self) -> list[dict[str, Any]]:
        """All agents."""
        result = self._request("GET", "/v1/agents")
        agents: list[dict[str, Any]] = result.get("agents", []) if result else []
        return agents

    def get_agent(self, name: str) -> dict[str, Any]:
        """One agent by name (``agent_not_found`` when unknown)."""
        result: dict[str, Any] = self._request("GET", f"/v1/agents/{_segment(name)}")
        return result

    def update_agent(self, name: str, **fields: Any) -> dict[str, Any]:
        """Change an agent: ``model``, ``instructions``, ``tools`` and/or ``settings``."""
        result: dict[str, Any] = self._request(
            "PATCH", f"/v1/agents/{_segment(name)}", json_body=fields
        )
        return result

    def delete_agent(self, name: str) -> None:
        """Delete an agent with its sessions, events and runs."""
        self._request("DELETE", f"/v1/agents/{_segment(name)}")

    def _lifecycle(self, name: str, action: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/v1/agents/{_segment(name)}/{action}")
        return result

    def pause_agent(self, name: str) -> dict[str, Any]:
        """Pause an agent: it refuses new messages (409 ``agent_paused``) until resumed."""
        return self._lifecycle(name, "pause")

    def resume_agent(self, name: str) -> dict[str, Any]:
        """Resume a paused or stopped agent."""
        return self._lifecycle(name, "resume")

    def stop_agent(self, name: str) -> dict[str, Any]:
        """Stop an agent."""
        return self._lifecycle(name, "stop")

    # -- sessions ----------------------------------------------------------------

    def list_sessions(self, agent: str) -> list[dict[str, Any]]:
        """An agent's sessions."""
        result = self._request("GET", f"/v1/agents/{_segment(agent)}/sessions")
        sessions: list[dict[str, Any]] = result.get("sessions", []) if result else []
        return sessions

    def get_session(self, agent: str, key: str) -> dict[str, Any]:
        """One session (``session_not_found`` when unknown)."""
        result: dict[str, Any] = self._request("GET", self._session_path(agent, key))
        return result

    def delete_session(self, agent: str, key: str) -> None:
        """Delete a session and its event log."""
        self._request("DELETE", self._session_path(agent, key))

    # -- checkpoints, restore, fork ------------------------------------------------

    def checkpoint(self, agent: str, key: str, name: str | None = None) -> dict[str, Any]:
        """Checkpoint a session now: a pointer to its current state, logged as a
        ``checkpoint`` event.

        Args:
            agent: Agent name.
            key: Session key.
            name: Optional name, unique in the session (1-64 letters, digits, ``_``,
                ``-``, ``.``); restore and fork accept it in place of the id.

        Returns:
            The Checkpoint: ``id``, ``agent``, ``session``, ``seq``, ``name``, ``kind``,
            ``created_at``.

        Raises:
            APIError: ``checkpoint_exists`` (409) for a name the session already has,
                ``invalid_input`` (422) for a bad name, ``session_not_found`` /
                ``agent_not_found`` (404).
        """
        body = {"name": name} if name is not None else {}
        result: dict[str, Any] = self._request(
            "POST", f"{self._session_path(agent, key)}/checkpoints", json_body=body
        )
        return result

    def checkpoints(self, agent: str, key: str) -> list[dict[str, Any]]:
        """A session's checkpoints, oldest first (kinds ``manual``, ``auto``, ``pause``,
        ``stop``, ``shutdown``)."""
        result = self._request("GET", f"{self._session_path(agent, key)}/checkpoints")
        found: list[dict[str, Any]] = result.get("checkpoints", []) if result else []
        return found

    def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """A checkpoint by id alone (``checkpoint_not_found`` when unknown)."""
        result: dict[str, Any] = self._request(
            "GET", f"/v1/checkpoints/{_segment(checkpoint_id)}"
        )
        return result

    def restore(
        self, agent: str, key: str, *, checkpoint: str | None = None, seq: int | None = None
    ) -> dict[str, Any]:
        """Set a session back to a checkpoint or an event seq; give exactly one.

        Nothing is deleted: the later events stay in the log as its archive, followed
        by a ``session.restored`` event.

        Args:
            agent: Agent name.
            key: Session key.
            checkpoint: A checkpoint's id or name.
            seq: An event seq (``0``: the empty session).

        Returns:
            ``{"session": Session, "event": Event}``, the event being the
            ``session.restored`` one (``data``: ``to_seq``, ``checkpoint``,
            ``archived``).

        Raises:
            APIError: ``checkpoint_not_found`` / ``session_not_found`` (404),
                ``session_busy`` (409) while a run is queued or under way,
                ``invalid_input`` (422) for a seq out of range or for both or neither
                of ``checkpoint`` and ``seq``.
        """
        result: dict[str, Any] = self._request(
            "POST",
            f"{self._session_path(agent, key)}/restore",
            json_body=_target(checkpoint, seq),
        )
        return result

    def restore_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """Restore a checkpoint's session to it, by the checkpoint's id alone; returns
        what :meth:`restore` does."""
        result: dict[str, Any] = self._request(
            "POST", f"/v1/checkpoints/{_segment(checkpoint_id)}/restore"
        )
        return result

    def fork(
        self,
        agent: str,
        key: str,
        *,
        checkpoint: str | None = None,
        seq: int | None = None,
        new_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a new session holding this session's state at a checkpoint or seq
        (give exactly one); this session is left as it is.

        Args:
            agent: Agent name.
            key: The session to fork.
            checkpoint: A checkpoint's id or name.
            seq: An event seq.
            new_key: The new session's key; default: generated (``KEY~...``).

        Returns:
            The new Session: its log holds the copied events, renumbered from 1, then a
            ``session.forked`` event.

        Raises:
            APIError: ``session_exists`` (409) when ``new_key`` is taken,
                ``session_not_found`` / ``checkpoint_not_found`` (404),
                ``invalid_input`` (422).
        """
        body = _target(checkpoint, seq)
        if new_key is not None:
            body["key"] = new_key
        result: dict[str, Any] = self._request(
            "POST", f"{self._session_path(agent, key)}/fork", json_body=body
        )
        return result

    def fork_checkpoint(self, checkpoint_id: str, new_key: str | None = None
                        ) -> dict[str, Any]:
        """Fork a checkpoint's session at it, by the checkpoint's id alone; returns the
        new Session (see :meth:`fork`)."""
        body = {"key": new_key} if new_key is not None else {}
        result: dict[str, Any] = self._request(
            "POST", f"/v1/checkpoints/{_segment(checkpoint_id)}/fork", json_body=body
        )
        return result

    # -- messages and runs -------------------------------------------------------

    def send(
        self,
        agent: str,
        key: str,
        content: str,
        wait: bool = True,
        *,
        idempotency_key: str | None = None,
        mode: str = "enqueue",
        priority: str | None = None,
    ) -> dict[str, Any]:
        """Send a message to a session (created on first use) and return its run.

        Args:
            agent: Agent name.
            key: Session key, any string (``user:1``, ``a/b``).
            content: The message.
            wait: Return the finished run (True) or the queued run at once (False).
            idempotency_key: Sent as ``Idempotency-Key`` so a retry never runs twice.
            mode: What a busy session does with it: ``enqueue``, ``reject`` (APIError
                409 ``session_busy``), ``interrupt`` or ``steer`` (the running run
                takes it in; that run is returned).
            priority: The run's class in the kernel's scheduler: ``interactive``,
                ``background`` or ``batch``. Default: interactive when waiting, else
                the agent's ``settings.priority``, else background.

        Returns:
            The Run object. A run that failed is returned, not raised: check
            ``run["status"]`` and ``run["error"]``.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        result: dict[str, Any] = self._request(
            "POST",
            f"{self._session_path(agent, key)}/messages",
            json_body={"content": content, "stream": False, "wait": wait, "mode": mode,
                       **({"priority": priority} if priority else {})},
            headers=headers,
        )
        return result

    def stream(
        self,
        agent: str,
        key: str,
        content: str,
        *,
        idempotency_key: str | None = None,
    ) -> Generator[SSEEvent, None, None]:
        """Send a message and yield the run's frames as they happen.

        Frames are ``token`` (``data["text"]``), ``tool_start``, ``tool_end``, committed
        events under their kind, and finally ``done`` or ``error``, after which the
        iterator ends. If the connection drops mid-run, it resumes from the last
        frame seen through the session's event stream, so nothing committed is missed.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        run_id: str | None = None
        last_id: int | None = None
        last_raw: str | None = None
        try:
            for frame in self._frames(
                "POST",
                f"{self._session_path(agent, key)}/messages",
                json_body={"content": content, "stream": True},
                headers=headers,
            ):
                run_id = run_id or frame.run_id
                if frame.id is not None:
                    last_id, last_raw = frame.id, frame.raw_id
                yield frame
                if frame.event in _TERMINAL_FRAMES and frame.run_id in (None, run_id):
                    return
            return
        except APIError:
            raise
        except ClientError as exc:
            # Dropped mid-run: the run goes on without us; pick it up from the log.
            if run_id is None or last_id is None or not _dropped(exc):
                raise
        for frame in self.follow(agent, key, after=last_id, last_event_id=last_raw):
            if frame.run_id not in (None, run_id):
                continue
            yield frame
            if frame.event in _TERMINAL_FRAMES:
                return

    def events(
        self, agent: str, key: str, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A page of a session's event log: events with ``seq > after``, oldest first."""
        result = self._request(
            "GET",
            f"{self._session_path(agent, key)}/events",
            params={"after": after, "limit": limit},
        )
        events: list[dict[str, Any]] = result.get("events", []) if result else []
        return events

    def follow(
        self,
        agent: str,
        key: str,
        after: int = 0,
        *,
        reconnect: bool = True,
        last_event_id: str | None = None,
    ) -> Generator[SSEEvent, None, None]:
        """Replay a session's log after ``after`` and then follow it live, forever.

        Stop by leaving the loop (``break``). When the connection drops or the daemon
        restarts it reconnects with ``Last-Event-ID`` set to the id of the last frame
        seen, so every committed event arrives exactly once; ``reconnect=False`` ends
        instead.

        Args:
            agent: Agent name.
            key: Session key.
            after: Replay the events with ``seq > after`` first.
            reconnect: Reconnect after a dropped connection (up to 8 times in a row).
            last_event_id: Resume after this frame id (a frame's ``raw_id``,
                ``"<seq>@<tag>"``) instead of ``after``. The daemon refuses an id from
                another session (APIError 422 ``wrong_session``), for example one that
                was deleted and started again under the same key.
        """
        last_raw = last_event_id or None
        seq = _seq_of(last_raw)
        last = seq if seq is not None else after
        failures = 0
        retry_ms = [1000]
        path = f"{self._session_path(agent, key)}/events"
        while True:
            # The full id of a frame received lets the daemon check it belongs to this
            # session; before any, ``after`` goes as the query parameter only (an
            # ``after`` past the log just waits for the log to reach it).
            headers = {"Last-Event-ID": last_raw} if last_raw else None
            try:
                for frame in self._frames(
                    "GET", path, params={"after": last}, headers=headers, retry_ms=retry_ms
                ):
                    failures = 0
                    if frame.id is not None:
                        last, last_raw = frame.id, frame.raw_id
                    yield frame
            except APIError:
                raise
            except ClientError as exc:
                failures += 1
                if not reconnect or failures > _MAX_RECONNECTS or not _dropped(exc):
                    raise
            else:
                if not reconnect:
                    return
            # Back off a little more after each failure in a row.
            time.sleep(min(retry_ms[0] / 1000 * max(failures, 1), 10.0))

    def get_run(self, run_id: str) -> dict[str, Any]:
        """A run by id (``run_not_found`` when unknown)."""
        result: dict[str, Any] = self._request("GET", f"/v1/runs/{_segment(run_id)}")
        return result

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
            "POST", f"/v1/runs/{_segment(run_id)}/decide", json_body=body)
        return result

    def approvals(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Pending approval requests, oldest first (of one agent, or all)."""
        params = {"agent": agent} if agent is not None else None
        result: dict[str, Any] = self._request("GET", "/v1/approvals", params=params)
        return list(result["approvals"])

    def decide_approval(self, approval_id: str, action: str, *,
                        arguments: dict[str, Any] | None = None,
                        remember: str | None = None, reason: str | None = None,
                        output: str | None = None, by: str | None = None
                        ) -> dict[str, Any]:
        """Decide an approval request; returns the decision as logged.

        Args:
            approval_id: The request (``ap_...``).
            action: ``approve`` or ``deny`` (a policy request); ``retry``, ``skip`` or
                ``fail`` (a call of unknown outcome).
            arguments: With approve: run the call with these arguments instead.
            remember: ``"arguments"`` (these exact arguments) or ``"tool"`` (deny
                only): also make the decision a rule of the agent's policy.
            reason: Why (a denial's reason reaches the model).
            output: With skip: the call's result.
            by: Ignored by the daemon (kept for older callers): the decision records
                the name of the token this client uses.
        """
        body: dict[str, Any] = {"action": action}
        del by  # the daemon records who decided from the token
        for name, value in (("arguments", arguments), ("remember", remember),
                            ("reason", reason), ("output", output)):
            if value is not None:
                body[name] = value
        result: dict[str, Any] = self._request(
            "POST", f"/v1/approvals/{_segment(approval_id)}", json_body=body)
        return dict(result["decision"])

    def set_session_policy(self, agent: str, key: str, policy: dict[str, Any] | None
                           ) -> dict[str, Any]:
        """Set (None: clear) a session's own policy layer; returns the session."""
        path = f"/v1/agents/{_segment(agent)}/sessions/{_segment(key)}/policy"
        result: dict[str, Any] = (self._request("DELETE", path) if policy is None
                                  else self._request("PUT", path, json_body=policy))
        return result

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Cancel a queued or running run; returns the run."""
        result: dict[str, Any] = self._request("POST", f"/v1/runs/{_segment(run_id)}/cancel")
        return result

    # -- usage -------------------------------------------------------------------

    def usage(
        self,
        *,
        agent: str | None = None,
        tenant: str | None = None,
        since: str | None = None,
        until: str | None = None,
        by: str | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Model calls, tokens and cost from the usage ledger (``GET /v1/usage``).

        Args:
            agent: Only this agent's usage, by name (a deleted agent keeps its history;
                an unknown name gives an empty report).
            tenant: Only this tenant's usage.
            since: First UTC day counted, ``YYYY-MM-DD`` (inclusive).
            until: Last UTC day counted, ``YYYY-MM-DD`` (inclusive).
            by: Group by any of ``agent``, ``tenant``, ``model``, ``day``, ``month``
                (a list, or a comma-separated string); none: totals only.

        Returns:
            ``{"usage": [row], "totals": {...}, "since", "until"}``: each row has the
            keys grouped by and ``calls``, ``input_tokens``, ``output_tokens``,
            ``cached_tokens``, ``cost_usd``; ``totals`` has the sums.

        Raises:
            APIError: ``invalid_input`` (422) for a bad date, ``since`` after ``until``
                or an unknown ``by`` value.
        """
        groups = by if by is None or isinstance(by, str) else ",".join(by)
        result: dict[str, Any] = self._request("GET", "/v1/usage", params={
            "agent": agent, "tenant": tenant, "since": since, "until": until, "by": groups})
        return result

    def kernel(self) -> dict[str, Any]:
        """The model-call kernel's state (``GET /v1/kernel``): scheduler lanes (limits,
        in flight, queued per class, waits), provider breakers and call counters."""
        result: dict[str, Any] = self._request("GET", "/v1/kernel")
        return result
