"""The WebSocket control channel of a session (see :mod:`.channel` and
docs/protocols/websocket.md)."""

from __future__ import annotations

from agentd.protocols.ws.channel import router

__all__ = ["router"]
