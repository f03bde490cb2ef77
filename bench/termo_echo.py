"""A trivial termo-agent server for comparison: echoes, keeps history in memory only.

    python bench/termo_echo.py --port 8123

Serves termo_agent's AgentServer (POST /api/send, GET /health, ...) on 127.0.0.1
without a token until SIGINT or SIGTERM. Nothing is persisted per turn.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import defaultdict
from collections.abc import AsyncIterator

from termo_agent.adapter import AgentAdapter, StreamEvent
from termo_agent.server import AgentServer


class EchoAdapter(AgentAdapter):
    """Answers ``echo: <message>``; history lives in a dict per session key."""

    def __init__(self) -> None:
        self.history: defaultdict[str, list[dict[str, str]]] = defaultdict(list)

    async def initialize(self, config_path: str | None = None) -> None:
        return None

    async def shutdown(self) -> None:
        self.history.clear()

    def _reply(self, message: str, session_key: str) -> str:
        reply = f"echo: {message}"
        history = self.history[session_key]
        history.append({"role": "user", "content": message})
        history.append({"role": "assistant", "content": reply})
        return reply

    async def send_message(self, message: str, session_key: str) -> str:
        return self._reply(message, session_key)

    async def send_message_stream(
        self, message: str, session_key: str
    ) -> AsyncIterator[StreamEvent]:
        reply = self._reply(message, session_key)
        yield StreamEvent(type="token", content=reply)
        yield StreamEvent(type="done", content=reply)

    async def get_history(self, session_key: str) -> list[dict[str, str]]:
        return list(self.history.get(session_key, []))

    async def list_sessions(self) -> list[dict[str, object]]:
        return [{"key": key, "messages": len(msgs)} for key, msgs in self.history.items()]


async def serve(host: str, port: int) -> None:
    adapter = EchoAdapter()
    await adapter.initialize()
    server = AgentServer(adapter=adapter, host=host, port=port, token=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
        await adapter.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop (termo's own CLI uses asyncio)"
    )
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    else:
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
