"""Server-Sent-Events frames as the client hands them out, and parsing their fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import SSEError

from agentd.client._errors import ClientError

__all__ = ["SSEEvent", "dropped", "parse_frame", "seq_of"]

#: SSE frame names that end a run (see docs/api.md, "Server-Sent Events").
TERMINAL_FRAMES = frozenset({"done", "error"})


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



def dropped(exc: ClientError) -> bool:
    """Whether an error is a lost or refused connection (worth reconnecting after)."""
    cause = exc.__cause__
    # SSEError is a TransportError too, but a reply that is no stream stays one.
    return isinstance(cause, httpx.TransportError) and not isinstance(cause, SSEError)


def seq_of(raw_id: str | None) -> int | None:
    """The seq in a frame id: ids are ``<seq>@<session tag>`` (or a bare ``<seq>``)."""
    try:
        return int(raw_id.partition("@")[0]) if raw_id else None
    except ValueError:
        return None


def parse_frame(event: str, raw_id: str, raw_data: str) -> SSEEvent:
    data: Any
    try:
        data = json.loads(raw_data) if raw_data else None
    except ValueError:
        data = raw_data
    return SSEEvent(event=event, id=seq_of(raw_id), data=data, raw_id=raw_id or None)

