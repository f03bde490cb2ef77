"""Turns through each protocol door against the native API, in one daemon, one run.

    python bench/protocols.py                       # 16 clients, 10 s per phase
    python bench/protocols.py --clients 8 --seconds 20 --doors openai_chat
    python bench/protocols.py --doors mcp,ws

The bench starts a daemon (``python -m agentd serve``, fresh home, the scripted echo
agent) and loads it phase after phase, never two at once: the native message route,
then each door (OpenAI Chat Completions, OpenAI Responses, the Agent Protocol, A2A's
JSON-RPC, the MCP server, the WebSocket control channel), each non-streamed then
streamed, N closed-loop clients on keep-alive connections, each client on its own
session (the OpenAI doors name theirs with ``X-Agentd-Session``, the Agent Protocol's
is the thread ``lg:<key>``, A2A's the context, MCP's the tool's ``session`` argument,
the WebSocket's its URL). Streamed phases report first-token latency (the first frame
carrying text). The daemon's CPU time per turn is what the issue's target reads: each
door within 1.5x the native API's (``ratio_<door>_server_cpu_per_turn``, and
``..._stream_...``). After the load, every acknowledged turn is checked in its
session's log. stdout gets one JSON line.

Two doors differ in what they measure:

- MCP (``mcp``): ``tools/call`` of the agent's tool as raw JSON-RPC POSTs to ``/mcp``
  (no ``initialize``: the door is stateless), at ``--mcp-version`` (default 2025-11-25,
  the handshake era; 2026-07-28 sends the newest per-request envelope instead). Plain:
  no progress token, the answer (one SSE frame, or JSON) is the result. Streamed: a
  ``_meta.progressToken``; the door's progress notifications say the run's steps
  (``started``, tool calls, how it ended), never its text, so ``mcp_first_event_*`` is
  the first progress notification's latency (the run has started), not a first token's.
- WebSocket (``ws``): one socket per client session, kept open across turns; a turn
  is a ``send`` frame, read to its run's ``done``. The door has no non-streamed turn,
  so it has a stream phase only (``ws_stream_*``, ``ratio_ws_stream_*``);
  ``ws_first_event_*`` is the run's first ``token`` frame.

On a machine other work shares, the daemon's CPU per turn drifts with the load over
the minutes a run takes. ``--rounds N`` runs the whole sequence (native, then each
door) N times: each door's ratio is then the median of its N ratios to the native
phase of the same round (``ratio_..._rounds`` lists them), and every other figure the
median of its N values (errors: their sum).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from _load import ServerProcess, SseFrame, TurnResult, free_port, info, iter_sse, wait_ready
from turns import CONNECTIONS, Agentd, _agentd_frame, _agentd_run, _http, _ms

DOORS = ("openai_chat", "openai_responses", "langgraph", "a2a", "mcp", "ws")


def _native_token(frame: SseFrame) -> bool:
    return frame.event == "token"


class NativeTurns(Agentd):
    """The native message route, first-token latency measured like the doors'."""

    async def send(self, key: str, stream: bool) -> TurnResult:
        body = {"content": self.content(), "stream": stream}
        tally = self.tallies[key]
        if stream:
            return await self._streamed(self._messages_url(key), body, _agentd_frame, tally,
                                        token=_native_token)
        return await self._plain(self._messages_url(key), body, _agentd_run, tally)


def _chat_reply(reply: Any) -> str | None:
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return f"not a chat completion: {reply!r:.200}"
    return None if str(text).startswith("echo: ") else f"unexpected reply {text!r:.200}"


def _chat_frame(frame: SseFrame) -> str | None:
    if frame.data.strip() == "[DONE]":
        return "ok"
    data = frame.json() or {}
    if "error" in data:
        return f"error chunk: {frame.data[:200]}"
    return None


def _chat_token(frame: SseFrame) -> bool:
    if frame.data.startswith("[DONE]"):
        return False
    choices = (frame.json() or {}).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


class OpenAIChat(Agentd):
    prefix = "openai_chat_"

    async def send(self, key: str, stream: bool) -> TurnResult:
        body = {"model": self.agent, "stream": stream,
                "messages": [{"role": "user", "content": self.content()}]}
        url = f"{self.base}/v1/chat/completions"
        headers = {"X-Agentd-Session": key}
        tally = self.tallies[key]
        if stream:
            return await self._streamed(url, body, _chat_frame, tally, token=_chat_token,
                                        headers=headers)
        return await self._plain(url, body, _chat_reply, tally, headers=headers)

    async def verify(self) -> dict[str, Any]:
        return {f"{self.prefix}{k}": v for k, v in (await super().verify()).items()}


def _response_reply(reply: Any) -> str | None:
    if not isinstance(reply, dict) or reply.get("status") != "completed":
        return f"not a completed response: {reply!r:.200}"
    return None


def _response_frame(frame: SseFrame) -> str | None:
    if frame.event == "response.completed":
        return "ok"
    if frame.event in ("response.failed", "response.incomplete", "error"):
        return f"{frame.event}: {frame.data[:200]}"
    return None


class OpenAIResponses(OpenAIChat):
    prefix = "openai_responses_"

    async def send(self, key: str, stream: bool) -> TurnResult:
        body = {"model": self.agent, "stream": stream, "input": self.content()}
        url = f"{self.base}/v1/responses"
        headers = {"X-Agentd-Session": key}
        tally = self.tallies[key]
        if stream:
            return await self._streamed(
                url, body, _response_frame, tally, headers=headers,
                token=lambda f: f.event == "response.output_text.delta")
        return await self._plain(url, body, _response_reply, tally, headers=headers)


def _langgraph_reply(reply: Any) -> str | None:
    try:
        last = reply["messages"][-1]
    except (KeyError, IndexError, TypeError):
        return f"not a thread's values: {reply!r:.200}"
    if last.get("type") != "ai" or not str(last.get("content")).startswith("echo: "):
        return f"unexpected last message {last!r:.200}"
    return None


def _langgraph_frame(frame: SseFrame) -> str | None:
    if frame.event == "end":
        return "ok"
    if frame.event == "error":
        return f"error: {frame.data[:200]}"
    return None


class LangGraphRuns(OpenAIChat):
    """The Agent Protocol door: a thread per client (``lg:<key>``), runs/wait and
    runs/stream with ``messages-tuple``."""

    prefix = "langgraph_"

    async def send(self, key: str, stream: bool) -> TurnResult:
        body = {"assistant_id": self.agent, "stream_mode": "messages-tuple",
                "input": {"messages": [{"role": "user", "content": self.content()}]}}
        url = f"{self.base}/langgraph/threads/{key}/runs/{'stream' if stream else 'wait'}"
        tally = self.tallies[key]
        if stream:
            return await self._streamed(url, body, _langgraph_frame, tally,
                                        token=lambda f: f.event == "messages")
        return await self._plain(url, body, _langgraph_reply, tally)

    async def count_user_messages(self, key: str) -> int:
        return await super().count_user_messages("lg:" + key)



def _a2a_reply(reply: Any) -> str | None:
    try:
        task = reply["result"]["task"]
        state = task["status"]["state"]
        text = task["artifacts"][0]["parts"][0]["text"]
    except (KeyError, IndexError, TypeError):
        return f"not an A2A task: {reply!r:.200}"
    if state != "TASK_STATE_COMPLETED" or not str(text).startswith("echo: "):
        return f"unexpected task {state} {text!r:.200}"
    return None


def _a2a_frame(frame: SseFrame) -> str | None:
    data = frame.json() or {}
    if "error" in data:
        return f"error frame: {frame.data[:200]}"
    status = (data.get("result") or {}).get("statusUpdate")
    if status is None:
        return None
    state = status.get("status", {}).get("state")
    if state == "TASK_STATE_COMPLETED":
        return "ok"
    return None if state in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING") else \
        f"task ended {state}"


def _a2a_token(frame: SseFrame) -> bool:
    return "artifactUpdate" in ((frame.json() or {}).get("result") or {})


class A2A(OpenAIChat):
    """The A2A door's JSON-RPC binding (1.0): SendMessage / SendStreamingMessage with
    the session as the context."""

    prefix = "a2a_"

    async def send(self, key: str, stream: bool) -> TurnResult:
        body = {"jsonrpc": "2.0", "id": key,
                "method": "SendStreamingMessage" if stream else "SendMessage",
                "params": {"message": {"role": "ROLE_USER", "messageId": uuid.uuid4().hex,
                                       "contextId": key,
                                       "parts": [{"text": self.content()}]}}}
        url = f"{self.base}/a2a/{self.agent}"
        headers = {"A2A-Version": "1.0"}
        tally = self.tallies[key]
        if stream:
            return await self._streamed(url, body, _a2a_frame, tally, token=_a2a_token,
                                        headers=headers)
        return await self._plain(url, body, _a2a_reply, tally, headers=headers)


MCP_HEADERS = {"Content-Type": "application/json",
               # The streamable HTTP transport refuses a POST that does not accept both.
               "Accept": "application/json, text/event-stream"}
#: Protocol versions of the per-request envelope (no handshake era): the newest SDK's.
MCP_MODERN = ("2026-07-28",)


def _mcp_result(message: dict[str, Any]) -> tuple[str | None, bool]:
    """A ``tools/call`` answer's verdict (None: a completed run that echoed) and
    whether it names a run (the message and its run were committed)."""
    if "error" in message:
        return f"JSON-RPC error: {orjson.dumps(message['error']).decode()[:200]}", False
    result = message.get("result") or {}
    structured = result.get("structuredContent") or {}
    committed = bool(structured.get("run_id"))
    try:
        text = result["content"][0]["text"]
    except (KeyError, IndexError, TypeError):
        return f"not a tool result: {message!r:.200}", committed
    if result.get("isError") or structured.get("status") != "completed":
        return f"tool error: {text!r:.200}", committed
    return (None if str(text).startswith("echo: ") else f"unexpected reply {text!r:.200}",
            committed)


class MCP(OpenAIChat):
    """The MCP door (``/mcp``, streamable HTTP, stateless): ``tools/call`` of the agent's
    tool with ``{"message", "session"}`` as raw JSON-RPC POSTs. Stateless mode needs no
    ``initialize`` (every POST is served on its own). ``--mcp-version`` picks the era:
    the handshake era's (default 2025-11-25) answers an SSE stream either way, plain its
    one frame being the result; the per-request envelope's (2026-07-28, what the newest
    official client sends: ``_meta`` naming the version and capabilities, ``Mcp-Method``
    and ``Mcp-Name`` headers) answers plain JSON. Streamed (a ``_meta.progressToken``),
    the run's progress notifications come before the result.
    A turn is acknowledged once a progress notification or a result naming the run
    arrives (both follow the commit); an HTTP 200 alone is not (the SDK answers it
    before the tool runs)."""

    prefix = "mcp_"

    def __init__(self, http: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> None:
        super().__init__(http, base, args)
        self.version: str = args.mcp_version
        self.headers = {**MCP_HEADERS, "MCP-Protocol-Version": self.version}
        if self.version in MCP_MODERN:
            # The newest revision: no handshake, each request says what it is.
            self.headers.update({"Mcp-Method": "tools/call", "Mcp-Name": self.agent})

    async def send(self, key: str, stream: bool) -> TurnResult:
        self.counter += 1
        number = self.counter
        params: dict[str, Any] = {"name": self.agent,
                                  "arguments": {"message": f"hello {number}", "session": key}}
        meta: dict[str, Any] = {}
        if self.version in MCP_MODERN:
            meta = {"io.modelcontextprotocol/protocolVersion": self.version,
                    "io.modelcontextprotocol/clientCapabilities": {}}
        if stream:
            meta["progressToken"] = number
        if meta:
            params["_meta"] = meta
        body = {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": params}
        tally = self.tallies[key]
        t0 = time.perf_counter()
        first: float | None = None
        committed = answered = False
        try:
            async with self.http.post(f"{self.base}/mcp", data=orjson.dumps(body),
                                      headers=self.headers) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    # A refusal before the tool ran (4xx): nothing was written.
                    answered = resp.status < 500
                    return TurnResult(False, _ms(t0), error=f"HTTP {resp.status}: "
                                      f"{raw[:200].decode(errors='replace')}")
                ctype = resp.headers.get("Content-Type", "")
                if ctype.startswith("application/json"):
                    frames = [orjson.loads(await resp.read())]
                elif ctype.startswith("text/event-stream"):
                    frames = None
                else:
                    return TurnResult(False, _ms(t0), error=f"Content-Type {ctype!r}")
                verdict: str | None = "stream ended without a result"
                done_ms = 0.0
                async with contextlib.aclosing(_json_frames(resp, frames)) as messages:
                    async for message in messages:
                        if message.get("method") == "notifications/progress":
                            # The first comes with run.started (this door reports the
                            # run's steps, not its text: there is no token to time).
                            committed = True
                            if first is None:
                                first = _ms(t0)
                            continue
                        if message.get("id") != number:
                            continue
                        done_ms = _ms(t0)
                        answered = True
                        verdict, named = _mcp_result(message)
                        committed = committed or named
                        break
                if not answered:
                    return TurnResult(False, _ms(t0), first, verdict)
                if frames is None:
                    try:
                        rest = await asyncio.wait_for(resp.content.read(),
                                                      self.args.drain_timeout)
                    except TimeoutError:
                        resp.close()
                        return TurnResult(False, done_ms, first, "stream still open "
                                          f"{self.args.drain_timeout:g}s after its result")
                    if rest.strip():
                        return TurnResult(False, done_ms, first,
                                          f"data after the result: {rest[:200]!r}")
                if verdict is not None:
                    return TurnResult(False, done_ms, first, verdict)
                return TurnResult(True, done_ms, first if stream else None)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, ValueError) as exc:
            answered = False
            return TurnResult(False, _ms(t0), first, repr(exc))
        finally:
            if committed:
                tally.acked += 1
            elif not answered:
                tally.ambiguous += 1


async def _json_frames(resp: aiohttp.ClientResponse, frames: list[Any] | None
                       ) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON-RPC messages of an MCP answer (an SSE stream's frames, or a JSON body)."""
    if frames is not None:
        for message in frames:
            if isinstance(message, dict):
                yield message
        return
    async with contextlib.aclosing(iter_sse(resp.content)) as sse:
        async for frame in sse:
            if frame.data:  # the SDK's priming events carry no data
                message = frame.json()
                if isinstance(message, dict):
                    yield message


class WebSocket(OpenAIChat):
    """The session's WebSocket control channel: one socket per client session, opened
    on its first turn and kept open across turns (and from the warm-up into the
    measure). A turn sends a ``send`` frame (mode ``enqueue``; its ``id`` is the
    idempotency key) and reads frames to its run's ``done``: the ``ack`` names the run
    (the turn is acknowledged then), the run's first ``token`` frame gives first-token
    latency. The door has no non-streamed turn: only a stream phase.

    The sockets have a client pool of their own (each holds its connection for the
    whole phase; the shared pool's are for the other doors and the log check)."""

    prefix = "ws_"
    streams = (True,)

    def __init__(self, http: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> None:
        super().__init__(http, base, args)
        self.sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}
        self.pool: aiohttp.ClientSession | None = None

    async def phases(self, server: ServerProcess | None) -> dict[str, Any]:
        try:
            return await super().phases(server)
        finally:
            await self.close()

    async def close(self) -> None:
        for ws in self.sockets.values():
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await ws.close()
        self.sockets.clear()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def _socket(self, key: str) -> aiohttp.ClientWebSocketResponse:
        ws = self.sockets.get(key)
        if ws is not None and not ws.closed:
            return ws
        if self.pool is None:
            trace = aiohttp.TraceConfig()

            async def on_connect(*_: object) -> None:
                CONNECTIONS.opened += 1

            trace.on_connection_create_end.append(on_connect)
            self.pool = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                headers={"Authorization": f"Bearer {self.args.token}"},
                trace_configs=[trace])
        url = (self.base.replace("http://", "ws://", 1)
               + f"/v1/agents/{quote(self.agent, safe='')}/sessions/{quote(key, safe='')}/ws")
        ws = await self.pool.ws_connect(url, protocols=("agentd.v1",),
                                        timeout=aiohttp.ClientWSTimeout(ws_close=5))
        self.sockets[key] = ws
        return ws

    async def send(self, key: str, stream: bool) -> TurnResult:
        tally = self.tallies[key]
        request_id = uuid.uuid4().hex
        t0 = time.perf_counter()
        run_id: str | None = None
        first_token: dict[str, float] = {}  # run id -> its first token frame's time
        ended: dict[str, str | None] = {}  # run id -> verdict of its done/error frame
        answered = False
        try:
            async with asyncio.timeout(self.args.timeout):
                ws = await self._socket(key)
                await ws.send_str(orjson.dumps({"type": "send", "id": request_id,
                                                "content": self.content(),
                                                "mode": "enqueue"}).decode())
                # Frames of this run may come before its ack (the socket's event pump
                # and the answer share it): keep what each run's frames said.
                while run_id is None or run_id not in ended:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"socket frame {msg.type.name} {msg.data!r:.100}")
                    frame = orjson.loads(msg.data)
                    kind = frame.get("type")
                    if kind == "ack" and frame.get("id") == request_id:
                        run_id = frame["run"]["id"]
                        tally.acked += 1
                        answered = True
                    elif kind == "error" and frame.get("id") == request_id:
                        answered = True  # refused, nothing written
                        return TurnResult(False, _ms(t0), error=f"error frame: {msg.data[:200]}")
                    elif kind == "event":
                        data = frame.get("data") or {}
                        run = data.get("run_id")
                        if frame.get("event") == "token":
                            first_token.setdefault(run, _ms(t0))
                        elif frame.get("event") == "done":
                            ended[run] = (None if data.get("kind") == "run.completed"
                                          else f"done frame of kind {data.get('kind')!r}")
                        elif frame.get("event") == "error":
                            ended[run] = f"error frame: {msg.data[:200]}"
            done_ms = _ms(t0)
            first = first_token.get(run_id)
            verdict = ended[run_id]
            if verdict is not None:
                return TurnResult(False, done_ms, first, verdict)
            return TurnResult(True, done_ms, first)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, ValueError,
                KeyError, TypeError, ConnectionError) as exc:
            if not answered:
                tally.ambiguous += 1
            # Whatever state the socket is in, the next turn starts on a new one.
            ws_old = self.sockets.pop(key, None)
            if ws_old is not None:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await ws_old.close()
            return TurnResult(False, _ms(t0), first_token.get(run_id or ""), repr(exc))


TARGETS: dict[str, type[Agentd]] = {
    "openai_chat": OpenAIChat, "openai_responses": OpenAIResponses,
    "langgraph": LangGraphRuns, "a2a": A2A, "mcp": MCP, "ws": WebSocket}


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = workdir / "home"
    home.mkdir()
    args.token = "bench-token-0123456789abcdef"
    env = {**os.environ, "AGENTD_HOME": str(home), "AGENTD_DEMO_AGENT": "false",
           "AGENTD_TOKEN": args.token}
    daemon = ServerProcess("agentd", [sys.executable, "-m", "agentd", "serve", "--host",
                                      "127.0.0.1", "--port", str(port)],
                           workdir / "agentd.log", env)
    try:
        daemon.start()
        async with _http(args) as http:
            health = await wait_ready(http, f"{base}/health", args.startup_timeout, daemon)
            out["agentd_version"] = health.get("version")
            out["store"] = health.get("store")
            native = NativeTurns(http, base, args)
            await native.ensure_agent()
            targets = [native, *(TARGETS[door](http, base, args) for door in args.doors)]
            rounds: list[dict[str, Any]] = []
            for number in range(args.rounds):
                if args.rounds > 1:
                    info(f"round {number + 1} of {args.rounds}")
                figures: dict[str, Any] = {}
                for target in targets:
                    figures.update(await target.phases(daemon))
                rounds.append(figures)
            out.update(_combine(rounds))
            for target in targets:
                out.update(await target.verify())
    finally:
        code = daemon.stop(signal.SIGTERM, timeout_s=30)
        info(f"agentd stopped: exit {code}, log {daemon.log_path}")
    for door in args.doors:
        for stream in ("stream_" if s else "" for s in TARGETS[door].streams):
            for figure, name, digits in (("server_cpu_ms_per_turn", "server_cpu_per_turn", 2),
                                         ("turns_per_s", "turns", 3)):
                ratios = [round(r[f"{door}_{stream}{figure}"] / r[f"{stream}{figure}"],
                                digits)
                          for r in rounds if r.get(f"{door}_{stream}{figure}")
                          and r.get(f"{stream}{figure}")]
                out[f"ratio_{door}_{stream}{name}"] = (
                    round(statistics.median(ratios), digits) if ratios else None)
                if args.rounds > 1:
                    out[f"ratio_{door}_{stream}{name}_rounds"] = ratios
    return out


def _combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's figures as they are; several rounds': each figure's median (errors
    and connections opened: their sum; error samples: the first round's)."""
    if len(rounds) == 1:
        return rounds[0]
    out: dict[str, Any] = {}
    for key, first in rounds[0].items():
        values = [r[key] for r in rounds if r.get(key) is not None]
        if key.endswith(("errors", "connections_opened")):
            out[key] = sum(values)
        elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            for v in values):
            out[key] = round(statistics.median(values), 3)
        else:
            out[key] = first
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="turns through each protocol door vs native")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--doors", nargs="+", default=[",".join(DOORS)],
                   help=f"doors, comma- or space-separated, of {', '.join(DOORS)} "
                        "(default all)")
    p.add_argument("--agent", default="bench")
    p.add_argument("--mcp-version", default="2025-11-25",
                   help="MCP-Protocol-Version of the mcp door's requests (default "
                        "2025-11-25, the handshake era, sent without initialize; "
                        f"{', '.join(MCP_MODERN)}: the per-request envelope)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--drain-timeout", type=float, default=2.0)
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--verify-sessions", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1,
                   help="run the sequence this many times; ratios: medians of the rounds'")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.doors = [d for doors in args.doors for d in doors.split(",") if d]
    unknown = set(args.doors) - set(DOORS)
    if unknown:
        p.error(f"unknown doors: {sorted(unknown)}")
    # What turns.Target reads.
    args.turns, args.max_seconds = None, 600.0
    return args


async def amain(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    out: dict[str, Any] = {"bench": "protocols", "clients": args.clients,
                           "seconds": args.seconds, "python": platform.python_version(),
                           "cpu_count": os.cpu_count(),
                           "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    workdir = Path(tempfile.mkdtemp(prefix="agentd-protocols-"))
    failed = False
    try:
        out.update(await bench(args, workdir))
    except (RuntimeError, OSError, TimeoutError) as exc:
        failed = True
        out["failed"] = str(exc)[:2000]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = failed or any(v for k, v in out.items() if k.endswith("durability_mismatches"))
    return out, failed


def main(argv: list[str] | None = None) -> int:
    out, failed = asyncio.run(amain(parse_args(argv)))
    print(orjson.dumps(out).decode(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
