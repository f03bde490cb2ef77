"""An adapter from one reply function: ``reply(message, session) -> str``.

The function may be:

- ``async def reply(message: str, session: Session) -> str``;
- ``async def reply(message, session)`` that yields text pieces (or
  :class:`~agentd.adapters.StreamEvent` s): streamed to subscribers as they come;
- a plain ``def reply(message, session) -> str``: run in a worker thread, so a
  blocking call never stalls the daemon's event loop (a thread cannot be stopped: one
  that overruns the timeout fails its run and finishes in the background).

``session`` is the turn's :class:`~agentd.adapters.Session`: its key and its earlier
turns from agentd's durable log.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from agentd.adapters._protocol import AdapterBase, Session, StreamEvent, current_session

__all__ = ["FunctionAdapter", "function"]

#: Turns kept per session for :meth:`FunctionAdapter.get_history` (in memory).
_KEPT = 200


class FunctionAdapter(AdapterBase):
    """An :class:`~agentd.adapters.AgentAdapter` around a reply function."""

    def __init__(self, reply: Callable[..., Any], *, idempotent: bool = False) -> None:
        if not callable(reply):
            raise TypeError(f"{reply!r} is not callable")
        self.reply = reply
        self.idempotent = idempotent
        self._turns: dict[str, list[dict[str, Any]]] = {}

    def _session(self, session_key: str) -> Session:
        session = current_session()
        if session is not None and session.key == session_key:
            return session
        return Session(key=session_key, history=[
            {"role": t["role"], "content": t["content"]}
            for t in self._turns.get(session_key, [])])

    async def send_message(self, message: str, session_key: str) -> str:
        parts: list[str] = []
        async for event in self.send_message_stream(message, session_key):
            if event.type == "token":
                parts.append(event.content)
            elif event.type == "done":
                return event.content or "".join(parts)
        return "".join(parts)

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        session = self._session(session_key)
        fn = self.reply
        parts: list[str] = []
        done: StreamEvent | None = None
        if inspect.isasyncgenfunction(fn):
            async for piece in fn(message, session):
                if isinstance(piece, StreamEvent):
                    if piece.type == "done":
                        done = piece
                        break
                    if piece.type == "token":
                        parts.append(piece.content)
                    yield piece
                else:
                    text = str(piece)
                    parts.append(text)
                    yield StreamEvent(type="token", content=text)
        else:
            if inspect.iscoroutinefunction(fn):
                result = await fn(message, session)
            else:
                # A plain function may block: it runs in a thread (with the turn's
                # context, so current_session() works there too).
                result = await asyncio.to_thread(fn, message, session)
            if not isinstance(result, str):
                raise TypeError(f"the reply function returned {type(result).__name__}, "
                                "not str")
            parts.append(result)
        text = (done.content if done is not None and done.content else "".join(parts))
        self._remember(session_key, message, text)
        yield StreamEvent(type="done", content=text,
                          usage=done.usage if done is not None else None)

    def _remember(self, session_key: str, message: str, text: str) -> None:
        turns = self._turns.setdefault(session_key, [])
        turns += [{"role": "user", "content": message},
                  {"role": "assistant", "content": text}]
        del turns[:-_KEPT]

    async def get_history(self, session_key: str) -> list[dict[str, Any]]:
        """This process's turns of the session (agentd's log keeps them all)."""
        return list(self._turns.get(session_key, []))

    async def list_sessions(self) -> list[str]:
        return sorted(self._turns)


def function(reply: Callable[..., Any] | None = None, *, idempotent: bool = False
             ) -> Any:
    """Make an adapter of a reply function (usable as ``@function`` or
    ``@function(idempotent=True)``)."""
    if reply is None:
        return lambda fn: FunctionAdapter(fn, idempotent=idempotent)
    return FunctionAdapter(reply, idempotent=idempotent)
