"""What an adapter is: the interface users implement, its stream events, its session."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["AdapterBase", "AgentAdapter", "Session", "StreamEvent", "current_session"]


@dataclass(kw_only=True, slots=True)
class StreamEvent:
    """One event of an adapter's streamed reply (termo-agent's shape).

    - ``token``: a piece of the reply's text (``content``);
    - ``tool_start``: the framework started a tool (``name``, ``input``);
    - ``tool_end``: it finished (``name``, ``output``, ``is_error``);
    - ``done``: the reply is complete (``content``: the whole text, or empty to use
      the tokens; ``usage``: ``{"prompt_tokens", "completion_tokens"}`` or
      ``{"input_tokens", "output_tokens"}``, counted in the agent's budgets);
    - ``error``: the turn failed (``content``: why); the run fails with it;
    - ``progress`` / ``thinking``: informational (termo-agent relays them); agentd
      logs nothing for them.

    ``metadata`` is termo-agent's: it flattens it into the event's SSE frame (so an
    adapter written for agentd runs under termo-agent's server too).
    """

    type: Literal["token", "tool_start", "tool_end", "done", "error", "progress",
                  "thinking"]
    content: str = ""
    name: str = ""
    input: Any = None
    output: Any = None
    is_error: bool = False
    usage: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


@dataclass(kw_only=True, slots=True)
class Session:
    """The session a turn belongs to, as agentd's log holds it.

    Read it inside an adapter with :func:`current_session` (agentd sets it around each
    call): ``history`` is the session's earlier turns, from the durable log, so an
    adapter that keeps nothing of its own still sees them after a restart.
    """

    key: str
    agent: str = ""
    run_id: str = ""
    #: Earlier turns, oldest first: ``{"role": "user" | "assistant", "content": str}``.
    #: The list is the turn's own; its dicts are shared with later turns (converted
    #: once per session), so read them, do not change them in place.
    history: list[dict[str, str]] = field(default_factory=list)


_CURRENT: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "agentd_adapter_session", default=None)


def current_session() -> Session | None:
    """The session of the turn under way (None outside an agentd turn)."""
    return _CURRENT.get()


@runtime_checkable
class AgentAdapter(Protocol):
    """An agent whose loop lives in another framework (termo-agent's five methods).

    agentd calls ``initialize`` once before the first turn of an agent, then
    ``send_message_stream`` for each turn (``send_message`` when the adapter has no
    streaming method: see :class:`AdapterBase`), and ``shutdown`` when the agent
    sleeps or the daemon stops. ``get_history`` is the adapter's own view of a session
    (agentd's log is the durable one). The methods run on the daemon's event loop: an
    adapter that blocks must move its work to a thread (or use
    :func:`agentd.adapters.function` with a plain function, which does).

    Optional hooks, read when present (termo-agent's): ``get_config`` /
    ``update_config``, ``get_memory`` / ``update_memory``, ``get_heartbeat`` /
    ``update_heartbeat``, ``list_tools``, ``list_sessions``, ``health``, ``restart``,
    ``extra_routes``, ``public_route_prefixes``, ``is_public_request``; and
    ``idempotent`` (a bool attribute): a turn cut off by a crash may be sent again.
    """

    async def initialize(self, config_path: str | None = None) -> None: ...

    async def send_message(self, message: str, session_key: str) -> str: ...

    def send_message_stream(self, message: str, session_key: str
                            ) -> AsyncIterator[StreamEvent]: ...

    async def get_history(self, session_key: str) -> list[dict[str, Any]]: ...

    async def shutdown(self) -> None: ...


class AdapterBase:
    """Defaults for the optional parts of :class:`AgentAdapter`: subclass it and
    implement ``send_message`` (and ``send_message_stream`` to stream)."""

    #: A turn interrupted by a crash may be sent again (its outcome is unknown).
    idempotent: bool = False

    async def initialize(self, config_path: str | None = None) -> None:
        return None

    async def send_message(self, message: str, session_key: str) -> str:
        raise NotImplementedError("an adapter implements send_message")

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        """The reply of :meth:`send_message` as one ``done`` event."""
        text = await self.send_message(message, session_key)
        if not isinstance(text, str):
            raise TypeError(f"send_message returned {type(text).__name__}, not str")
        yield StreamEvent(type="done", content=text)

    async def get_history(self, session_key: str) -> list[dict[str, Any]]:
        session = current_session()
        return list(session.history) if session is not None and (
            session.key == session_key) else []

    async def shutdown(self) -> None:
        return None

    async def get_config(self) -> dict[str, Any]:
        return {}

    async def update_config(self, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.get_config()

    async def list_tools(self) -> list[dict[str, Any]]:
        return []

    async def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def extra_routes(self) -> list[tuple[str, str, Any]]:
        return []

    def public_route_prefixes(self) -> list[str]:
        return []

    def is_public_request(self, path: str) -> bool:
        return False
