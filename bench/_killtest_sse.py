"""Reading SSE streams for the kill test (``bench/killtest.py``): frames, their names and
ids, and a whole-session replay.

A frame id is the event's seq (``id: 42``) or the seq and a short per-session tag
(``id: 42@3f9a1c2e``); both are accepted, and a session's frames must all carry the
same tag when they carry one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import EventSource

from _killtest_common import AUTH, EVENT_KEYS, SSE_NAMES, Session, session_path


def iter_events(response: httpx.Response) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(frame name, frame id, event) for each committed-event frame (tokens skipped)."""
    for sse in EventSource(response).iter_sse():
        if sse.event == "token":
            continue
        event = json.loads(sse.data)
        if sse.event == "waiting":
            # The Event JSON with what the run waits for repeated at the top level.
            event = {k: event[k] for k in EVENT_KEYS if k in event}
        yield sse.event, sse.id, event


def split_frame_id(frame_id: str | None) -> tuple[str | None, str | None]:
    """``"42@3f9a"`` -> ``("42", "3f9a")``; ``"42"`` -> ``("42", None)``."""
    if frame_id is None:
        return None, None
    seq, sep, tag = frame_id.partition("@")
    return seq, (tag if sep else None)


class FrameTags:
    """The tags seen in each session's frame ids, by every reader (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: dict[Session, str] = {}

    def see(self, session: Session, tag: str) -> str | None:
        """Record ``tag`` for ``session``; the problem when it differs from an earlier one."""
        with self._lock:
            first = self._tags.setdefault(session, tag)
        return None if first == tag else f"frame id tag {tag!r}, earlier frames {first!r}"

    def tagged(self) -> int:
        with self._lock:
            return len(self._tags)


def frame_problem(session: Session, name: str, frame_id: str | None, event: dict[str, Any],
                  tags: FrameTags) -> str | None:
    seq = event.get("seq")
    expected = SSE_NAMES.get(event.get("kind", ""), event.get("kind"))
    if name != expected:
        return f"seq {seq}: frame named {name!r}, expected {expected!r}"
    id_seq, tag = split_frame_id(frame_id)
    if id_seq != str(seq):
        return f"seq {seq}: frame id {frame_id!r}"
    if tag is not None:
        if not tag:
            return f"seq {seq}: frame id {frame_id!r} has an empty tag"
        problem = tags.see(session, tag)
        if problem is not None:
            return f"seq {seq}: {problem}"
    return None


def sse_replay(base: str, session: Session, last_seq: int, timeout_s: float,
               tags: FrameTags) -> tuple[list[dict[str, Any]], list[str]]:
    """Replay a session from seq 0 over SSE until ``last_seq`` (bounded)."""
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    if last_seq == 0:
        return events, problems
    timeout = httpx.Timeout(timeout_s, connect=5.0)
    with httpx.Client(headers=AUTH, timeout=timeout) as http, http.stream(
            "GET", base + session_path(*session) + "/events", params={"after": 0},
            headers={"Accept": "text/event-stream"}) as response:
        if response.status_code != 200:
            return events, [f"HTTP {response.status_code}"]
        deadline = time.monotonic() + timeout_s
        for name, frame_id, event in iter_events(response):
            problem = frame_problem(session, name, frame_id, event, tags)
            if problem is not None:
                problems.append(problem)
            events.append(event)
            if int(event["seq"]) >= last_seq or time.monotonic() > deadline:
                break
    return events, problems
