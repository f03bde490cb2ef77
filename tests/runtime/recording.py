"""What the replay and fork tests run with: tools that note each real call, and a
counter of the scripted model's real calls (a replay, or a fork's steps served from
the log, must add to neither)."""

from __future__ import annotations

from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.llm.scripted import ScriptedModel
from agentd.tools import ToolContext, tool

__all__ = ["CALLS", "MODEL_CALLS", "call", "count_calls", "deploy", "peek", "put",
           "with_tools"]

#: Each tool call that ran, and each scripted model call made, in order.
CALLS: list[str] = []
MODEL_CALLS: list[str] = []


@tool(read_only=True)
def peek(key: str) -> str:
    """A read (runs alongside other reads)."""
    CALLS.append(f"peek {key}")
    return f"value of {key}"


@tool
def put(ctx: ToolContext, key: str) -> str:
    """A write (runs alone)."""
    CALLS.append(f"put {key}")
    return f"stored {key} ({ctx.call_id})"


@tool(needs_approval=True)
def deploy(target: str) -> str:
    """Asks a person first."""
    CALLS.append(f"deploy {target}")
    return f"deployed to {target}"


def with_tools(runtime: Runtime) -> Runtime:
    """``runtime`` with ``peek``, ``put`` and ``deploy``."""
    for t in (peek, put, deploy):
        runtime.tools.register(t)
    return runtime


def count_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start counting afresh: the tools' calls and the scripted model's."""
    CALLS.clear()
    MODEL_CALLS.clear()
    original = ScriptedModel.stream

    async def stream(self: ScriptedModel, request: Any) -> Any:
        MODEL_CALLS.append(self.spec)
        async for event in original(self, request):
            yield event

    monkeypatch.setattr(ScriptedModel, "stream", stream)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    """A scripted turn's tool call."""
    return {"name": name, "arguments": arguments}
