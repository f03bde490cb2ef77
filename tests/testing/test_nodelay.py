"""The test servers turn Nagle's algorithm off on the connections they accept.

With it on, an answer written in two parts on a kept-alive connection waits for the
client's delayed ACK (about 40 ms on Linux): every figure measured against the stub
would carry that stall. asyncio sets ``TCP_NODELAY`` only on a socket whose ``proto``
says TCP, so a socket made as ``socket(AF_INET, SOCK_STREAM)`` and handed to uvicorn
kept Nagle on.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx

from agentd.testing import StubLLMServer
from agentd.testing.stub_telegram import StubBotAPI


def _accepted_nodelay(server: Any) -> list[int]:
    """TCP_NODELAY of every connection a uvicorn server holds open now."""
    values = []
    for protocol in server.server_state.connections:
        sock = protocol.transport.get_extra_info("socket")
        values.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return values


def test_the_stub_llm_server_answers_without_nagle() -> None:
    with StubLLMServer() as stub, httpx.Client(base_url=stub.base_url) as http:
        reply = http.post("/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200
        values = _accepted_nodelay(stub._server)
    assert values and all(values), values


def test_the_stub_bot_api_answers_without_nagle() -> None:
    with StubBotAPI() as bot, httpx.Client(base_url=bot.url) as http:
        http.post("/bot123456:stub-token/getMe")
        values = _accepted_nodelay(bot._server)
    assert values and all(values), values
