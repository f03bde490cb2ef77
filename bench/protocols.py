"""Turns through each protocol door against the native API, in one daemon, one run.

    python bench/protocols.py                       # 16 clients, 10 s per phase
    python bench/protocols.py --clients 8 --seconds 20 --doors openai_chat

The bench starts a daemon (``python -m agentd serve``, fresh home, the scripted echo
agent) and loads it phase after phase, never two at once: the native message route,
then each door (OpenAI Chat Completions, OpenAI Responses, the Agent Protocol, A2A's
JSON-RPC), each non-streamed then streamed, N closed-loop clients on keep-alive
connections, each client on its own session (the OpenAI doors name theirs with
``X-Agentd-Session``, the Agent Protocol's is the thread ``lg:<key>``, A2A's the
context). Streamed phases report
first-token latency (the first frame carrying text). The daemon's CPU time per turn
is what the issue's target reads: each door within 1.5x the native API's
(``ratio_<door>_server_cpu_per_turn``, and ``..._stream_...``). After the load, every
acknowledged turn is checked in its session's log. stdout gets one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson

from _load import ServerProcess, SseFrame, TurnResult, free_port, info, wait_ready
from turns import Agentd, _agentd_frame, _agentd_run, _http

DOORS = ("openai_chat", "openai_responses", "langgraph", "a2a")


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


TARGETS = {"openai_chat": OpenAIChat, "openai_responses": OpenAIResponses,
           "langgraph": LangGraphRuns, "a2a": A2A}


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
            out.update(await native.phases(daemon))
            out.update(await native.verify())
            for door in args.doors:
                target = TARGETS[door](http, base, args)
                out.update(await target.phases(daemon))
                out.update(await target.verify())
    finally:
        code = daemon.stop(signal.SIGTERM, timeout_s=30)
        info(f"agentd stopped: exit {code}, log {daemon.log_path}")
    for door in args.doors:
        for stream in ("", "stream_"):
            ours = out.get(f"{door}_{stream}server_cpu_ms_per_turn")
            native_cpu = out.get(f"{stream}server_cpu_ms_per_turn")
            out[f"ratio_{door}_{stream}server_cpu_per_turn"] = (
                round(ours / native_cpu, 2) if ours and native_cpu else None)
            ours, native_tps = out.get(f"{door}_{stream}turns_per_s"), out.get(
                f"{stream}turns_per_s")
            out[f"ratio_{door}_{stream}turns"] = (
                round(ours / native_tps, 3) if ours and native_tps else None)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="turns through each protocol door vs native")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--doors", default=",".join(DOORS),
                   help=f"comma list of {', '.join(DOORS)} (default all)")
    p.add_argument("--agent", default="bench")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--drain-timeout", type=float, default=2.0)
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--verify-sessions", type=int, default=0)
    args = p.parse_args(argv)
    args.doors = [d for d in args.doors.split(",") if d]
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
