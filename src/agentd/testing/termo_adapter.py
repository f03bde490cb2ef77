"""A deterministic adapter both agentd and termo-agent can serve.

``agentd serve --adapter agentd.testing.termo_adapter`` and
``termo-agent --adapter agentd.testing.termo_adapter`` load the same :class:`Adapter`
(termo-agent's loader takes the module's ``Adapter``), so the same requests can be
sent to both servers and their answers compared (tests/protocols/termo). It keeps its
own state in memory, as termo-agent's adapters do, and implements every hook
termo-agent's server calls.

What a message does:

- ``raise ...``: the turn raises ``RuntimeError``;
- ``hang ...``: the turn never answers (a timeout must end it);
- ``fail ...``: the turn streams an ``error`` event;
- ``slow N ...``: N tokens, one every ``TERMO_TEST_SLOW_S`` seconds (default 0.2);
- ``tool ...``: a ``lookup`` tool reported around the reply;
- anything else: ``echo[N]: <message>``, N the session's earlier messages.

Its extra routes are aiohttp handlers (termo-agent's kind): ``GET /api/echo/{word}``
and ``POST /api/custom``; ``/api/public/`` is a public prefix and ``/api/open`` a
public path by :meth:`Adapter.is_public_request`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from agentd.adapters import StreamEvent

__all__ = ["Adapter", "Broken", "Greedy", "Minimal"]


class Adapter:
    """The full adapter (every termo-agent hook)."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[dict[str, Any]]] = {}
        self.config: dict[str, Any] = {"model": "test", "temperature": 0}
        self.memory: str | None = None
        self.heartbeat = ""
        self.restarts = 0
        self.initialized = 0
        self.config_path: str | None = None

    async def initialize(self, config_path: str | None = None) -> None:
        self.initialized += 1
        self.config_path = config_path

    async def shutdown(self) -> None:
        return None

    def _reply(self, message: str, session_key: str) -> str:
        earlier = sum(1 for m in self.sessions.get(session_key, [])
                      if m["role"] == "user")
        return f"echo[{earlier}]: {message}"

    def _remember(self, session_key: str, message: str, reply: str) -> None:
        self.sessions.setdefault(session_key, []).extend([
            {"role": "user", "content": message},
            {"role": "assistant", "content": reply}])

    async def send_message(self, message: str, session_key: str) -> str:
        text = ""
        async for event in self.send_message_stream(message, session_key):
            if event.type == "done":
                text = event.content
            elif event.type == "error":
                raise RuntimeError(event.content)
        return text

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        word = message.split(" ", 1)[0]
        if word == "raise":
            raise RuntimeError(f"adapter exploded on {message!r}")
        if word == "hang":
            await asyncio.sleep(3600)
        if word == "fail":
            yield StreamEvent(type="error", content="the framework gave up")
            return
        reply = self._reply(message, session_key)
        delay = 0.0
        if word == "slow":
            parts = message.split()
            count = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 5
            reply = " ".join(f"t{i}" for i in range(count))
            delay = float(os.environ.get("TERMO_TEST_SLOW_S", "0.2"))
        if word == "tool":
            query = message[len("tool "):]
            yield StreamEvent(type="tool_start", name="lookup", input={"q": query},
                              metadata={"input": {"q": query}})
            yield StreamEvent(type="tool_end", name="lookup", content=f"found {query}",
                              output=f"found {query}")
        pieces = reply.split(" ")
        for i, piece in enumerate(pieces):
            if delay:
                await asyncio.sleep(delay)
            yield StreamEvent(type="token",
                              content=piece + (" " if i < len(pieces) - 1 else ""))
        self._remember(session_key, message, reply)
        yield StreamEvent(type="done", content=reply,
                          usage={"prompt_tokens": len(message.split()),
                                 "completion_tokens": len(pieces)})

    async def get_history(self, session_key: str) -> list[dict[str, Any]]:
        return list(self.sessions.get(session_key, []))

    async def list_sessions(self) -> list[dict[str, Any]]:
        return [{"session_key": key} for key in sorted(self.sessions)]

    async def list_tools(self) -> list[dict[str, Any]]:
        return [{"name": "lookup", "description": "Look a word up"}]

    async def get_config(self) -> dict[str, Any]:
        return dict(self.config)

    async def update_config(self, updates: dict[str, Any]) -> None:
        self.config.update(updates)

    async def get_memory(self) -> str | dict[str, Any] | None:
        return self.memory

    async def update_memory(self, content: str) -> None:
        self.memory = content

    async def get_heartbeat(self) -> dict[str, Any]:
        return {"content": self.heartbeat, "enabled": bool(self.heartbeat.strip()),
                "interval_s": 1800}

    async def update_heartbeat(self, content: str) -> None:
        self.heartbeat = content

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "adapter": "test", "restarts": self.restarts,
                "config_path": self.config_path}

    async def update(self) -> dict[str, Any]:
        return {"status": "not supported"}

    async def restart(self) -> None:
        self.restarts += 1

    def extra_routes(self) -> list[tuple[str, str, Any]] | None:
        return [("GET", "/api/echo/{word}", self._echo),
                ("POST", "/api/custom", self._custom),
                ("GET", "/api/public/ping", self._ping),
                ("GET", "/api/open", self._ping)]

    def public_route_prefixes(self) -> list[str]:
        return ["/health", "/api/public/"]

    def is_public_request(self, path: str) -> bool:
        return path == "/api/open"

    async def _echo(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"word": request.match_info["word"],
                                  "q": request.query.get("q")})

    async def _custom(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        if not isinstance(body, dict) or "x" not in body:
            return web.json_response({"error": "x is required"}, status=400)
        return web.json_response({"x": body["x"], "method": request.method})

    async def _ping(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text="pong")


class Minimal:
    """Only the five required methods (and no hook): agentd answers the optional
    routes with its own equivalents (memory blocks and search, heartbeat, the
    agent's definition as config)."""

    async def initialize(self, config_path: str | None = None) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def send_message(self, message: str, session_key: str) -> str:
        return f"minimal: {message}"

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        yield StreamEvent(type="done", content=f"minimal: {message}")

    async def get_history(self, session_key: str) -> list[dict[str, Any]]:
        return []


class Greedy(Adapter):
    """An adapter that claims every path public and a catch-all route: it must not
    open agentd's own API (``/v1``) or shadow it."""

    def extra_routes(self) -> list[tuple[str, str, Any]] | None:
        return [*(super().extra_routes() or []), ("GET", "/{path:.*}", self._ping)]

    def public_route_prefixes(self) -> list[str]:
        return ["/"]

    def is_public_request(self, path: str) -> bool:
        return True


class Broken(Adapter):
    """Hooks that fail: ``get_config`` raises, ``list_tools`` hangs, an extra route
    raises and another answers what is not a response."""

    async def get_config(self) -> dict[str, Any]:
        raise ValueError("config store unreachable")

    async def list_tools(self) -> list[dict[str, Any]]:
        await asyncio.sleep(3600)
        return []

    def extra_routes(self) -> list[tuple[str, str, Any]] | None:
        return [("GET", "/api/boom", self._boom), ("GET", "/api/odd", self._odd)]

    async def _boom(self, request: Any) -> Any:
        raise KeyError("secret-internal-detail")

    async def _odd(self, request: Any) -> Any:
        return 3.5
