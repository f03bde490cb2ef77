"""An agent's sessions: list, read, delete, follow; checkpoints, restore, fork and
compaction."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

import httpx

from agentd.client._errors import APIError, ClientError
from agentd.client._sse import SSEEvent, dropped, seq_of
from agentd.client.base import BaseClient, segment

__all__ = ["SessionsAPI"]

#: How often `follow` tries to reconnect in a row before giving up.
_MAX_RECONNECTS = 8


def target(checkpoint: str | None, seq: int | None) -> dict[str, Any]:
    """The body naming a restore or fork target; the daemon checks there is one."""
    body: dict[str, Any] = {}
    if checkpoint is not None:
        body["checkpoint"] = checkpoint
    if seq is not None:
        body["seq"] = seq
    return body


class SessionsAPI(BaseClient):
    """Sessions, their event logs, checkpoints, restore and fork."""

    def list_sessions(self, agent: str) -> list[dict[str, Any]]:
        """Every session of an agent, most recent activity first (one response however
        many there are: :meth:`sessions_page` pages them)."""
        result = self._request("GET", f"/v1/agents/{segment(agent)}/sessions")
        sessions: list[dict[str, Any]] = result.get("sessions", []) if result else []
        return sessions

    def sessions_page(self, agent: str, *, limit: int = 100, after: str | None = None,
                      q: str | None = None) -> dict[str, Any]:
        """A page of an agent's sessions, most recent activity first
        (``GET /v1/agents/{name}/sessions?limit=...``): ``{"sessions", "next_after"}``;
        give ``next_after`` as ``after`` for the next page (None on the last).

        Args:
            agent: Agent name.
            limit: At most this many sessions (1-1000).
            after: ``next_after`` of the page before, as given.
            q: Only sessions whose keys contain this (any case).
        """
        result: dict[str, Any] = self._request(
            "GET", f"/v1/agents/{segment(agent)}/sessions",
            params={"limit": limit, "after": after, "q": q})
        return result

    def get_session(self, agent: str, key: str) -> dict[str, Any]:
        """One session (``session_not_found`` when unknown)."""
        result: dict[str, Any] = self._request("GET", self._session_path(agent, key))
        return result

    def session_trace(self, agent: str, key: str) -> dict[str, Any]:
        """The spans of a session's runs, built from its log, as OTLP/JSON."""
        result: dict[str, Any] = self._request("GET",
                                               self._session_path(agent, key) + "/trace")
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
            "GET", f"/v1/checkpoints/{segment(checkpoint_id)}"
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
            json_body=target(checkpoint, seq),
        )
        return result

    def restore_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """Restore a checkpoint's session to it, by the checkpoint's id alone; returns
        what :meth:`restore` does."""
        result: dict[str, Any] = self._request(
            "POST", f"/v1/checkpoints/{segment(checkpoint_id)}/restore"
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
        body = target(checkpoint, seq)
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
            "POST", f"/v1/checkpoints/{segment(checkpoint_id)}/fork", json_body=body
        )
        return result

    # -- compaction -------------------------------------------------------------------

    def compact(
        self,
        agent: str,
        key: str,
        *,
        strategy: str | None = None,
        keep_turns: int | None = None,
    ) -> dict[str, Any]:
        """Compact a session's older turns now: logged as one ``session.compacted``
        event; the log keeps the originals (a restore to before it brings them back).

        Args:
            agent: Agent name.
            key: Session key.
            strategy: ``summarize`` (a summary replaces the older turns) or
                ``clear_tool_results`` (their tool results become a placeholder);
                default: the agent's ``settings.memory.compaction.strategy``.
            keep_turns: The latest turns kept verbatim (1-100); default: the agent's.

        Returns:
            ``seq`` (the event's), ``from_seq``, ``to_seq``, ``strategy``, ``summary``,
            ``messages``, ``model``, ``usage``, ``estimated_tokens_before``,
            ``estimated_tokens_after``.

        Raises:
            APIError: ``nothing_to_compact`` (409) when no turn older than the latest
                ``keep_turns`` is left, ``session_changed`` (409, retryable) when the
                session was restored or compacted meanwhile, a model error (502, or
                503 when the model is unavailable for now) when the summary could not
                be written, ``session_not_found`` / ``agent_not_found`` (404),
                ``invalid_input`` (422). Each leaves the session as it was.
        """
        body: dict[str, Any] = {}
        if strategy is not None:
            body["strategy"] = strategy
        if keep_turns is not None:
            body["keep_turns"] = keep_turns
        result: dict[str, Any] = self._request(
            "POST", f"{self._session_path(agent, key)}/compact", json_body=body
        )
        return result

    def context(self, agent: str, key: str) -> dict[str, Any]:
        """The conversation as the model sees it now (compactions applied): ``summary``,
        ``summary_range``, ``messages``, ``last_seq``, ``estimated_tokens``."""
        result: dict[str, Any] = self._request(
            "GET", f"{self._session_path(agent, key)}/context"
        )
        return result

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

    def blob(self, agent: str, key: str, sha256: str) -> tuple[str, bytes]:
        """An image or file the session refers to (a part's ``blob``): its media type
        and bytes."""
        try:
            response = self._http.get(f"{self._session_path(agent, key)}/blobs/{sha256}")
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.is_error:
            raise APIError.from_response(response)
        media_type = response.headers.get("content-type", "application/octet-stream")
        return media_type, response.content

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
        return self._follow(agent, key, after, reconnect=reconnect,
                            last_event_id=last_event_id)

    def _follow(
        self,
        agent: str,
        key: str,
        after: int = 0,
        *,
        reconnect: bool = True,
        last_event_id: str | None = None,
        deadline: float | None = None,
    ) -> Generator[SSEEvent, None, None]:
        last_raw = last_event_id or None
        seq = seq_of(last_raw)
        last = seq if seq is not None else after
        path = f"{self._session_path(agent, key)}/events"

        def connect(retry_ms: list[int]) -> Iterable[SSEEvent]:
            # The full id of a frame received lets the daemon check it belongs to this
            # session; before any, ``after`` goes as the query parameter only (an
            # ``after`` past the log just waits for the log to reach it).
            headers = {"Last-Event-ID": last_raw} if last_raw else None
            return self._frames("GET", path, params={"after": last}, headers=headers,
                                retry_ms=retry_ms, deadline=deadline)

        for frame in self._reconnecting(connect, reconnect=reconnect):
            if frame.id is not None:
                last, last_raw = frame.id, frame.raw_id
            yield frame

    def _reconnecting(self, connect: Callable[[list[int]], Iterable[SSEEvent]], *,
                      reconnect: bool) -> Generator[SSEEvent, None, None]:
        """The frames of ``connect(retry_ms)``, connecting again after a dropped
        connection (up to ``_MAX_RECONNECTS`` in a row, backing off a little more after
        each failure in a row); an API error is raised at once."""
        failures = 0
        retry_ms = [1000]
        while True:
            try:
                for frame in connect(retry_ms):
                    failures = 0
                    yield frame
            except APIError:
                raise
            except ClientError as exc:
                failures += 1
                if not reconnect or failures > _MAX_RECONNECTS or not dropped(exc):
                    raise
            else:
                if not reconnect:
                    return
            time.sleep(min(retry_ms[0] / 1000 * max(failures, 1), 10.0))

    def feed(self, agent: str | None = None, *, reconnect: bool = True
             ) -> Generator[SSEEvent, None, None]:
        """Every session's events as they are committed (``GET /v1/events``), forever.

        Each frame is named after the event's kind; its ``data`` is the event with
        ``agent`` and ``session`` (the key) added. The feed is live only: after a
        reconnect it carries on with new events (the ones committed in between are in
        each session's log, see :meth:`events`). A ``lagged`` frame
        (``data["dropped"]``) says this reader was too slow and missed some.

        Args:
            agent: Only this agent's events (APIError 404 when there is no such agent).
            reconnect: Reconnect after a dropped connection (up to 8 times in a row).
        """
        return self._reconnecting(
            lambda retry_ms: self._frames("GET", "/v1/events", params={"agent": agent},
                                          retry_ms=retry_ms),
            reconnect=reconnect)
