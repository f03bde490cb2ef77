"""What every part of the kill test (``bench/killtest.py``) shares: the agents' scripts,
the run states and event kinds it reasons about, the invariant names, small helpers."""

from __future__ import annotations

import socket
import sys
from typing import Any
from urllib.parse import quote

TERMINAL = frozenset({"completed", "failed", "cancelled", "interrupted"})
TERMINAL_KIND = {"run.completed": "completed", "run.failed": "failed",
                 "run.cancelled": "cancelled", "run.interrupted": "interrupted"}
SSE_NAMES = {"tool.started": "tool_start", "tool.finished": "tool_end",
             "run.completed": "done", "run.cancelled": "done", "run.interrupted": "done",
             "run.failed": "error", "run.waiting": "waiting"}
#: The keys of an event as the API shows it.
EVENT_KEYS = ("seq", "run_id", "kind", "data", "at")
INVARIANTS = ("ack_once", "run_terminal", "seq_dense", "effect_once", "idem_effects",
              "sse_replay", "idempotency_key", "step_once", "run_outcome", "decision")
TOOLS = ["record_once", "record_idem", "peek"]
NON_IDEMPOTENT = {"record_once"}
DECISIONS = ("skip", "retry", "fail")
#: The result a "skip" decision gives the model instead of running the call.
SKIP_OUTPUT = "skipped by killtest"
#: The daemon's token (AGENTD_TOKEN) and the header every client sends with it.
TOKEN = "killtest-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# Scripts are played one turn per model call in a session (the position is the number
# of assistant messages so far), so a run is "tool steps, then the first text turn".
AGENTS: dict[str, list[dict[str, Any]]] = {
    # No model latency: kills land in tool calls (0-50 ms each) and between commits.
    "kt-tools": [
        {"tool_calls": [_call("record_once", note="a"), _call("record_idem", note="b")]},
        {"text": "recorded both"},
    ],
    # Slow model calls around tools: kills land mid-model-call and between steps.
    "kt-slow": [
        {"tool_calls": [_call("record_idem", note="first")], "delay_ms": 120},
        {"tool_calls": [_call("peek"), _call("peek"), _call("record_once", note="then")],
         "delay_ms": 60},
        {"tool_calls": [_call("record_idem", note="x"), _call("record_once", note="y"),
                        _call("record_idem", note="z")]},
        {"text": "slow and steady, word by word", "delay_ms": 150},
    ],
    # Plain text turns, streamed word by word.
    "kt-chat": [
        {"text": "just talking, no tools at all", "delay_ms": 40},
        {"text": "another plain answer"},
    ],
}

Session = tuple[str, str]  # (agent, session key)


def info(message: str) -> None:
    print(f"[killtest] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session_path(agent: str, key: str) -> str:
    return f"/v1/agents/{agent}/sessions/{quote(key, safe='')}"
