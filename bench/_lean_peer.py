"""A lean model server for benchmarks: OpenAI's Chat Completions and Anthropic's
Messages, streamed, answering every call with an echo of its last user message, run in
a process of its own.

    python bench/_lean_peer.py PORT      # prints "ready" once it listens

Why not :class:`agentd.testing.StubLLMServer`: the stub is made for tests (a queue of
answers, faults, every request kept and parsed into Python objects, h11 in a thread of
the calling process), and what it does with a long request lands on the daemon's bill
in a benchmark on two cores. With a 400 KB request (3,000 turns of history) it parses
some 20,000 objects in the bench's process beside the daemon, keeps them, and reads
the body in pieces of 64 KB, pausing the socket between them. A provider's servers are
on other machines and read a request at once; measured against the stub, the daemon's
CPU per turn at 3,000 turns was 1.8 times that at 10, against this peer 1.2 times, with
the daemon's own instruction count up by 8 % (docs/benchmarks.md, "Turn cost against
history length"). Here the request is read into one buffer by httptools (uvicorn's C
parser), only the last message is decoded, and nothing is kept but counts.

The answer is the wire each provider streams (``chat.completion.chunk`` frames with
the usage chunk, or Messages' events), its text ``"stub: " + the last user message's
text``, as the stub's echo; the usage counts a token per four bytes of the request.
``GET /stats`` answers ``{"calls", "last_request_bytes"}``. Only what a benchmark sends
is served: anything else gets a 4xx in the provider's error shape.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httptools
import orjson

_DECODER = json.JSONDecoder()


class _Counts:
    calls = 0
    last_request_bytes = 0


def _last_user_text(body: bytes) -> str | None:
    """The text of the body's last user message, decoding only that message."""
    at = body.rfind(b'{"role":"user"')
    if at < 0:
        return None
    try:
        text = body.decode()
        # (The messages are ASCII-escaped or not: find the character offset of `at`.)
        message, _ = _DECODER.raw_decode(text, len(body[:at].decode()))
    except ValueError:  # (UnicodeDecodeError is one)
        return None
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content
                       if isinstance(b, dict) and b.get("type") == "text")
    return None


def _params(body: bytes, url: bytes) -> Any:
    """The request's parameters other than its messages, as agentd's providers lay
    the body out: after the messages for OpenAI's, before them for Anthropic's."""
    try:
        if url == b"/v1/messages":
            return orjson.loads(body[:body.find(b',"messages":[')] + b"}")
        return orjson.loads(b"{" + body[body.rfind(b'],"model":') + 2:])
    except orjson.JSONDecodeError:
        return None


def _openai(body: bytes, said: str, model: str) -> bytes:
    base = {"id": "chatcmpl-lean", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_lean"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": [{
            "index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None}) + b"\n\n"

    prompt, completion = len(body) // 4, len(said.split())
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": 0}}
    return b"".join([
        chunk({"role": "assistant", "content": ""}), chunk({"content": said}),
        chunk({}, "stop"),
        b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n",
        b"data: [DONE]\n\n"])


def _anthropic(body: bytes, said: str, model: str) -> bytes:
    def event(data: dict[str, Any]) -> bytes:
        return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    usage: dict[str, int] = {
        "input_tokens": len(body) // 4, "output_tokens": 1,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    start: dict[str, Any] = {
        "id": "msg_lean", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    return b"".join([
        event({"type": "message_start", "message": start}),
        event({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        event({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": said}}),
        event({"type": "content_block_stop", "index": 0}),
        event({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
               "usage": {"output_tokens": len(said.split())}}),
        event({"type": "message_stop"})])


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._url = b""
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # (uvloop's is no asyncio.Transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._reply(400, b"application/json", b'{"error":"bad request"}', close=True)

    # httptools' callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body, self._body = b"".join(self._body), []
        url, self._url = self._url, b""
        method = self._parser.get_method()
        if method == b"GET" and url == b"/stats":
            self._reply(200, b"application/json", orjson.dumps(
                {"calls": _Counts.calls, "last_request_bytes": _Counts.last_request_bytes}))
            return
        wire = {b"/v1/chat/completions": _openai, b"/v1/messages": _anthropic}.get(url)
        if method != b"POST" or wire is None:
            self._reply(404, b"application/json", b'{"error":{"message":"not found"}}')
            return
        said = _last_user_text(body)
        params = _params(body, url)
        if said is None or not isinstance(params, dict) or params.get("stream") is not True:
            self._reply(400, b"application/json", b'{"error":{"type":"invalid_request_error",'
                        b'"message":"a streamed call ending in a user message"}}')
            return
        model = str(params.get("model", "lean"))
        _Counts.calls += 1
        _Counts.last_request_bytes = len(body)
        self._reply(200, b"text/event-stream", wire(body, "stub: " + said, model))

    def _reply(self, status: int, kind: bytes, payload: bytes, *, close: bool = False) -> None:
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"")
        self._transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                              b"\r\n" % (status, reason, kind, len(payload)) + payload)
        if close:
            self._transport.close()


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Connection, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    port = int(sys.argv[1])
    try:
        import uvloop
        uvloop.run(_serve(port))
    except ImportError:  # pragma: no cover (uvloop is installed with the daemon)
        asyncio.run(_serve(port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
